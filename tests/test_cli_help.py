"""What `--help` shows: whole sentences, every option described, defaults named, names that exist."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from facebatch.cli.app import app, reflow

runner = CliRunner()
COMMANDS = [
    ["project"], ["invert"], ["sample"], ["align"], ["label"], ["fit-boundaries"], ["augment"], ["nada"],
    ["score"], ["info"], ["directions", "sefa"], ["mix", "crossover"], ["encoder", "train"], ["models", "list"],
]  # fmt: skip


def test_reflow_joins_wrapped_lines_and_keeps_paragraphs_bullets_and_examples():
    doc = """First sentence wraps
    onto a second line.

    Second paragraph
    also wraps.
    - a bullet
    - another

        indented example
        stays as it is
    """
    assert reflow(doc).splitlines() == [
        "First sentence wraps onto a second line.",
        "",
        "Second paragraph also wraps.",
        "- a bullet",
        "- another",
        "",
        "    indented example",
        "    stays as it is",
    ]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_describes_every_option_and_names_no_private_function(command):
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    assert "read_latent_table" not in res.output  # not exported: facebatch.read_latents is
    for line in res.output.splitlines():
        m = re.match(r"│\s+\*?\s*(--[a-z-]+)(?:\s+-\w)?\s+<[^>]+>\s*(.*?)\s*│$", line)
        if m:
            assert re.sub(r"\[default: [^\]]*\]", "", m.group(2)).strip(), f"{command} {m.group(1)}: no description"
