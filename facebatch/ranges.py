"""Integer selections such as "0-7" or "0,2,4-6": seeds for `sample`, W+ layers for boundaries and edits."""

from __future__ import annotations


def parse_ranges(text: str) -> list[int]:
    """Non-negative integers and inclusive ranges, in the order given (repeats kept).

    Raises ValueError with the piece it cannot read; callers turn it into their option's message.
    """
    values: list[int] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and (not hi.isdigit() or int(hi) < int(lo))):
            raise ValueError(part)
        values.extend(range(int(lo), int(hi if dash else lo) + 1))
    return values
