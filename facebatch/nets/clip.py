"""CLIP through open_clip: one small wrapper that NADA's losses and zero-shot labels share.

A CLIP is named by a spec, resolved like a generator:

- a registry name of kind ``clip`` (the built-in face CLIP, ``celeba-clip``);
- ``ARCH:TAG``, an open_clip pretrained tag (``ViT-B-32:openai``, ``ViT-B-16:laion2b_s34b_b88k``): the
  weights are downloaded once into facebatch's cache (``models/clip/ARCH-TAG/``, a ``.sha256`` sidecar
  recorded on first download, as for generators); offline, a missing file is one line naming the URL
  and the path to put it at;
- ``ARCH:/path/to/weights.safetensors`` (or ``.bin``/``.pt`` state dicts, read with ``weights_only``),
  an open_clip architecture with local weights;
- a facebatch-clip ``.safetensors`` file: open_clip's ``CLIP`` built from the model config in its
  metadata (how the face CLIP is stored; nothing in it is executed).

Images enter as ``[N, 3, H, W]`` in [-1, 1] and go through a *differentiable* copy of CLIP's
preprocessing (to [0, 1], bicubic resize of the short side, centre crop, mean/std), so gradients
reach a generator; open_clip's own transforms work on PIL images and cannot be used there.
Text embeddings are averaged over prompt templates (each normalised, then the mean normalised),
as CLIP's zero-shot classifier and StyleGAN-NADA do.
"""

from __future__ import annotations

import json
import math
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from facebatch import __version__
from facebatch.errors import CheckpointError, InputError, ModelNotAvailable, first_line
from facebatch.nets import cache, registry
from facebatch.nets.safetensors_meta import META_KEY
from facebatch.pipeline.atomic import atomic_output

FORMAT_NAME = "facebatch-clip"
FORMAT_VERSION = 1
MAX_TEMPLATES = 1000  # prompt templates a file may carry (OpenAI's ImageNet set has 80)
MAX_TEMPLATE_CHARS = 1000
_STATE_FILES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class ClipRef:
    """What a client resolves (no weights loaded): enough for a worker to build and check the same model."""

    spec: str  # as the user wrote it
    arch: str | None  # open_clip architecture name; None for a facebatch-clip file
    path: Path
    sha256: str
    quick_gelu: bool = False

    @property
    def label(self) -> str:
        return self.spec


def imagenet_templates() -> tuple[str, ...]:
    """The 80 OpenAI ImageNet prompt templates (StyleGAN-NADA's), as format strings with one ``{}``."""
    from open_clip import OPENAI_IMAGENET_TEMPLATES

    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


class Clip:
    """An open_clip model with a differentiable image path and template-averaged text embeddings."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        templates: Sequence[str],
        name: str,
        sha256: str = "",
    ):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.templates = tuple(templates)
        self.name = name
        self.sha256 = sha256
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> the model's input: resize the short side (bicubic), centre crop, normalise."""
        x = (images.float() + 1) / 2
        h, w = x.shape[-2:]
        side = self.image_size
        if (h, w) != (side, side):
            scale = side / min(h, w)
            size = (max(side, round(h * scale)), max(side, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=scale < 1)
            top, left = (size[0] - side) // 2, (size[1] - side) // 2
            x = x[..., top : top + side, left : left + side]
        return (x - self._mean.to(x.device)) / self._std.to(x.device)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings [N, D]; gradients flow to `images`."""
        return F.normalize(self.model.encode_image(self.preprocess(images)).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm embeddings of the literal texts [N, D]."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    @torch.no_grad()
    def embed_prompt(self, text: str, templates: Sequence[str] | None = None) -> torch.Tensor:
        """One unit-norm embedding [D] for `text`: the normalised mean over templates of normalised embeddings."""
        chosen = self.templates if templates is None else tuple(templates)
        filled = [t.format(text) if "{}" in t else t for t in chosen] or [text]
        return F.normalize(self.encode_texts(filled).mean(dim=0), dim=-1)


# --------------------------------------------------------------------------------------------- files


def write_clip(
    path: Path, model: torch.nn.Module, model_cfg: dict, *, extra: dict | None = None, half: bool = False
) -> Path:
    """Save an open_clip ``CLIP`` built from `model_cfg` (its constructor kwargs) as a facebatch-clip file.

    `extra` (image mean/std, templates, training facts) travels in the same metadata document. `half` stores
    floating-point tensors as fp16 (half the file; the token embedding dominates a small CLIP); loading always
    builds the model in fp32 and copies the stored values into it.
    """
    from safetensors.torch import save_file

    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "facebatch_version": __version__,
        "model_cfg": model_cfg,
        "extra": extra or {},
    }
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        tensors[k] = (v.half() if half and v.is_floating_point() else v).contiguous().clone()
    with atomic_output(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(config, sort_keys=True)})
    return Path(path)


def read_clip_config(path: Path) -> dict | None:
    """The facebatch-clip config of a file, or None when it is not one (another safetensors, not safetensors)."""
    from facebatch.nets.safetensors_meta import read_config

    config = read_config(path)
    return config if config is not None and config.get("format") == FORMAT_NAME else None


def _channel_values(value, lo: float, hi: float) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and all(type(v) in (int, float) and math.isfinite(v) and lo <= v <= hi for v in value)
    )


def _templates_problem(templates) -> str | None:
    if not isinstance(templates, list) or len(templates) > MAX_TEMPLATES:
        return f"extra.templates must be a list of at most {MAX_TEMPLATES} texts"
    for t in templates:
        if not isinstance(t, str) or not 0 < len(t) <= MAX_TEMPLATE_CHARS:
            return f"extra.templates holds {reprlib.repr(t)}, not a text of 1..{MAX_TEMPLATE_CHARS} characters"
        try:
            if "{}" in t:
                t.format("x")  # what embed_prompt does with it
        except (IndexError, KeyError, ValueError):
            return f"extra.templates holds {reprlib.repr(t)}: a template takes the prompt at one '{{}}'"
    return None


def config_problem(config: dict) -> str | None:
    """What is wrong with a facebatch-clip config, or None. The file is untrusted data, checked as generator
    configs are: its version, the `extra` values loading reads (image mean and std, prompt templates) and every
    model setting (names, types and bounds, `arch_check`); shapes are compared with the weights at build time.
    """
    from facebatch.nets.arch_check import check_kwargs

    version = config.get("format_version")
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        shown = reprlib.repr(version)
        return f"format_version {shown} is not one this facebatch {__version__} reads (1..{FORMAT_VERSION})"
    extra = config.get("extra", {})
    if not isinstance(extra, dict):
        return f"extra must be a JSON object, not a {type(extra).__name__}"
    if "mean" in extra and not _channel_values(extra["mean"], -10.0, 10.0):
        return (
            f"extra.mean must be 3 finite numbers in [-10, 10] (one per RGB channel), got {reprlib.repr(extra['mean'])}"
        )
    if "std" in extra and not _channel_values(extra["std"], 1e-6, 10.0):
        return f"extra.std must be 3 numbers in [1e-06, 10] (one per RGB channel), got {reprlib.repr(extra['std'])}"
    if "templates" in extra:
        problem = _templates_problem(extra["templates"])
        if problem:
            return problem
    try:
        check_kwargs("CLIP", config.get("model_cfg"))
    except CheckpointError as exc:
        return f"model_cfg: {exc}"
    return None


def _build_facebatch_clip(path: Path, config: dict, device) -> tuple[torch.nn.Module, dict]:
    from open_clip import CLIP
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from facebatch.nets.checkpoints import build

    problem = config_problem(config)
    if problem:
        raise CheckpointError(f"{path}: not a usable CLIP: {problem}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({first_line(exc)})") from None
    model = build(path, "CLIP", config["model_cfg"], state, CLIP)  # shapes on the meta device, finite weights
    return model.to(device), config.get("extra") or {}


# ------------------------------------------------------------------------------------------ resolve


def _pretrained_source(arch: str, tag: str) -> tuple[str, str]:
    """(url, file name) of an open_clip pretrained tag; safetensors on the HF hub preferred (no pickles)."""
    import open_clip

    _check_arch(arch, f"{arch}:{tag}")
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise InputError(f"--clip {arch}:{tag}: open_clip has no pretrained tag {tag!r} for {arch} (tags: {tags})")
    # open_clip's hf_hub is "org/repo/" (the file is open_clip's default name) or "org/repo/file.bin"
    repo, _, file = (cfg.get("hf_hub") or "").rpartition("/")
    if repo:
        name = file or "open_clip_model.safetensors"
        return f"https://huggingface.co/{repo}/resolve/main/{name}", name
    url = cfg.get("url") or ""
    return url, Path(url.split("?")[0]).name


def _check_arch(arch: str, spec: str) -> None:
    import open_clip

    if arch not in open_clip.list_models():
        raise InputError(f"--clip {spec}: open_clip has no architecture {arch!r} (e.g. ViT-B-32, ViT-B-16, RN50)")


def pretrained_cache_path(arch: str, tag: str) -> Path:
    """Where the weights of ARCH:TAG are (or will be) cached."""
    return cache.models_dir() / "clip" / f"{arch}-{tag}" / _pretrained_source(arch, tag)[1]


def resolve_clip(spec: str | Path, *, refresh: bool = False) -> ClipRef:
    """Spec -> ClipRef, downloading pretrained weights once if needed; one-line errors for the rest.

    `refresh` downloads the weights of ARCH:TAG again (`facebatch models fetch --force`). Every download goes to
    a temp file beside the cache's and replaces it only when whole and starting like weights: a refresh that
    fails (offline, cut short, an error page) leaves the cached copy as it was.
    """
    import open_clip

    text = str(spec).strip()
    path = Path(text).expanduser()
    if path.is_file():
        config = read_clip_config(path)
        if config is None:
            raise InputError(
                f"--clip {text}: not a facebatch-clip file; for open_clip weights write ARCH:{text} "
                f"(e.g. ViT-B-32:{text})"
            )
        problem = config_problem(config)
        if problem:
            raise CheckpointError(f"{path}: not a usable CLIP: {problem}")
        return ClipRef(text, None, path.resolve(), cache.sha256_of(path))
    entry = registry.get(text)
    if entry is not None:
        if entry.kind != "clip":
            clips = ", ".join(known_clips())
            raise InputError(f"--clip {text} is a {entry.kind} in the registry, not a CLIP (CLIPs: {clips})")
        file = entry.fetch()
        return ClipRef(text, None, Path(file).resolve(), cache.sha256_of(file))
    arch, sep, source = text.partition(":")
    if not sep or not arch or not source:
        raise InputError(
            f"unknown CLIP {text!r}: give a registry name ({', '.join(known_clips()) or 'none'}), "
            "ARCH:TAG (e.g. ViT-B-32:openai) or ARCH:/path/to/weights"
        )
    _check_arch(arch, text)
    local = Path(source).expanduser()
    if local.suffix in _STATE_FILES or local.exists():
        if not local.is_file():
            raise InputError(f"--clip {text}: no such weights file {local}")
        return ClipRef(text, arch, local.resolve(), cache.sha256_of(local))
    url, _ = _pretrained_source(arch, source)
    dest = pretrained_cache_path(arch, source)
    if not dest.is_file() and cache.offline():
        raise ModelNotAvailable(
            f"CLIP {text} is not in the cache and downloads are off (FACEBATCH_OFFLINE is set): download {url} "
            f"and put it at {dest} (or pass --clip {arch}:PATH to a local file)"
        )
    try:
        if refresh:
            file = cache.download(url, dest, None, force=True)
        else:
            file = cache.ensure_file(url, dest, None)
    except ModelNotAvailable as exc:
        raise ModelNotAvailable(str(exc).replace("--generator PATH", f"--clip {arch}:PATH")) from None
    expected = cache.read_sidecar(file)
    digest = cache.sha256_of(file)
    if expected and digest != expected:
        raise CheckpointError(
            f"{file} has sha256 {digest[:12]}, recorded at download {expected[:12]}: delete it to download again"
        )
    quick = bool(open_clip.get_pretrained_cfg(arch, source).get("quick_gelu"))
    return ClipRef(text, arch, file.resolve(), digest, quick_gelu=quick)


def known_clips() -> list[str]:
    return sorted(name for name, e in registry.models().items() if e.kind == "clip")


def load_clip(ref: ClipRef | str, device="cpu") -> Clip:
    """Build the model on `device` (frozen, eval); the file must still be the one the client hashed."""
    import open_clip

    if not isinstance(ref, ClipRef):
        ref = resolve_clip(ref)
    digest = cache.sha256_of(ref.path)
    if digest != ref.sha256:
        raise CheckpointError(f"{ref.path} has sha256 {digest}, the run uses {ref.sha256}")
    if ref.arch is None:
        config = read_clip_config(ref.path)
        if config is None:
            raise CheckpointError(f"{ref.path}: not a facebatch-clip file")
        model, extra = _build_facebatch_clip(ref.path, config, device)
        vision = config["model_cfg"].get("vision_cfg") or {}
        text_cfg = config["model_cfg"].get("text_cfg") or {}
        tokenizer = open_clip.SimpleTokenizer(context_length=int(text_cfg.get("context_length", 77)))
        return Clip(
            model,
            tokenizer,
            image_size=int(vision.get("image_size", 224)),
            mean=extra.get("mean", open_clip.OPENAI_DATASET_MEAN),
            std=extra.get("std", open_clip.OPENAI_DATASET_STD),
            templates=extra.get("templates") or ("{}",),
            name=ref.label,
            sha256=digest,
        )
    try:
        model = open_clip.create_model(
            ref.arch, pretrained=str(ref.path), device=device, force_quick_gelu=ref.quick_gelu, weights_only=True
        )
    except Exception as exc:  # a wrong state dict (RuntimeError), a pickle with code in it, a truncated file, ...
        raise CheckpointError(f"{ref.path}: not usable weights for {ref.arch}: {first_line(exc)}") from None
    try:  # some architectures use a Hugging Face tokenizer: transformers, and a download on first use
        tokenizer = open_clip.get_tokenizer(ref.arch)
    except Exception as exc:
        raise ModelNotAvailable(
            f"--clip {ref.spec}: cannot load the tokenizer of {ref.arch} ({first_line(exc)})"
        ) from None
    pp = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
    size = model.visual.image_size
    return Clip(
        model,
        tokenizer,
        image_size=int(size[0] if isinstance(size, (tuple, list)) else size),
        mean=pp.get("mean", open_clip.OPENAI_DATASET_MEAN),
        std=pp.get("std", open_clip.OPENAI_DATASET_STD),
        templates=imagenet_templates(),
        name=ref.label,
        sha256=digest,
    )
