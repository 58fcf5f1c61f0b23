"""Layer selections such as "0-7" or "0,2,4-6": which W+ rows a boundary reads or an edit moves."""

from __future__ import annotations

from typing import Iterable, Sequence

from facebatch.checks import items
from facebatch.errors import InputError
from facebatch.ranges import RangeTooLarge, parse_ranges, whole_number


def parse_layers(spec: str | Sequence[int] | None, num_ws: int) -> list[int]:
    """Sorted unique layer indices; None, "" and "all" mean every layer of a generator with num_ws layers."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return list(range(num_ws))
    if isinstance(spec, str):
        try:
            indices = parse_ranges(spec, largest=num_ws - 1)
        except RangeTooLarge:
            raise InputError(
                f"layer selection {spec!r} is out of range: the latents have {num_ws} layers (0-{num_ws - 1})"
            ) from None
        except ValueError:
            raise InputError(f"bad layer selection {spec!r}: use indices and ranges such as 0-7 or 0,2,4-6") from None
    else:
        indices = [whole_number(i, "layer", lo=None) for i in items(spec, "layers", "W+ layer indices")]
    bad = [i for i in indices if not 0 <= i < num_ws]
    if bad:
        raise InputError(f"layer(s) {sorted(set(bad))} out of range: the latents have {num_ws} layers (0-{num_ws - 1})")
    if not indices:
        raise InputError(f"empty layer selection {spec!r}")
    return sorted(set(indices))


def format_layers(layers: Iterable[int]) -> str:
    """Compact text form ("0-3,7") for tables and file names; parse_layers reads it back."""
    layers = sorted(set(layers))
    runs: list[str] = []
    start = prev = None
    for i in layers:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            runs.append(f"{start}-{prev}" if prev > start else f"{start}")
            start = prev = i
    if start is not None:
        runs.append(f"{start}-{prev}" if prev > start else f"{start}")
    return ",".join(runs)
