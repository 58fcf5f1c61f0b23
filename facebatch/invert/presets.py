"""Projection settings: one dataclass, named YAML presets in ``configs/presets``, overrides by key.

A preset file may name ``base: <preset>`` and list only what it changes, so a user's copy stays short.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from facebatch.errors import InputError
from facebatch.nets.perceptual import BACKENDS, DEFAULT_BACKEND
from facebatch.pipeline.textfiles import load_yaml, read_small_text
from facebatch.ranges import MAX_MAGNITUDE, check_seeds, finite_number, format_bound

LATENT_SPACES = ("w", "w+")
INITS = ("w_avg", "encoder")
NOISE_OPTIMIZATIONS = ("none", "joint", "sequential")
NOISE_MODES = ("const", "none")  # 'random' would draw from the global RNG: not reproducible per image
# none: fp32 throughout; bf16 / fp16: synthesis + perceptual trunk under autocast (fp16: GPUs, no loss
# scaling); auto: bf16 on a CPU with oneDNN bf16 support, none elsewhere (GPUs: until bench/gpu.py says)
AUTOCASTS = ("auto", "none", "bf16", "fp16")
# The z of w_avg are drawn in one piece: 100,000 x 512 floats is 200 MB (NVlabs draws 10,000).
MAX_W_AVG_SAMPLES = 100_000
FINITE = f"a finite number from {format_bound(-MAX_MAGNITUDE)} to {format_bound(MAX_MAGNITUDE)}"


@dataclass
class ProjectionConfig:
    """Every knob of one projection run; the defaults are the NVlabs projector's values."""

    name: str = "custom"
    # Where the latent phase starts: w_avg (NVlabs), or encoder: the code an image -> W+ encoder trained for the
    # generator gives (averaged over rows for latent_space w), as IDInvert / the hybrids start
    init: str = "w_avg"
    latent_space: str = "w"  # w: one code tiled over all layers; w+: one code per layer
    steps: int = 1000  # steps of the latent phase (noise maps ride along when noise_optimization=joint)
    lr: float = 0.1
    lr_rampup: float = 0.05  # fraction of the phase; 0 = no ramp
    lr_rampdown: float = 0.25
    beta1: float = 0.9
    beta2: float = 0.999
    w_noise_factor: float = 0.05  # gaussian added to w: w_std * factor, ramped to 0 at w_noise_ramp
    w_noise_ramp: float = 0.75
    perceptual: str = DEFAULT_BACKEND
    perceptual_weight: float = 1.0
    mse_weight: float = 0.0  # on [-1, 1] pixels, mean over pixels
    # Pixel loss ignores overshoot beyond a target pixel at the 8-bit clip limit (0 / 255): the
    # generator's unclipped output there renders to the same saved pixel.
    clip_aware_mse: bool = True
    noise_optimization: str = "joint"  # none | joint (with w, NVlabs) | sequential (after w, Image2StyleGAN++)
    noise_mode: str = "const"  # synthesis noise when the maps are not optimised
    noise_regularize: float = 1e5  # weight of the multi-scale autocorrelation penalty
    noise_renormalize: bool = True  # zero mean, unit variance after every step
    noise_steps: int = 0  # sequential phase only
    noise_lr: float = 0.01  # sequential phase only
    noise_mse_weight: float = 1.0  # sequential phase only
    noise_perceptual_weight: float = 0.0  # sequential phase only
    w_avg_samples: int = 10000
    w_avg_seed: int = 123
    anomaly_lambda: float = 0.1  # AnoGAN: (1 - lambda) * pixel residual + lambda * D-feature residual
    # Mixed precision of the optimisation steps: "bf16" (or "fp16", for GPUs) runs the generator's synthesis
    # and the perceptual trunk under torch.autocast (losses, latents, Adam and the final render and scores
    # stay fp32); "none" is the fp32 reference (`--set autocast=none` forces it); "auto", the default, is
    # bf16 on CPUs with oneDNN bf16 and none elsewhere (GPUs: until bench/gpu.py has run on one).
    # Measured (bench/projector_vs_official.py, 256 px, batch 1, 1 thread): bf16 1.5x fp32's steps/s, 1.7x
    # with channels_last; at 64 px (bench/cpu_batching.py) 1.56x. Quality: reconstructions of G samples
    # within 0.25 dB PSNR of fp32's; on 4 real `val` faces (bench/time_to_quality.py) see README "Speed".
    # Batch-mates still change nothing bit for bit; a batch and a lone image differ by bf16 rounding
    # (tests/test_mixing_projections.py bounds both).
    autocast: str = "auto"
    # Channels-last (NHWC) weights for the generator and the perceptual trunk (activations follow): oneDNN's
    # bf16 convolutions run faster on it (+13 % steps/s over bf16 alone at 256 px); fp32 neither gains
    # nor loses beyond noise.
    channels_last: bool = True

    def to_json(self) -> dict[str, Any]:
        """Every setting by name: what a run's config records (and hashes) of its projection."""
        return dataclasses.asdict(self)

    to_dict = to_json

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProjectionConfig:
        return cls(**data)

    @property
    def total_steps(self) -> int:
        return self.steps + (self.noise_steps if self.noise_optimization == "sequential" else 0)

    def validate(self) -> "ProjectionConfig":
        def choice(key: str, allowed: tuple[str, ...]) -> None:
            if getattr(self, key) not in allowed:
                raise InputError(f"{key} must be one of {', '.join(allowed)}, not {getattr(self, key)!r}")

        choice("init", INITS)
        choice("latent_space", LATENT_SPACES)
        choice("noise_optimization", NOISE_OPTIMIZATIONS)
        choice("noise_mode", NOISE_MODES)
        choice("autocast", AUTOCASTS)
        choice("perceptual", BACKENDS)
        for key in ("steps", "noise_steps", "w_avg_samples"):
            if getattr(self, key) < 0:
                raise InputError(f"{key} must be >= 0, not {getattr(self, key)}")
        if not 2 <= self.w_avg_samples <= MAX_W_AVG_SAMPLES:  # at least 2: w_std needs a spread
            raise InputError(f"w_avg_samples must be from 2 to {MAX_W_AVG_SAMPLES:,}, not {self.w_avg_samples}")
        check_seeds([self.w_avg_seed], "w_avg_seed")
        for key in ("lr", "noise_lr", "lr_rampup", "lr_rampdown", "w_noise_factor", "w_noise_ramp"):
            if getattr(self, key) < 0:
                raise InputError(f"{key} must be >= 0, not {getattr(self, key)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise InputError(f"{f.name} must be {FINITE}, not {value!r}")
                finite_number(value, f.name)
        for key in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise InputError(f"{key} must be in [0, 1), not {getattr(self, key)}")
        for key in (
            "perceptual_weight",
            "mse_weight",
            "noise_regularize",
            "noise_mse_weight",
            "noise_perceptual_weight",
        ):
            if getattr(self, key) < 0:
                raise InputError(f"{key} must be >= 0, not {getattr(self, key)}")
        if not 0.0 <= self.anomaly_lambda <= 1.0:
            raise InputError(f"anomaly_lambda must be in [0, 1], not {self.anomaly_lambda}")
        if self.perceptual == "none" and self.perceptual_weight > 0 and self.mse_weight == 0:
            raise InputError("perceptual=none leaves no loss: set mse_weight > 0")
        return self


_FIELDS = {f.name: f for f in dataclasses.fields(ProjectionConfig)}


def _presets_dir():
    return importlib.resources.files("facebatch.configs") / "presets"


def _preset_names() -> tuple[str, ...]:
    return tuple(sorted(p.name[: -len(".yaml")] for p in _presets_dir().iterdir() if p.name.endswith(".yaml")))


PRESETS: tuple[str, ...] = _preset_names()
DEFAULT_PRESET = "default"


def default_preset_for(nets) -> str:
    """The preset a run gets when none is named: the registry's choice for this generator (by its file's
    sha256; e.g. `hybrid` where a built-in encoder makes it reach `default`'s quality in a fraction of the
    time), else DEFAULT_PRESET."""
    from facebatch.nets import registry

    entry = registry.generator_of(getattr(nets, "sha256", None))
    return entry.default_preset if entry is not None and entry.default_preset else DEFAULT_PRESET


def _coerce(key: str, value: Any) -> Any:
    """Type a value (YAML scalar or a `key=value` string from the command line) as the field wants."""
    if key not in _FIELDS:
        raise InputError(f"unknown projection setting {key!r}; known: {', '.join(sorted(_FIELDS))}")
    kind = _FIELDS[key].type
    try:
        if kind == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return low in ("true", "1", "yes")
            return bool(value)
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, float) and not number.is_integer():  # also nan and inf
                raise ValueError(value)
            return int(number)
        if kind == "float":
            try:
                return finite_number(value, key)
            except InputError:
                raise ValueError(value) from None
        return str(value)
    except (TypeError, ValueError, OverflowError):
        wants = {"int": "an integer", "float": FINITE, "bool": "true or false"}.get(kind, "a string")
        raise InputError(f"setting {key} wants {wants}, got {value!r}") from None


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    data = load_yaml(text, where)  # a setting given twice is refused, not silently the last one
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a YAML mapping of settings")
    return data


def _preset_settings(name_or_path: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    if name_or_path in seen:
        raise InputError(f"preset base loop: {' -> '.join(seen + (name_or_path,))}")
    if name_or_path in PRESETS:
        text = (_presets_dir() / f"{name_or_path}.yaml").read_text()
        where, default_name = f"preset {name_or_path}", name_or_path
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise InputError(f"unknown preset {name_or_path!r}: choose one of {', '.join(PRESETS)} or give a YAML file")
        text, where, default_name = read_small_text(path, "preset file"), str(path), path.stem
    data = _read_yaml(text, where)
    base = data.pop("base", None)
    settings = _preset_settings(str(base), seen + (name_or_path,)) if base is not None else {}
    settings["name"] = default_name
    settings.update(data)
    return settings


def load_preset(name_or_path: str = DEFAULT_PRESET, overrides: Mapping[str, Any] | None = None) -> ProjectionConfig:
    """A validated config from a preset name or YAML file, with ``overrides`` (key -> value) applied last."""
    settings = _preset_settings(str(name_or_path))
    settings.update(overrides or {})
    return ProjectionConfig(**{k: _coerce(k, v) for k, v in settings.items()}).validate()


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``["steps=200", "perceptual=none"]`` -> dict; a malformed pair is a user error."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set wants key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def projection_config(
    preset: str | None, steps: int | None, overrides: Sequence[str] | Mapping[str, Any] | None, nets=None
):
    """The resolved ProjectionConfig: the preset (if none, the generator's default: `default_preset_for`), then
    the overrides (key=value texts as --set gives them, or a mapping), then steps (--steps)."""
    values = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(list(overrides or []))
    if steps is not None:
        values["steps"] = steps
    fallback = default_preset_for(nets) if nets is not None else DEFAULT_PRESET
    return load_preset(preset or fallback, values)
