"""The options every batch command shares are declared once and reach the command as one RunOptions."""

from __future__ import annotations

import inspect

import pytest
import typer
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.cli.cluster_options import RUN_PARAMETERS, batch_command, shared_options
from facebatch.pipeline.run_options import RunOptions

runner = CliRunner()
RUN_FLAGS = {
    "--workers", "--scheduler", "--scheduler-file", "--threads-per-worker", "--device",
    "--overwrite", "--retry-errors", "--dry-run", "--quiet",
}  # fmt: skip
# Batch commands, with the run options that mean nothing to them (align brings its own --workers help).
BATCH = {
    ("project",): set(),
    ("sample",): {"--retry-errors"},
    ("align",): {"--threads-per-worker", "--device"},
    ("label",): set(),
    ("augment",): set(),
    **{("mix", a): set() for a in ("morph", "crossover", "inpaint", "style", "expression")},
}


def _flags(command: tuple[str, ...]) -> set[str]:
    group = typer.main.get_command(app)
    for name in command:
        group = group.commands[name]
    return {opt for p in group.params for opt in p.opts if opt.startswith("--")}


@pytest.mark.parametrize("command", BATCH, ids=" ".join)
def test_every_batch_command_has_the_run_options_it_can_use(command):
    flags = _flags(command)
    assert RUN_FLAGS - BATCH[command] <= flags
    assert not (BATCH[command] & flags)


def test_the_mix_apps_share_their_common_options():
    common = {"--generator", "--latents", "--preset", "--steps", "--set", "--seed", "--batch-size", "--shard-size"}
    for app_name in ("morph", "crossover", "inpaint", "style", "expression"):
        assert common | {"--sheet-rows"} <= _flags(("mix", app_name))


def test_the_command_gets_one_typed_object_per_group_of_shared_options():
    seen = {}

    def build(**values):
        return tuple(sorted(values.items()))

    @batch_command(without=("retry_errors",))
    @shared_options((("colour", str, "red"), ("size", int, 3)), "common", build)
    def command(name: str, *, common, run) -> None:
        seen.update(name=name, common=common, run=run)

    params = list(inspect.signature(command).parameters)
    assert params[:3] == ["name", "colour", "size"] and "run" not in params and "common" not in params
    assert params[3:] == [n for n, _, _ in RUN_PARAMETERS if n != "retry_errors"]
    command("x", colour="blue", workers=0, device="cpu", dry_run=True)
    assert seen["common"] == (("colour", "blue"),)
    assert seen["run"] == RunOptions(workers=0, device="cpu", dry_run=True)


def test_the_run_options_reach_the_library_function(tmp_path, fixture_generator_path, monkeypatch):
    """The CLI parses, the library function runs: a dry run of `sample` plans and writes nothing."""
    from facebatch.commands import sample as sample_command

    got = {}
    real = sample_command.sample

    def spy(generator, out, options, run, console=None):
        got.update(options=options, run=run)
        return real(generator, out, options, run, console)

    monkeypatch.setattr(sample_command, "sample", spy)
    args = ["sample", "-g", str(fixture_generator_path), "-o", str(tmp_path / "S"), "--seeds", "3,5", "-w", "0"]
    res = runner.invoke(app, [*args, "--dry-run", "--device", "cpu"])
    assert res.exit_code == 0 and "plan: 2 samples" in res.output, res.output
    assert got["run"] == RunOptions(workers=0, device="cpu", dry_run=True)
    assert got["options"].seed_list() == [3, 5]
    assert not (tmp_path / "S").exists()
