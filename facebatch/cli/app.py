"""The `facebatch` command: registers each command group and turns user errors into one line + exit 2."""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import sys
import typing
from typing import Annotated, Optional

import typer

from facebatch import __version__
from facebatch.cli import console
from facebatch.errors import FacebatchError

app = typer.Typer(
    name="facebatch",
    help="Batch StyleGAN2 projection, editing and reconstruction scoring for face datasets.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"facebatch {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Batch StyleGAN2 projection, editing and reconstruction scoring for face datasets."""


def _register() -> None:
    # One module per command, named like it; each exposes the command function (or `app`, a sub-group).
    from facebatch.cli import (
        align,
        augment,
        directions,
        encoder,
        fit_boundaries,
        info,
        invert,
        label,
        mix,
        models,
        nada,
        project,
        sample,
        score,
    )

    app.command("project")(project.project)
    app.command("invert")(invert.invert)
    app.command("sample")(sample.sample)
    app.command("align")(align.align)
    app.command("label")(label.label)
    app.command("fit-boundaries")(fit_boundaries.fit_boundaries)
    app.add_typer(directions.app, name="directions")
    app.command("augment", context_settings=augment.CONTEXT)(augment.augment)
    app.add_typer(mix.app, name="mix")
    app.command("nada")(nada.nada)
    app.add_typer(encoder.app, name="encoder")
    app.command("score")(score.score)
    app.add_typer(models.app, name="models")
    app.command("info")(info.info)


def _user_errors(fn):
    """Turn a FacebatchError into one stderr line + its exit code inside typer, so every entry
    (the console script, `python -m facebatch`, typer's CliRunner) behaves the same."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            quiet = contextlib.nullcontext() if console.debug_enabled() else console.store_clients_quiet()
            with console.warnings_as_lines(), quiet:
                check_options(fn, kwargs)
                return fn(*args, **kwargs)
        except FacebatchError as exc:
            if console.debug_enabled():
                raise
            console.error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # the environment's refusal (permission, full disk, read-only, special file)
            if console.debug_enabled():
                raise
            console.error_line(describe_os_error(exc))
            raise typer.Exit(2) from None

    wrapper._facebatch_wrapped = True
    return wrapper


def check_options(fn, values: dict) -> None:
    """The checks all commands' options share, made before a command does anything: every float option is
    finite and of a size float32 maths survives (click reads "nan", "inf" and "1e308" as floats), and
    --device is spelled as a device. Here once, so a new command's options are checked too."""
    from facebatch.ranges import finite_number

    for name, (flag, kind) in _checked_options(fn).items():
        value = values.get(name)
        if value is None:
            continue
        if kind == "float":
            for number in value if isinstance(value, (list, tuple)) else [value]:
                finite_number(number, flag)
        else:
            from facebatch.nets.device import check_device

            check_device(value)


@functools.lru_cache(maxsize=None)
def _checked_options(fn) -> dict[str, tuple[str, str]]:
    """parameter -> (its longest flag, "float" or "device") for the options of a command function that
    check_options validates, read from the typer.Option annotations."""
    found = {}
    for name, hint in typing.get_type_hints(fn, include_extras=True).items():
        if typing.get_origin(hint) is not typing.Annotated:
            continue
        base, *meta = typing.get_args(hint)
        info = next((m for m in meta if isinstance(m, typer.models.OptionInfo)), None)
        if info is None:
            continue
        flags = [d for d in (info.default, *(info.param_decls or ())) if isinstance(d, str) and d.startswith("-")]
        flag = max(flags, key=len) if flags else f"--{name.replace('_', '-')}"
        if float in _leaf_types(base):
            found[name] = (flag, "float")
        elif "--device" in flags:
            found[name] = (flag, "device")
    return found


def _leaf_types(hint) -> set:
    """float for float, Optional[float], list[float] and Optional[list[float]]."""
    args = typing.get_args(hint)
    return {leaf for arg in args for leaf in _leaf_types(arg)} if args else {hint}


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: what, where, and how to go on (finished work is kept: files are atomic)."""
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    what = exc.strerror or str(exc) or type(exc).__name__
    text = f"{where}: {what}" if where else what
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{text}: the disk is full; finished work is kept, free some space and rerun the same command to resume"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{text}: facebatch may not write or read there; pick another --out or fix the permissions"
    return text


def reflow(doc: str) -> str:
    """A docstring as help text: the lines of a paragraph joined (rich help keeps every newline, which breaks
    sentences where the source wraps them); blank lines, bullets and indented lines keep their breaks."""
    out: list[str] = []
    for line in inspect.cleandoc(doc).splitlines():
        joinable = out and out[-1].strip() and line.strip() and not line.startswith((" ", "-", "*"))
        if joinable and not out[-1].startswith(" "):
            out[-1] = f"{out[-1]} {line.strip()}"
        else:
            out.append(line)
    return "\n".join(out)


def _wrap_commands(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "_facebatch_wrapped", False):
            if info.help is None and info.callback.__doc__:
                info.help = reflow(info.callback.__doc__)
            info.callback = _user_errors(info.callback)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _wrap_commands(group.typer_instance)


_register()
_wrap_commands(app)


def main() -> None:
    try:
        app()
    except FacebatchError as exc:
        if console.debug_enabled():
            raise
        console.fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        console.err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
