"""User text (paths, ids, column names) is printed verbatim, never parsed as rich markup.

Root: both shared consoles are built with markup=False; styled words come from `console.styled` (rich Text).
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from facebatch.cli.app import app

runner = CliRunner()

NAMES = ["photos [old]", "a [/b]", "[bold red]x[/]", "[link=file:///etc]y[/link]", "z[", "[/]"]


@pytest.mark.parametrize("name", NAMES)
def test_generator_path_with_brackets_is_printed_as_given(tmp_path, name):
    given = str(tmp_path / name / "x.pt")
    res = runner.invoke(app, ["sample", "-g", given, "-o", str(tmp_path / "out"), "-n", "1"])
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert given in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("name", ["photos [old]", "[bold red]x", "z[", "[/]x"])
def test_input_folder_with_brackets_in_the_no_images_error(tmp_path, fixture_generator_path, name):
    folder = tmp_path / name
    folder.mkdir(parents=True)
    res = runner.invoke(app, ["project", str(folder), "-g", str(fixture_generator_path), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert str(folder) in res.output


def test_column_name_with_brackets_in_a_labels_error(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("image_id,[red]smile[/red]\na.png,1\nb.png,0\n")
    res = runner.invoke(
        app, ["fit-boundaries", str(labels), "-l", str(tmp_path / "none"), "-o", str(tmp_path / "b.json"), "-a", "[x]"]
    )
    assert res.exit_code == 2, res.output
    assert "'[x]'" in res.output and "[red]smile[/red]" in res.output


def test_summary_table_shows_an_out_folder_with_brackets(tmp_path, fixture_generator_path, restore_torch_threads):
    out = tmp_path / "run [dim]1[/dim]"
    res = runner.invoke(
        app, ["sample", "-g", str(fixture_generator_path), "-o", str(out), "-n", "1", "--no-images", "-b", "1"]
    )
    assert res.exit_code == 0, res.output
    flat = "".join(res.output.split())
    assert "[dim]1[/dim]" in flat
