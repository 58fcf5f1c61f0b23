"""Errors a user can cause. The CLI prints their message as one line and exits with exit_code."""

import re


class FacebatchError(Exception):
    """A problem with the user's input or environment, not a bug: no traceback is shown."""

    exit_code = 2


class CheckpointError(FacebatchError):
    """A checkpoint file that is missing, unknown, truncated or unsafe."""


class ModelNotAvailable(FacebatchError):
    """A named model that is not in the cache and cannot be downloaded (offline)."""


class InputError(FacebatchError):
    """A bad input path, table or option value."""


class RunFailed(FacebatchError):
    """The job ran but some of its work failed for good (exit 1, not a usage error)."""

    exit_code = 1


class FacebatchWarning(UserWarning):
    """Something the user should know that does not stop the run (e.g. a folder that could not be read).
    The CLI prints each as one 'warning:' line on stderr."""


def shown(value, most: int = 60) -> str:
    """A value a user gave, as a one-line error quotes it: its repr, cut short (a list of a million paths
    or a 10,000-character string would drown the message)."""
    text = repr(value)
    return text if len(text) <= most else f"{text[: most - 3]}..."


def first_line(exc: BaseException, with_type: bool = False) -> str:
    """An exception as one short line for a one-line error: its message's first line (after its type's name
    with `with_type`), else its type's name."""
    refusal = weights_only_refusal(exc)
    if refusal:
        return refusal
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    line = text.splitlines()[0][:200]
    return f"{type(exc).__name__}: {line}" if with_type else line


def weights_only_refusal(exc: BaseException) -> str | None:
    """torch's weights-only loader refusing a file, said as what happened; None for any other error.

    torch's own message opens with advice to load the file again with weights_only=False, which would
    run whatever code the file carries: that advice must never reach a user, cut short or whole.
    """
    text = str(exc)
    if "weights only load failed" not in text.lower():
        return None
    found = re.search(r"GLOBAL ([\w.]+)", text)
    what = f"imports {found.group(1)}" if found else "holds more than tensors and containers"
    return f"refused to load: the file {what}, which would run code when it is read (nothing in it was run)"
