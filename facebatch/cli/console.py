"""One rich console per stream, shared by every command, so progress bars and messages never interleave."""

from __future__ import annotations

import os
import sys

from rich.console import Console


def _width(stream) -> int | None:
    """Terminals report their own width; for logs and pipes rich would assume 80 columns and
    squeeze summary tables to unreadable stubs, so use $COLUMNS or 120 there."""
    if stream.isatty():
        return None
    return int(os.environ.get("COLUMNS", "0") or 0) or 120


out = Console(width=_width(sys.stdout))
err = Console(stderr=True, width=_width(sys.stderr))


def debug_enabled() -> bool:
    return os.environ.get("FACEBATCH_DEBUG", "") not in ("", "0")


def fail(message: str, code: int = 2) -> None:
    """Print one error line on stderr and exit: the contract for every user-caused error."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)
