"""One rich console per stream, shared by every command, so progress bars and messages never interleave."""

from __future__ import annotations

import os
import sys

from rich.console import Console

out = Console()
err = Console(stderr=True)


def debug_enabled() -> bool:
    return os.environ.get("FACEBATCH_DEBUG", "") not in ("", "0")


def fail(message: str, code: int = 2) -> None:
    """Print one error line on stderr and exit: the contract for every user-caused error."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)
