"""Image -> attribute-probability predictors behind one small interface, resolved like generators.

`facebatch label` only needs what `Predictor` promises: the attribute ``names`` and ``probs(images)``
(images ``[N, 3, H, W]`` in [-1, 1] -> probabilities ``[N, len(names)]`` in [0, 1]), plus the input
``resolution`` files are read at. Each predictor *kind* (the registry's ``kind`` field) has one loader
in `LOADERS`, called with the resolved `PredictorRef`.

Two kinds: ``attribute-predictor`` (a trained network, celeba-attrs) and ``clip``, zero-shot labels from
words: each attribute is a prompt pair (positive | negative) and its probability is CLIP's two-way softmax,
``softmax(logit_scale * [cos(img, pos), cos(img, neg)])[0]``, each side averaged over the model's prompt
templates (`facebatch.nets.clip`). Both write the same labels, so fit-boundaries learns a direction from
either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    options: dict = field(default_factory=dict)  # JSON: what else the kind's loader needs (a CLIP's prompts)


class AttributeNetPredictor:
    """`facebatch.nets.attributes.AttributePredictor` (celeba-attrs and files like it) as a Predictor."""

    def __init__(self, net):
        self.net = net
        self.names = tuple(net.attributes)
        self.resolution = int(net.resolution)

    @torch.no_grad()
    def probs(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def _load_attribute_net(ref: PredictorRef, device) -> Predictor:
    from facebatch.nets.attributes import load_predictor

    return AttributeNetPredictor(load_predictor(ref.path, device=device))


class ClipPromptPredictor:
    """Zero-shot attribute probabilities from a CLIP and one (positive, negative) prompt pair per attribute."""

    def __init__(self, clip, prompts: Sequence[tuple[str, str, str]]):
        self.clip = clip
        self.names = tuple(name for name, _, _ in prompts)
        self.resolution = int(clip.image_size)
        pos = torch.stack([clip.embed_prompt(p) for _, p, _ in prompts])
        neg = torch.stack([clip.embed_prompt(n) for _, _, n in prompts])
        self._pairs = torch.stack([pos, neg], dim=1)  # [A, 2, D], unit rows
        self._scale = float(clip.model.logit_scale.exp().clamp(max=100))

    @torch.no_grad()
    def probs(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.clip.encode_images(images)  # [N, D] unit rows
        logits = self._scale * torch.einsum("nd,akd->nak", feats, self._pairs.to(feats.device))
        return logits.softmax(dim=-1)[..., 0]


def _load_clip(ref: PredictorRef, device):
    from facebatch.nets.clip import ClipRef, load_clip

    clip = ref.options["clip"]
    return load_clip(ClipRef(clip["spec"], clip["arch"], ref.path, ref.sha256, bool(clip.get("quick_gelu"))), device)


def _load_clip_prompts(ref: PredictorRef, device) -> Predictor:
    return ClipPromptPredictor(_load_clip(ref, device), [tuple(p) for p in ref.options["prompts"]])


# kind -> loader(ref, device). The registry's `kind` names the loader; a file is sniffed (see _file_kind).
LOADERS: dict[str, Callable[[PredictorRef, object], Predictor]] = {
    "attribute-predictor": _load_attribute_net,
    "clip": _load_clip_prompts,
}


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
    from facebatch.nets.clip import read_clip_config

    if meta is not None and read_clip_config(path) is not None:
        raise InputError(f"--predictor {path} is a CLIP: use --clip {path} --prompt NAME='POSITIVE|NEGATIVE'")
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
        if entry.kind == "clip":
            raise InputError(f"--predictor {text} is a CLIP: use --clip {text} --prompt NAME='POSITIVE|NEGATIVE'")
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


# ------------------------------------------------------------------------------------- CLIP prompts

PROMPT_SYNTAX = "NAME='POSITIVE|NEGATIVE' (e.g. Smiling='a smiling person|a person')"
_RESERVED_NAMES = ("image_id", "source", "status", "error")
# A labels-CSV header cell starting with one of these is a formula to a spreadsheet (CSV injection, OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _check_prompt(name: str, pos: str, neg: str, where: str) -> tuple[str, str, str]:
    if not all(isinstance(t, str) for t in (name, pos, neg)):
        raise InputError(f"{where}: a prompt is three texts (name, positive, negative): {PROMPT_SYNTAX}")
    starts = {name[:1], name.strip()[:1]} & set(FORMULA_STARTS)  # "\t=cmd" strips to "=cmd"
    if starts:
        raise InputError(
            f"{where}: the name {name!r} starts with {starts.pop()!r}, which makes it a formula to a spreadsheet "
            "opening the labels CSV; start it with a letter or digit"
        )
    name, pos, neg = name.strip(), pos.strip(), neg.strip()
    if not name or not pos or not neg:
        raise InputError(f"{where}: a prompt needs a name, a positive and a negative text: {PROMPT_SYNTAX}")
    if name in _RESERVED_NAMES or any(c in name for c in ',"\n\r\t'):
        raise InputError(f"{where}: {name!r} cannot be an attribute name (a labels column)")
    if "{}" in pos or "{}" in neg:
        raise InputError(f"{where}: write the prompt text without '{{}}': the model's templates wrap it")
    return name, pos, neg


def parse_prompt(text: str) -> tuple[str, str, str]:
    """``NAME=POSITIVE|NEGATIVE`` -> (name, positive, negative); one-line InputError otherwise."""
    name, eq, pair = text.partition("=")
    parts = pair.split("|")
    if not eq or len(parts) != 2:
        raise InputError(f"--prompt {text!r}: expected {PROMPT_SYNTAX}")
    return _check_prompt(name, parts[0], parts[1], f"--prompt {text!r}")


def read_prompts_file(path: Path) -> list[tuple[str, str, str]]:
    """A YAML mapping, one attribute per key: ``Smiling: [a smiling person, a person]`` (positive, negative).

    A regular file of at most 1 MiB (a FIFO or device is refused without waiting on it); a name given twice is
    refused, as a repeated --prompt is."""
    from facebatch.pipeline.textfiles import load_yaml, read_small_text

    path = Path(path)
    doc = load_yaml(read_small_text(path, "--prompts"), f"--prompts {path}")
    if not isinstance(doc, dict) or not doc:
        raise InputError(f"--prompts {path}: expected a mapping NAME: [POSITIVE, NEGATIVE], one per line")
    prompts = []
    for name, pair in doc.items():
        if not isinstance(name, str):  # YAML reads yes / no / on / 1 as booleans and numbers
            raise InputError(f"--prompts {path}: the name {name!r} is not text; quote it ('{name}': [...])")
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise InputError(f"--prompts {path}: {name}: expected [POSITIVE, NEGATIVE], two texts")
        prompts.append(_check_prompt(str(name), pair[0], pair[1], f"--prompts {path}"))
    return prompts


def collect_prompts(prompts: Sequence[str] = (), prompts_file: Path | None = None) -> list[tuple[str, str, str]]:
    """--prompts FILE entries, then each --prompt; an attribute named twice is an error."""
    found = (read_prompts_file(prompts_file) if prompts_file else []) + [parse_prompt(t) for t in prompts]
    return _named_once(found)


def _named_once(prompts: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    seen: set[str] = set()
    for name, _, _ in prompts:
        if name in seen:
            raise InputError(f"prompt {name!r} is given twice")
        seen.add(name)
    return prompts


def resolve_clip_predictor(spec: str, prompts: Sequence[tuple[str, str, str]]) -> PredictorRef:
    """--clip SPEC with its prompts -> PredictorRef (kind clip); the CLIP is resolved (downloaded once) here."""
    from facebatch.nets.clip import resolve_clip

    if not prompts:
        raise InputError(f"--clip {spec} needs prompts: --prompt NAME='POSITIVE|NEGATIVE' or --prompts FILE")
    prompts = _named_once([_check_prompt(*_three(p), "prompt") for p in prompts])  # a library caller's too
    ref = resolve_clip(spec)
    options = {
        "clip": {"spec": ref.spec, "arch": ref.arch, "quick_gelu": ref.quick_gelu},
        "prompts": [list(p) for p in prompts],
    }
    return PredictorRef(ref.path, ref.label, "clip", ref.sha256, options)


def _three(prompt) -> tuple:
    if isinstance(prompt, str) or not isinstance(prompt, (tuple, list)) or len(prompt) != 3:
        raise InputError(f"prompt {prompt!r}: expected (name, positive, negative), three texts")
    return tuple(prompt)


def known_predictors() -> list[str]:
    return sorted(name for name, e in registry.models().items() if e.kind in LOADERS and e.kind != "clip")


def load(ref: PredictorRef, device="cpu") -> Predictor:
    """Load on a worker: the file must still be the one the client hashed."""
    digest = cache.sha256_of(ref.path)
    if digest != ref.sha256:
        raise CheckpointError(f"{ref.path} on this worker has sha256 {digest}, the run uses {ref.sha256}")
    return LOADERS[ref.kind](ref, device)


def preflight(ref: PredictorRef) -> tuple[str, ...]:
    """Load the model once on the CPU in the client and return the attribute names (for checking --attrs).

    A file no worker can load (damaged, truncated, not the architecture it names, a tokenizer that cannot be
    had) is then one line before any shard, not a failed shard on every worker with "rerun to retry". An
    attribute predictor is ~10 MB; a CLIP is loaded without embedding its prompts (a web-scale CLIP costs a
    few seconds here, and its names are its prompts' names).
    """
    if ref.kind == "clip":
        _load_clip(ref, "cpu")  # load_clip checks the file is still the one resolved
        return tuple(p[0] for p in ref.options["prompts"])
    return tuple(load(ref, "cpu").names)


def select(names: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """--attrs checked against the predictor's names: one line naming what is unknown and what exists."""
    unknown = [a for a in wanted if a not in names]
    if unknown:
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise InputError(f"unknown --attrs {', '.join(map(repr, unknown))}: the predictor has {shown}")
    return list(dict.fromkeys(wanted))
