"""Each mix app's own options as a frozen record (`App.params` names it): read once on the client from the
options the caller gave after the app's check (`apps.py`), recorded in the run's config, read by the worker
as attributes.

The config hash covers these options, and a run started before they were records hashed the dict the check
left: the options the caller gave (a library caller may give only some) and those the check fills in, in
that order, each value as given once checked (an int style weight stays an int). A run resumes only while
its hash is the same, so a record remembers which options it holds (`recorded`) and writes exactly those, in
that order, as they were given; an option it does not hold reads as its default, as the worker read it then.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

from facebatch.pipeline.records import JsonRecord, to_json

# At 1.0 (the maths' default) the style term cost about 4 dB of the content outside the region in 40 steps on
# the fixture generator; 0.2 restyles the region visibly and keeps the rest (the tests' and bench's choice).
DEFAULT_STYLE_WEIGHT = 0.2
DEFAULT_FRAMES = 8

P = TypeVar("P", bound="AppParams")


@dataclass(frozen=True)
class AppParams(JsonRecord):
    """Base of an app's options record; a subclass declares the options as fields, with their defaults."""

    # The options the JSON holds, in order (None: all of them); not an option, so never in the JSON.
    recorded: tuple[str, ...] | None = dataclasses.field(default=None, kw_only=True)

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """The app's options, by the command's names in Python spelling."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "recorded")

    @property
    def combines_codes_only(self) -> bool:
        """Whether these options ask an app that optimises a projection to only combine codes instead."""
        return False

    def to_json(self) -> dict[str, Any]:
        names = self.options() if self.recorded is None else self.recorded
        return {name: to_json(getattr(self, name)) for name in names}

    @classmethod
    def from_json(cls: type[P], data: Mapping[str, Any]) -> P:
        if "recorded" in data:  # a caller's option of that name would otherwise be taken for the key list
            raise ValueError(f"{cls.__name__} has no field 'recorded'")
        return dataclasses.replace(super().from_json(data), recorded=tuple(data))


@dataclass(frozen=True)
class MorphParams(AppParams):
    frames: int = DEFAULT_FRAMES  # frames from A to B, both endpoints included
    animation: str = "gif"  # gif | webp | none: the pair's animation file


@dataclass(frozen=True)
class MaskedParams(AppParams):
    """Inpaint's options, and the start of every app's that takes a mask."""

    mask: str | None = None  # for pairs without a mask cell: a shape or a PNG's path (the check fills it in)


@dataclass(frozen=True)
class CrossoverParams(MaskedParams):
    layers: tuple[int, ...] | None = None  # W+ rows taken from A by a layer crossover (None: spatial)

    @property
    def combines_codes_only(self) -> bool:
        return self.layers is not None


@dataclass(frozen=True)
class StyleParams(MaskedParams):
    style_weight: float = DEFAULT_STYLE_WEIGHT  # weight of the Gram-matrix style loss


@dataclass(frozen=True)
class ExpressionParams(AppParams):
    alpha_layers: tuple[int, ...] | None = None  # W+ rows taken from B (the check fills it in unless alpha is given)
    alpha: tuple[float, ...] | None = None  # explicit alpha, one value per W+ row
    alpha_sweep: bool = False  # one result per candidate alpha (single layers and adjacent pairs)
