"""The projection options `project` and `invert` share: --preset, --steps, --set, resolved in one place."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

PresetOption = Annotated[
    Optional[str],
    typer.Option(
        "--preset",
        "-p",
        help="Projection preset (default, fast, encoder, hybrid, nvlabs, image2stylegan, image2stylegan++) or a "
        "YAML file. [default: default]",
    ),
]
StepsOption = Annotated[Optional[int], typer.Option("--steps", help="Override the preset's optimisation steps.")]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        help="Override any preset setting: key=value (repeatable); autocast=none forces the fp32 reference "
        "(the default, auto, is bf16 on CPUs that have it).",
    ),
]
GeneratorOption = Annotated[str, typer.Option("--generator", "-g", help="Checkpoint path, registry name or URL.")]
EncoderOption = Annotated[
    Optional[str],
    typer.Option(
        "--encoder",
        help="Encoder (registry name or .safetensors from `facebatch encoder train`) for presets that start from "
        "one (encoder, hybrid; default: the generator's own) and for the encoder_consistency score.",
    ),
]


def projection_config(preset: str | None, steps: int | None, set_: list[str] | None, nets=None):
    """The resolved ProjectionConfig: the preset (if none, the generator's default: `default_preset_for`), then
    --set overrides, then --steps."""
    from facebatch.invert.presets import DEFAULT_PRESET, default_preset_for, load_preset, parse_overrides

    overrides = parse_overrides(set_ or [])
    if steps is not None:
        overrides["steps"] = steps
    fallback = default_preset_for(nets) if nets is not None else DEFAULT_PRESET
    return load_preset(preset or fallback, overrides)


def projection_encoder(cfg, encoder: str | None, nets):
    """The encoder a projection uses: the one named, else the generator's own when the preset starts from an
    encoder; None when neither applies. One line for a missing one or one trained for another generator."""
    from facebatch.encoder.api import load_encoder

    if encoder is None and cfg.init != "encoder":
        return None
    return load_encoder(encoder, generator=nets)
