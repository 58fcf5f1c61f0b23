"""The projection options `project`, `invert` and `mix` share: --preset, --steps, --set, --generator, --encoder.

They resolve in the library: `facebatch.invert.presets.projection_config`, `facebatch.encoder.api.projection_encoder`.
"""

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
