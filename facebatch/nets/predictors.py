"""Image -> attribute-probability predictors behind one small interface, resolved like generators.

`facebatch label` only needs what `Predictor` promises: the attribute ``names`` and ``probs(images)``
(images ``[N, 3, H, W]`` in [-1, 1] -> probabilities ``[N, len(names)]`` in [0, 1]), plus the input
``resolution`` files are read at. Each predictor *kind* (the registry's ``kind`` field) has one loader
in `LOADERS`; a zero-shot CLIP predictor (prompts as attribute names) is one more entry there,
with the same output, and `label` does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence, runtime_checkable

import torch

from facebatch.errors import CheckpointError, InputError
from facebatch.nets import cache, registry


@runtime_checkable
class Predictor(Protocol):
    names: tuple[str, ...]  # one per output column, in order
    resolution: int  # the side files are read at (centre square crop + Lanczos), as the predictor was trained

    def probs(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [-1, 1] -> [N, len(names)] probabilities; no gradients needed."""
        ...


@dataclass(frozen=True)
class PredictorRef:
    """What the client resolves (cheap, no weights): enough for a worker to load and check the same file."""

    path: Path
    name: str  # registry name or file stem
    kind: str  # a key of LOADERS
    sha256: str


class AttributeNetPredictor:
    """`facebatch.nets.attributes.AttributePredictor` (celeba-attrs and files like it) as a Predictor."""

    def __init__(self, net):
        self.net = net
        self.names = tuple(net.attributes)
        self.resolution = int(net.resolution)

    @torch.no_grad()
    def probs(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def _load_attribute_net(path: Path, device) -> Predictor:
    from facebatch.nets.attributes import load_predictor

    return AttributeNetPredictor(load_predictor(path, device=device))


# kind -> loader(path, device). The registry's `kind` names the loader; a file is sniffed (see _file_kind).
LOADERS: dict[str, Callable[[Path, object], Predictor]] = {"attribute-predictor": _load_attribute_net}


def _file_kind(path: Path) -> str:
    """The predictor kind of a file given by path; a generator or an unknown file is a one-line error."""
    from safetensors import SafetensorError, safe_open

    from facebatch.nets.attributes import FORMAT_NAME, META_KEY

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        meta = None
    if meta is not None and META_KEY in meta and f'"{FORMAT_NAME}"' in meta[META_KEY]:
        return "attribute-predictor"
    try:  # a generator checkpoint passed by mistake gets a message that says so
        from facebatch.nets.checkpoints import read_checkpoint

        read_checkpoint(path)
    except Exception:
        pass
    else:
        raise InputError(f"--predictor {path} is a generator checkpoint, not an attribute predictor")
    raise InputError(f"--predictor {path} is not an attribute-predictor file (kinds: {', '.join(sorted(LOADERS))})")


def resolve_predictor(spec: str | Path) -> PredictorRef:
    """A registry name (kind attribute-predictor, ...) or a file -> PredictorRef; InputError otherwise."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return PredictorRef(path.resolve(), path.stem, _file_kind(path), cache.sha256_of(path))
    entry = registry.get(text)
    if entry is not None:
        if entry.kind not in LOADERS:
            raise InputError(
                f"--predictor {text} is a {entry.kind} in the registry, not a predictor "
                f"(predictors: {', '.join(known_predictors()) or 'none'})"
            )
        file = entry.fetch()
        return PredictorRef(Path(file).resolve(), entry.name, entry.kind, cache.sha256_of(file))
    if path.exists():
        raise InputError(f"--predictor {path} is a folder, not a predictor file")
    raise InputError(
        f"unknown predictor {text!r}: not a file and not a registry name "
        f"(predictors: {', '.join(known_predictors()) or 'none'})"
    )


def known_predictors() -> list[str]:
    return sorted(name for name, e in registry.models().items() if e.kind in LOADERS)


def load(ref: PredictorRef, device="cpu") -> Predictor:
    """Load on a worker: the file must still be the one the client hashed."""
    digest = cache.sha256_of(ref.path)
    if digest != ref.sha256:
        raise CheckpointError(f"{ref.path} on this worker has sha256 {digest}, the run uses {ref.sha256}")
    return LOADERS[ref.kind](ref.path, device)


def peek_names(ref: PredictorRef) -> tuple[str, ...]:
    """The attribute names, for validating --attrs in the client (loads the predictor on the CPU: ~10 MB)."""
    return tuple(load(ref, "cpu").names)


def select(names: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """--attrs checked against the predictor's names: one line naming what is unknown and what exists."""
    unknown = [a for a in wanted if a not in names]
    if unknown:
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise InputError(f"unknown --attrs {', '.join(map(repr, unknown))}: the predictor has {shown}")
    return list(dict.fromkeys(wanted))
