"""What a mix run records: its config (hashed: other values are another run) and runtime (not hashed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from facebatch.invert.presets import ProjectionConfig
from facebatch.pipeline.records import JsonRecord
from facebatch.stages.mix.apps import APPS
from facebatch.stages.mix.params import AppParams


@dataclass(frozen=True)
class MixGenerator(JsonRecord):
    """The generator the pairs are mixed in, as the run's config records it."""

    name: str
    sha256: str
    resolution: int


@dataclass(frozen=True)
class MixConfig(JsonRecord):
    """What decides a mix run's rows and files."""

    app: str  # one of APPS
    params: AppParams  # the app's own options, checked (its App names the record)
    projection: ProjectionConfig
    seed: int  # run seed; each pair's seed derives from it and its pair_id
    pairs: str  # the PAIRS.csv read
    latents: tuple[str, ...]  # `project` runs whose codes the pairs may name
    generator: MixGenerator
    latent_shape: tuple[int, int]  # (num_ws, w_dim)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MixConfig:
        # The params' record depends on the app, which the field's type cannot say: read them first.
        return super().from_json({**data, "params": APPS[data["app"]].params.from_json(data["params"])})


@dataclass(frozen=True)
class MixRuntime(JsonRecord):
    """What a worker needs besides the config, free to change on resume."""

    generator_path: str
    generator_sha256: str
    batch_size: int  # pairs optimised together
