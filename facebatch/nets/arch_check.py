"""The constructor settings a checkpoint carries are untrusted data: check every field before building.

A checkpoint of a few hundred bytes may ask for a 2**30-pixel generator or a million mapping layers.
`check_kwargs` checks each field's type and bounds (the widest official configs fit well inside),
refuses fields it does not know, and `check_shapes` then builds the module on torch's "meta" device
(no memory) and compares every parameter and buffer with the file's tensors, so the real build
allocates no more than the file already holds.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any, Callable

import torch

from facebatch.errors import CheckpointError

MAX_RESOLUTION = 4096
MAX_DIM = 4096  # z_dim, w_dim, feature and channel widths
MAX_CHANNEL_BASE = 1 << 20
MAX_MAPPING_LAYERS = 32
MAX_FILTER_TAPS = 16

ACTIVATIONS = ("lrelu", "linear")


def _int(lo: int, hi: int, *, none: bool = False) -> Callable[[Any], str | None]:
    def check(v):
        if v is None and none:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer, got {type(v).__name__}"
        return None if lo <= v <= hi else f"must be in [{lo}, {hi}], got {v}"

    return check


def _float(lo: float, hi: float, *, none: bool = False) -> Callable[[Any], str | None]:
    def check(v):
        if v is None and none:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"must be a number, got {type(v).__name__}"
        return None if math.isfinite(v) and lo <= v <= hi else f"must be a finite number in [{lo:g}, {hi:g}], got {v}"

    return check


def _bool(v) -> str | None:
    return None if isinstance(v, bool) or v in (0, 1) else f"must be true or false, got {type(v).__name__}"


def _choice(*options) -> Callable[[Any], str | None]:
    return lambda v: (
        None if isinstance(v, str) and v in options else f"must be one of {', '.join(options)}, got {reprlib.repr(v)}"
    )


def _resolution(v) -> str | None:
    bad = _int(4, MAX_RESOLUTION)(v)
    if bad:
        return bad
    return None if v & (v - 1) == 0 else f"must be a power of two, got {v}"


def _filter(v) -> str | None:
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= MAX_FILTER_TAPS:
        return f"must be a list of 1 to {MAX_FILTER_TAPS} numbers"
    if any(_float(-1e6, 1e6)(t) for t in v) or sum(v) == 0:
        return "must hold finite numbers with a non-zero sum"
    return None


def _channels(v) -> str | None:
    if v is None:
        return None
    if not isinstance(v, dict) or not 1 <= len(v) <= 12:
        return "must be a table of resolution -> channel count"
    for res, ch in v.items():
        try:
            res = int(res)
        except (TypeError, ValueError):
            return f"has a resolution {res!r} that is not a number"
        if _resolution(res) or _int(1, MAX_DIM)(ch):
            return f"has an entry {res!r}: {ch!r} out of bounds (power-of-two resolution, 1..{MAX_DIM} channels)"
    return None


_COMMON_PERF = {
    "num_fp16_res": _int(0, 16),
    "use_fp16": _bool,
    "fp16_channels_last": _bool,
    "channels_last": _bool,
    "fused_modconv_default": lambda v: None if v in (True, False, "inference_only") else "must be a bool",
    "conv_clamp_fp16": _float(0, 1e9, none=True),
}

MAPPING = {
    "num_layers": _int(1, MAX_MAPPING_LAYERS),
    "embed_features": _int(0, MAX_DIM, none=True),
    "layer_features": _int(1, MAX_DIM, none=True),
    "activation": _choice(*ACTIVATIONS),
    "lr_multiplier": _float(1e-6, 1e3),
    "w_avg_beta": _float(0.0, 1.0, none=True),
}

SYNTHESIS = {
    "channel_base": _int(1, MAX_CHANNEL_BASE),
    "channel_max": _int(1, MAX_DIM),
    "channels": _channels,
    "conv_clamp": _float(0, 1e9, none=True),
    "architecture": _choice("skip"),
    "resample_filter": _filter,
    "use_noise": _bool,
    "activation": _choice(*ACTIVATIONS),
    "kernel_size": _int(1, 7),
    **_COMMON_PERF,
}

GENERATOR = {
    "z_dim": _int(1, MAX_DIM),
    "c_dim": _int(0, 0),
    "w_dim": _int(1, MAX_DIM),
    "img_resolution": _resolution,
    "img_channels": _int(1, 4),
    "mapping_kwargs": MAPPING,
    "synthesis_kwargs": SYNTHESIS,
}

D_BLOCK = {
    "activation": _choice(*ACTIVATIONS),
    "resample_filter": _filter,
    "freeze_layers": _int(0, 64),
    **_COMMON_PERF,
}

D_EPILOGUE = {
    "mbstd_group_size": _int(1, 64, none=True),
    "mbstd_num_channels": _int(0, 16),
    "activation": _choice(*ACTIVATIONS),
}

DISCRIMINATOR = {
    "c_dim": _int(0, 0),
    "img_resolution": _resolution,
    "img_channels": _int(1, 4),
    "architecture": _choice("orig", "skip", "resnet"),
    "channel_base": _int(1, MAX_CHANNEL_BASE),
    "channel_max": _int(1, MAX_DIM),
    "num_fp16_res": _int(0, 16),
    "conv_clamp": _float(0, 1e9, none=True),
    "cmap_dim": _int(0, MAX_DIM, none=True),
    "block_kwargs": D_BLOCK,
    "mapping_kwargs": {},
    "epilogue_kwargs": D_EPILOGUE,
    "channels": _channels,
}


def _widths(v) -> str | None:
    if not isinstance(v, list) or not 1 <= len(v) <= 12 or not all(_int(1, MAX_DIM)(x) is None for x in v):
        return "must be a list of 1-12 channel counts"
    return None


ENCODER = {
    "resolution": _resolution,
    "num_ws": _int(1, 64),
    "w_dim": _int(1, MAX_DIM),
    "widths": _widths,
    "blocks_per_stage": _int(1, 8),
    "iterative": _bool,
    "head_width": _int(1, MAX_DIM),
}


def _clip_layers(v) -> str | None:
    """A transformer's depth, or the four stage depths of open_clip's ModifiedResNet."""
    if isinstance(v, (list, tuple)):
        ok = len(v) == 4 and all(_int(1, 64)(x) is None for x in v)
        return None if ok else "must be a depth or a list of 4 stage depths, each 1..64"
    return _int(1, 64)(v)


# The settings of open_clip's CLIP(**model_cfg) a facebatch-clip file may carry: a CLIP built from its own weights
# with facebatch's tokenizer (open_clip's SimpleTokenizer: 49,408 tokens, so no smaller vocabulary). Towers
# taken from timm or Hugging Face (downloads) and token outputs (another return type) are not among them.
CLIP_TOKENIZER_VOCAB = 49408
CLIP_VISION = {
    "layers": _clip_layers,
    "width": _int(1, MAX_DIM),
    "head_width": _int(1, MAX_DIM),
    "mlp_ratio": _float(0.25, 16),
    "patch_size": _int(1, 512),
    "image_size": _int(8, MAX_RESOLUTION),
    "ls_init_value": _float(0, 10, none=True),
    "patch_dropout": _float(0, 0.99),
    "attentional_pool": _bool,
    "attn_pooler_queries": _int(1, 1024),
    "attn_pooler_heads": _int(1, 64),
    "no_ln_pre": _bool,
    "pos_embed_type": _choice("learnable", "sin_cos_2d"),
    "final_ln_after_pool": _bool,
    "pool_type": _choice("tok", "avg", "none"),
}
CLIP_TEXT = {
    "context_length": _int(1, 1024),
    "vocab_size": _int(CLIP_TOKENIZER_VOCAB, 1 << 20),
    "width": _int(1, MAX_DIM),
    "heads": _int(1, 64),
    "layers": _int(1, 64),
    "mlp_ratio": _float(0.25, 16),
    "ls_init_value": _float(0, 10, none=True),
    "embed_cls": _bool,
    "pad_id": _int(0, CLIP_TOKENIZER_VOCAB - 1),
    "eos_id": _int(0, CLIP_TOKENIZER_VOCAB - 1),
    "no_causal_mask": _bool,
    "final_ln_after_pool": _bool,
    "pool_type": _choice("first", "last", "argmax", "eos", "none"),
    "proj_type": _choice("linear", "none"),
    "proj_bias": _bool,
}
CLIP = {
    "embed_dim": _int(1, MAX_DIM),
    "vision_cfg": CLIP_VISION,
    "text_cfg": CLIP_TEXT,
    "quick_gelu": _bool,
    "init_logit_scale": _float(-100, 100),
    "init_logit_bias": _float(-100, 100, none=True),
}

SCHEMAS = {"generator": GENERATOR, "discriminator": DISCRIMINATOR, "encoder": ENCODER, "CLIP": CLIP}
REQUIRED = {
    "generator": ("z_dim", "w_dim", "img_resolution", "img_channels"),
    "discriminator": ("img_resolution",),
    "encoder": ("resolution", "num_ws", "w_dim"),
    "CLIP": ("embed_dim", "vision_cfg", "text_cfg"),
}


def _walk(kwargs: Any, schema: dict, where: str) -> None:
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{where or 'the stored config'} is a {type(kwargs).__name__}, not a table of settings")
    for key, value in kwargs.items():
        name = f"{where}.{key}" if where else str(key)
        rule = schema.get(key) if isinstance(key, str) else None
        if rule is None and key not in schema:
            raise CheckpointError(f"unknown architecture setting {name!r}")
        if isinstance(rule, dict):
            if value is not None:
                _walk(value, rule, name)
            continue
        problem = rule(value)
        if problem:
            raise CheckpointError(f"architecture setting {name} {problem}")


def check_kwargs(kind: str, kwargs: Any) -> None:
    """Every field of a generator / discriminator / encoder / CLIP config has a known name, a sane type and bounds."""
    schema = SCHEMAS[kind]
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"the stored {kind} config is a {type(kwargs).__name__}, not a table of settings")
    # The stylegan3 repo passes synthesis settings flat beside the generator's own; check them as synthesis ones.
    flat = {k: v for k, v in kwargs.items() if kind == "generator" and k not in schema and k in SYNTHESIS}
    rest = {k: v for k, v in kwargs.items() if k not in flat}
    _walk(rest, schema, "")
    if flat:
        _walk(flat, SYNTHESIS, "synthesis_kwargs")
    missing = [k for k in REQUIRED[kind] if k not in kwargs]
    if missing:
        raise CheckpointError(f"the stored {kind} config lacks {', '.join(missing)}")


def check_shapes(kind: str, cls: type, kwargs: dict, state: Any) -> None:
    """Build on the meta device (no memory) and require the file's tensors to match name for name and shape."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"the {kind} weights are not a table of tensors")
    with torch.device("meta"):
        net = cls(**kwargs)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {str(k): tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing or unexpected:
        detail = "; ".join(
            p
            for p in (
                f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}" if missing else "",
                f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}" if unexpected else "",
            )
            if p
        )
        raise CheckpointError(f"its {kind} weights do not fit a facebatch {kind} of its stored config ({detail})")
    for name, shape in expected.items():
        if got[name] != shape:
            raise CheckpointError(
                f"its {kind} weights do not fit its stored config ({name} is {list(got[name])}, the config needs "
                f"{list(shape)})"
            )


def check_finite(kind: str, state: Any, path: Any = None) -> None:
    """Weights holding NaN or inf load and run, and render NaN or black images marked ok: refuse them at load."""
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            where = f"{path}: its" if path is not None else "its"
            raise CheckpointError(f"{where} {kind} weights hold NaN or infinite values ({name})")
