"""The `sample` stage: seeds -> z, W+ and (optionally) images, one row per seed.

With ``images=False`` only the mapping network runs (W+ of 20,000 seeds in well under a second on
one CPU thread); `facebatch label` renders those latents later, when it needs pixels.

Seeds follow the official recipe (z = RandomState(seed).randn(z_dim)), so images match NVlabs
gen_images.py for the same seed, truncation and noise mode. PNGs go to OUT/images/seedNNNNNN.png,
latents to OUT/latents/part-NNNNN.parquet through the shard runner, so sample resumes, records its
generator in _run.json (augment finds it there) and runs on a cluster like every other stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.records import JsonRecord, WorkerSetup
from facebatch.pipeline.rundir import IMAGES, LATENTS
from facebatch.pipeline.runner import StageSpec
from facebatch.pipeline.shard_task import ShardInfo
from facebatch.pipeline.table import latent_array, latent_field, latents_schema
from facebatch.ranges import whole_number

STAGE = "sample"
# Both are held in one piece, so both are bounded before a run starts: a batch's images and activations (at
# 1024 px ~50 MB an image), a part's rows in the worker that writes it (at 1024 px ~40 KB of z and W+ a row).
MAX_BATCH_SIZE = 1024
MAX_PART_SIZE = 100_000
NOISE_MODES = ("const", "random", "none")


def seed_image_id(seed: int) -> str:
    return f"seed{seed:06d}.png"


def sample_schema(z_dim: int, num_ws: int, w_dim: int) -> pa.Schema:
    return latents_schema(num_ws, w_dim, about=[pa.field("seed", pa.int64())], latents=[latent_field("z", (z_dim,))])


@dataclass(frozen=True)
class SampleConfig(JsonRecord):
    """What decides a sample run's rows (hashed: other values are another run)."""

    generator: str  # the generator's name
    generator_sha256: str
    truncation_psi: float
    truncation_cutoff: int | None  # truncate only the first K layers (None: all)
    noise_mode: str  # const | random | none
    images: bool  # PNGs are written (False: latents only, the mapping network alone)

    def facts(self) -> dict:
        """The generator and truncation, for _run.json and every part's schema (augment finds them there)."""
        return {k: v for k, v in self.to_json().items() if k != "images"}


@dataclass(frozen=True)
class SampleRuntime(JsonRecord):
    """What a worker needs besides the config, free to change on resume."""

    generator_path: str
    batch_size: int  # seeds rendered together


def build_sample_spec(
    *,
    seeds: Sequence[int],
    out_dir: Path,
    nets,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    noise_mode: str = "const",
    images: bool = True,
    shard_size: int = 10000,
    batch_size: int = 16,
) -> StageSpec:
    """The stage as the runner sees it; `nets` is the client's `load_networks` result (for sha and shapes)."""
    if noise_mode not in NOISE_MODES:
        raise InputError(f"--noise-mode must be const, random or none, not {noise_mode!r}")
    whole_number(batch_size, "--batch-size", lo=1, hi=MAX_BATCH_SIZE)
    whole_number(shard_size, "--part-size", lo=1, hi=MAX_PART_SIZE)
    G = nets.G
    config = SampleConfig(
        generator=nets.name,
        generator_sha256=nets.sha256,
        truncation_psi=float(truncation_psi),
        truncation_cutoff=truncation_cutoff,
        noise_mode=noise_mode,
        images=bool(images),
    )
    items = [{"image_id": seed_image_id(s), "seed": int(s)} for s in dict.fromkeys(seeds)]
    return StageSpec(
        name=STAGE,
        out_dir=storage.location(out_dir),
        table=LATENTS,
        items=items,
        shard_size=shard_size,
        config=config,
        setup=setup_sample,
        process=process_sample,
        runtime=SampleRuntime(generator_path=nets.location, batch_size=int(batch_size)),
        schema=sample_schema(G.z_dim, G.num_ws, G.w_dim),
        side_dirs=(IMAGES,) if images else (),
        metadata=config.facts(),  # in _run.json and every part's schema: readers find the generator and truncation
    )


@dataclass
class SampleState:
    G: Any
    device: Any
    config: SampleConfig
    batch_size: int


def setup_sample(setup: WorkerSetup[SampleConfig, SampleRuntime]) -> SampleState:
    from facebatch.stages.common import worker_networks

    cfg, rt = setup.config, setup.runtime
    nets, device = worker_networks(setup, rt.generator_path, cfg.generator_sha256, with_d=False)
    return SampleState(nets.G.eval(), device, cfg, rt.batch_size)


def process_sample(state: SampleState, items: list[dict], info: ShardInfo) -> pa.Table:
    from facebatch.nets.sampling import sample
    from facebatch.pipeline.images import save_image

    cfg, G = state.config, state.G
    seeds = [int(i["seed"]) for i in items]
    batch = state.batch_size
    zs, wss = [], []
    for start in range(0, len(seeds), batch):
        chunk = seeds[start : start + batch]
        z, ws, img = sample(
            G,
            chunk,
            cfg.truncation_psi,
            cfg.truncation_cutoff,
            cfg.noise_mode,
            device=state.device,
            images=cfg.images,  # --no-images: the mapping network only, no synthesis at all
        )
        if cfg.images:
            for s, im in zip(chunk, img):
                save_image(im, info.run.folder(IMAGES) / seed_image_id(s))
        zs.append(z.numpy())
        wss.append(ws.numpy())
    n = len(seeds)
    z_all = np.concatenate(zs) if zs else np.zeros((0, G.z_dim), np.float32)
    w_all = np.concatenate(wss) if wss else np.zeros((0, G.num_ws, G.w_dim), np.float32)
    return pa.Table.from_arrays(
        [
            pa.array([i["image_id"] for i in items]),
            pa.array(seeds, pa.int64()),
            pa.array(["ok"] * n),
            pa.nulls(n, pa.string()),
            latent_array(z_all, n, (G.z_dim,)),
            latent_array(w_all, n, (G.num_ws, G.w_dim)),
        ],
        schema=sample_schema(G.z_dim, G.num_ws, G.w_dim),
    )
