"""Nonsense in labels files and --set values is refused up front, saying what and where.

Roots: `edit.labels.read_labels` is a strict csv reader (unique header names, every row as wide as the header,
UTF-8 text), `parse_attribute` refuses a binary column with a few stray values; `invert.presets` coerces
--set/YAML values strictly (finite numbers, whole integers) and `ProjectionConfig.validate` bounds every field.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.edit.labels import parse_attribute, read_labels
from facebatch.errors import InputError
from facebatch.invert.presets import load_preset

runner = CliRunner()


def _labels(tmp_path, text, name="labels.csv", mode="w"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("image_id,smile,smile\na.png,1,0\nb.png,0,1\n", r"column 'smile' appears twice .*columns 2 and 3"),
        ("image_id, smile,smile \na.png,1,0\n", "appears twice"),
        ("image_id,smile,age\na.png,1,3\nb.png,0,4,5\n", r"line 3: 4 cells, the header has 3"),
        ("image_id,smile,age\na.png,1,3,x\nb.png,0,4,5\n", r"line 2: 4 cells"),
        ("image_id,smile,age\na.png,1\nb.png,0,4\n", r"line 2: 2 cells"),
        ("image_id,,age\na.png,1,3\n", "column 2 of the header has no name"),
        (b"image_id,smile\n\xff\xfe,1\n", "not UTF-8"),
        (b"image_id,smile\x00\na,1\n", "NUL"),
        ("image_id,smile\n", "header but no rows"),
        ("\n\n", "empty"),
    ],
)
def test_malformed_labels_files_are_refused_with_line_and_column(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        read_labels(_labels(tmp_path, text))


def test_a_folder_or_fifo_as_labels_file_is_one_error(tmp_path):
    import os

    with pytest.raises(InputError, match="is a folder"):
        read_labels(tmp_path)
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        read_labels(fifo)


@pytest.mark.parametrize(
    "args",
    [
        ["project", "{fifo}", "-g", "G.pt", "-o", "{out}"],
        ["label", "{fifo}", "-o", "{out}/l.csv"],
        ["score", "{fifo}"],
        ["augment", "-l", "{fifo}", "-o", "{out}", "--attr", "x"],
    ],
    ids=lambda a: a[0],
)
def test_a_fifo_given_for_a_folder_is_called_a_fifo(tmp_path, args):
    import os

    os.mkfifo(tmp_path / "fifo")
    res = runner.invoke(app, [a.format(fifo=tmp_path / "fifo", out=tmp_path / "out") for a in args])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "is a FIFO, not a" in res.output and "no such" not in res.output, res.output


@pytest.mark.parametrize(
    "cells, typo",
    [
        (["1", "-1"] * 20 + ["11"], "'11'"),
        (["0", "1"] * 20 + ["2"], "'2'"),
        (["1", "-1"] * 30 + ["-11", "1.5"], "'-11'"),
        (["0", "1"] * 10 + ["10"], "'10'"),
    ],
)
def test_a_binary_column_with_a_typo_is_not_read_as_continuous(tmp_path, cells, typo):
    rows = "\n".join(f"{i}.png,{c}" for i, c in enumerate(cells))
    df = read_labels(_labels(tmp_path, "image_id,smile\n" + rows + "\n"))
    line = cells.index(typo.strip("'")) + 2
    with pytest.raises(InputError, match=rf"smile.*except for .*{typo} on line {line}:"):
        parse_attribute(df, "smile")


def test_real_scores_stay_continuous_and_line_numbers_count_blank_lines(tmp_path):
    rows = "\n".join(f"{i}.png,{i / 10}" for i in range(20))
    df = read_labels(_labels(tmp_path, "image_id,age\n" + rows + "\n"))
    assert parse_attribute(df, "age").kind == "continuous"
    df = read_labels(_labels(tmp_path, "image_id,smile\n\na.png,1\n\nb.png,x\n"))
    with pytest.raises(InputError, match="line 5"):
        parse_attribute(df, "smile")


@pytest.mark.parametrize(
    "pair, message",
    [
        ("lr=nan", "lr wants a finite number"),
        ("lr=inf", "lr wants a finite number"),
        ("lr=-inf", "lr wants a finite number"),
        ("steps=1e400", "steps wants an integer"),
        ("steps=3.7", "steps wants an integer"),
        ("steps=nan", "steps wants an integer"),
        ("beta1=1", r"beta1 must be in \[0, 1\)"),
        ("mse_weight=-1", "mse_weight must be >= 0"),
        ("perceptual_weight=-0.5", "perceptual_weight must be >= 0"),
        ("anomaly_lambda=nan", "anomaly_lambda wants a finite number"),
    ],
)
def test_set_values_are_checked_up_front(pair, message):
    key, value = pair.split("=")
    with pytest.raises(InputError, match=message):
        load_preset("default", {key: value})


def test_set_nan_through_the_cli_is_one_line_before_any_work(tmp_path, fixture_generator_path):
    img_dir = tmp_path / "in"
    img_dir.mkdir()
    res = runner.invoke(
        app,
        ["project", str(img_dir), "-g", str(fixture_generator_path), "-o", str(tmp_path / "o"), "--set", "lr=nan"],
    )
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and "lr" in res.output
    assert not (tmp_path / "o").exists()


def test_duplicate_header_through_fit_boundaries_is_exit_2(tmp_path):
    labels = _labels(tmp_path, "image_id,smile,smile\na.png,1,0\nb.png,0,1\n")
    res = runner.invoke(app, ["fit-boundaries", str(labels), "-l", str(tmp_path), "-o", str(tmp_path / "b.json")])
    assert res.exit_code == 2, res.output
    assert "appears twice" in res.output
