"""Numbers a user gives, checked where they come in: integer selections such as "0-7" or "0,2,4-6"
(seeds for `sample` and `nada`, W+ layers for boundaries and edits), counts and sizes (iterations,
batches) and real numbers (strengths, weights, alphas, truncation). The CLI checks every float option
with `finite_number`; the library functions call the same checks on their arguments, so both refuse a
value with the same one line.
"""

from __future__ import annotations

import math
import operator
from typing import Iterable

from facebatch.errors import InputError, shown

# A selection is counted before it is expanded, so "0-100000000000" is refused at once, not after filling memory.
MAX_SELECTED = 1_000_000
# numpy's RandomState, which draws every z of a seed, takes seeds 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1
# Tensors are float32 (largest 3.4e38): Python takes 1e308 as a finite float, but it is inf once it scales a
# latent. Up to 1e9, times latents of size ~10 and squared in a loss, every product stays finite.
MAX_MAGNITUDE = 1e9


class RangeTooLarge(ValueError):
    """A selection past its bound, found before it was expanded; the message says the bound."""


def parse_ranges(text: str, *, most: int = MAX_SELECTED, largest: int | None = None) -> list[int]:
    """Non-negative integers and inclusive ranges, in the order given (repeats kept).

    Raises ValueError with the piece it cannot read; callers turn it into their option's message.
    Raises RangeTooLarge (a ValueError) when a value is above `largest` or the selection holds more than
    `most` values, before any list is built.
    """
    pieces: list[tuple[int, int]] = []
    count = 0
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and (not hi.isdigit() or int(hi) < int(lo))):
            raise ValueError(part)
        first, last = int(lo), int(hi if dash else lo)
        if largest is not None and last > largest:
            raise RangeTooLarge(f"{last} is above {largest}, the largest allowed")
        count += last - first + 1
        if count > most:
            raise RangeTooLarge(f"it selects more than {most:,} values, the most allowed")
        pieces.append((first, last))
    return [value for first, last in pieces for value in range(first, last + 1)]


def parse_seeds(text: str, name: str = "--seeds", *, most: int = MAX_SELECTED) -> list[int]:
    """Seeds such as "0-99,123" for the option `name`: each in 0 .. MAX_SEED, at most `most`, at least one."""
    try:
        seeds = parse_ranges(text, most=most, largest=MAX_SEED)
    except RangeTooLarge as exc:
        raise InputError(f"{name} {text!r}: {exc}") from None
    except ValueError as exc:
        raise InputError(f"{name}: cannot read {str(exc)!r} (seeds are 0 to {MAX_SEED}, e.g. 0-99,123)") from None
    if not seeds:
        raise InputError(f"{name} selects no seeds")
    return seeds


def check_seeds(seeds: Iterable[int], name: str = "--seed") -> None:
    """Seeds given as numbers (the library's arguments, --seed and -n): each in 0 .. MAX_SEED."""
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise InputError(f"{name} {seed!r}: seeds are integers from 0 to {MAX_SEED}")


def whole_number(value, name: str, *, lo: int | None = 0, hi: int | None = None) -> int:
    """`value` as an int, refused unless a whole number in [lo, hi]: a bool, a float, a str such as "3" (the
    library's callers pass Python values; click has already turned the CLI's text into an int) or a size past
    its bound is one line naming the bound, before anything is allocated from it."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)  # numpy integers too
    except TypeError:
        number = None
    if number is None or (lo is not None and number < lo) or (hi is not None and number > hi):
        if lo is not None and hi is not None:
            bound = f" from {lo:,} to {hi:,}"
        else:
            bound = f" of at least {lo:,}" if lo is not None else f" of at most {hi:,}" if hi is not None else ""
        raise InputError(f"{name} {shown(value)}: must be a whole number{bound}")
    return number


def finite_number(value, name: str, *, lo: float = -MAX_MAGNITUDE, hi: float = MAX_MAGNITUDE) -> float:
    """`value` as a float, refused unless finite and in [lo, hi]: nan, inf and 1e308 never reach a tensor."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int such as 10**400
        number = math.nan
    if not (math.isfinite(number) and lo <= number <= hi):
        raise InputError(f"{name} {value!r}: must be a finite number from {format_bound(lo)} to {format_bound(hi)}")
    return number


def format_bound(bound: float) -> str:
    return f"{bound:g}".replace("e+0", "e").replace("e+", "e")


def parse_numbers(text: str, name: str, **bounds: float) -> list[float]:
    """Comma-separated numbers ("-3,-1.5,1.5,3"), each through `finite_number`."""
    return [finite_number(part, name, **bounds) for part in text.replace(" ", "").split(",") if part]
