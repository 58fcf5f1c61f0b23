"""One rich console per stream, shared by every command, so progress bars and messages never interleave."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from typing import Iterator

from rich.console import Console
from rich.text import Text


def _width(stream) -> int | None:
    """Terminals report their own width; for logs and pipes rich would assume 80 columns and
    squeeze summary tables to unreadable stubs, so use $COLUMNS or 120 there."""
    if stream.isatty():
        return None
    return int(os.environ.get("COLUMNS", "0") or 0) or 120


# markup=False: every string printed (paths, image ids, column names, error messages, table cells) is the
# user's text, shown as is; a "[red]" in a file name must neither vanish nor crash. Styled words are
# built with `styled` / rich Text, never by formatting user text into a markup string.
out = Console(width=_width(sys.stdout), markup=False)
err = Console(stderr=True, width=_width(sys.stderr), markup=False)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Text from plain strings and (text, style) pairs: styling without parsing anything as markup."""
    return Text.assemble(*parts)


def error_line(message: str) -> None:
    """The one-line user error on stderr (no exit): 'error: <message>', the message shown verbatim."""
    err.print(styled(("error:", "bold red"), " ", str(message)), highlight=False, soft_wrap=True)


def debug_enabled() -> bool:
    return os.environ.get("FACEBATCH_DEBUG", "") not in ("", "0")


def fail(message: str, code: int = 2) -> None:
    """Print one error line on stderr and exit: the contract for every user-caused error."""
    error_line(message)
    sys.exit(code)


# The object-store clients' own reports of a failing request: gcsfs logs a traceback per request out of retries
# and adlfs warns that it assumes a container exists. The command reports the failure itself, in one line.
_STORE_LOGGERS = ("gcsfs", "adlfs", "azure")
_STORE_WARNINGS = ("Failed to fetch container properties",)


@contextlib.contextmanager
def store_clients_quiet() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _STORE_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            for message in _STORE_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Show each FacebatchWarning raised inside as one 'warning: ...' line on stderr (verbatim, no markup)."""
    from facebatch.errors import FacebatchWarning

    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FacebatchWarning):
            err.print(styled(("warning:", "yellow"), " ", str(message)), highlight=False, soft_wrap=True)
        else:
            previous(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", FacebatchWarning)
        warnings.showwarning = show
        yield
