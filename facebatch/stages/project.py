"""The `project` stage: images -> W+ latents + reconstruction scores, one row per image.

`setup_project` runs once per worker process (loads G/D from the path, checks the sha256 the client saw,
builds the projector); `process_project` decodes one shard in batches (the next batch is decoded while
the current one is optimised) and returns its rows. Results do not depend on shard or batch
composition: every image draws from its own seed, derived from (run seed, image_id).
`project_files` runs the same function on a few files in this process (`facebatch invert`).

Over 400 lines on purpose: planning, the worker's batch pipeline and the row builder share the row layout
and the per-image seed, and splitting them would spread one table's definition over three files.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa

from facebatch.invert.presets import ProjectionConfig
from facebatch.invert.scores import ROW_SCORE_KEYS
from facebatch.pipeline import storage
from facebatch.pipeline.images import UnreadableImage, image_to_tensor, load_image, prefetch, save_image
from facebatch.pipeline.noise_store import NoiseWriter
from facebatch.pipeline.progress import report_steps
from facebatch.pipeline.records import JsonRecord, WorkerSetup, record_field
from facebatch.pipeline.rundir import LATENTS, NOISE, RECONSTRUCTIONS
from facebatch.pipeline.runner import StageSpec
from facebatch.pipeline.shard_task import ShardInfo
from facebatch.pipeline.table import latent_array_masked, latent_field, latents_schema
from facebatch.stages.common import per_image_seed

log = logging.getLogger("facebatch.project")

STAGE, TABLE = "project", LATENTS


def project_schema(num_ws: int, w_dim: int, aligned: bool = False) -> pa.Schema:
    about = [
        pa.field("source_path", pa.string()),
        pa.field("file_sha256", pa.string()),
        pa.field("orig_width", pa.int32()),
        pa.field("orig_height", pa.int32()),
    ]
    after = [
        *[pa.field(k, pa.float64()) for k in ROW_SCORE_KEYS],
        pa.field("loss", pa.float64()),  # the optimiser's last per-image loss
        pa.field("perceptual_backend", pa.string()),
        pa.field("steps", pa.int32()),
        pa.field("seconds", pa.float64()),
        pa.field("seed", pa.int64()),
    ]
    if aligned:
        after.append(latent_field("quad", (4, 2)))  # FFHQ crop quad in original-image pixels
    return latents_schema(num_ws, w_dim, about=about, after=after)


@dataclass(frozen=True)
class GeneratorFacts(JsonRecord):
    """The generator a run projects into, as its config records it."""

    name: str
    sha256: str
    format: str  # the checkpoint format it was read from
    resolution: int
    num_ws: int
    w_dim: int
    has_discriminator: bool  # D's feature residual is scored only with one

    @classmethod
    def of(cls, nets) -> GeneratorFacts:
        G = nets.G
        return cls(nets.name, nets.sha256, nets.format, G.img_resolution, G.num_ws, G.w_dim, nets.D is not None)


@dataclass(frozen=True)
class EncoderFacts(JsonRecord):
    """The encoder a projection starts from (or is scored with): its sha256 decides results."""

    sha256: str
    images_seen: int  # how long it was trained


@dataclass(frozen=True)
class ProjectConfig(JsonRecord):
    """What decides a project run's rows (hashed: other values are another run)."""

    generator: GeneratorFacts
    projection: ProjectionConfig
    seed: int  # run seed; each image's seed derives from it and its image_id
    align: str | None  # landmark backend that FFHQ-aligns each image (None: centre crop)
    save_reconstructions: bool
    save_noise: bool
    # Recorded only with an encoder: runs without one keep the config (and so the resume) they had before.
    encoder: EncoderFacts | None = record_field(None, omit_none=True)


@dataclass(frozen=True)
class ProjectRuntime(JsonRecord):
    """Where the files are and how many images share a batch: no effect on results, free to change on resume."""

    generator_path: str
    generator_sha256: str
    batch_size: int | None  # None: auto_batch_size on each worker
    encoder_path: str | None


def build_project_spec(
    *,
    items: list[dict],
    out_dir: Path,
    nets,
    projection: ProjectionConfig,
    seed: int,
    shard_size: int,
    batch_size: int | None,
    align: str | None = None,
    save_reconstructions: bool = False,
    save_noise: bool = False,
    encoder=None,
) -> StageSpec:
    """The stage as the runner sees it; `nets` is the client's `load_networks` result (for sha and shapes);
    `encoder` the client's `load_encoder` result when the preset starts from one (or its score is wanted)."""
    G = nets.G
    config = ProjectConfig(
        generator=GeneratorFacts.of(nets),
        projection=projection,
        seed=int(seed),
        align=align,
        save_reconstructions=bool(save_reconstructions),
        save_noise=bool(save_noise),
        # its sha256 decides results: another encoder in the same OUT is another run
        encoder=EncoderFacts(encoder.sha256, encoder.images_seen) if encoder is not None else None,
    )
    side = [d for d, on in ((RECONSTRUCTIONS, save_reconstructions), (NOISE, save_noise)) if on]
    return StageSpec(
        name=STAGE,
        out_dir=storage.location(out_dir),
        table=TABLE,
        items=items,
        shard_size=shard_size,
        config=config,
        setup=setup_project,
        process=process_project,
        runtime=ProjectRuntime(
            generator_path=nets.location,
            generator_sha256=nets.sha256,
            batch_size=int(batch_size) if batch_size else None,
            encoder_path=encoder.location if encoder is not None else None,
        ),
        schema=project_schema(G.num_ws, G.w_dim, aligned=align is not None),
        score_columns=(*ROW_SCORE_KEYS, "seconds"),
        side_dirs=side,
        metadata={"generator_sha256": nets.sha256, "generator": nets.name},
        steps_per_item=projection.total_steps,
    )


@dataclass
class ProjectState:
    projector: Any
    config: ProjectConfig
    resolution: int
    shape: tuple[int, int]
    batch_size: int
    align: Callable | None
    align_errors: tuple[type[BaseException], ...]
    device: str
    # In-process callers only (invert): per-image hooks for the pictures and the progress bar.
    on_image: Callable[[str, Any, Any], None] | None = None  # (image_id, target, reconstruction)
    on_steps: Callable[[int], None] | None = None  # image-steps done since the last call


def auto_batch_size(device, resolution: int) -> int:
    """Images per optimisation batch when the user gave none, for this worker's device and resolution.

    On a CPU, batching pays while the layers are narrow (bench/cpu_batching.py, 1 thread, default preset,
    bench/out/cpu_batching-*.txt): at 64 px (celeba64) batch 4 / 8 give 1.34 / 1.45x batch 1's
    image-steps/s in fp32 and 1.39 / 1.50x in bf16; at 256 px (config-f widths) they are level with
    batch 1 (1.04-1.11x) while batch 8 holds 8.6 GB; larger images only add memory. On a GPU (bench/gpu.py on
    an H200, nvlabs preset, TF32, bench/out/gpu-h200-2026-12-04.md) a 64-px step takes the same ~25-30 ms
    from batch 1 to 64 (kernel launches, not arithmetic, bound it), so batch 64 gives 60x batch 1's
    image-steps/s; at 256 px batch 16 gives 9x (232 image-steps/s, 11 GB) and 64 only 1.2x more for 44 GB.
    Larger resolutions were not measured: 8.
    """
    if str(device).startswith("cuda"):
        return 64 if resolution <= 128 else 16 if resolution <= 256 else 8
    if resolution <= 128:
        return 8
    return 4 if resolution <= 256 else 1


def project_state(nets, config: ProjectConfig, device, batch_size: int | None = None, encoder=None) -> ProjectState:
    """The worker state for networks already in memory (`encoder`: an `Encoder` module, or None)."""
    from facebatch.invert.projector import Projector

    projector = Projector(nets.G, nets.D, config=config.projection, device=str(device), encoder=encoder)
    align, align_errors = _aligner(config.align)
    G = nets.G
    return ProjectState(
        projector,
        config,
        G.img_resolution,
        (G.num_ws, G.w_dim),
        int(batch_size or auto_batch_size(device, G.img_resolution)),
        align,
        align_errors,
        str(device),
    )


def setup_project(setup: WorkerSetup[ProjectConfig, ProjectRuntime]) -> ProjectState:
    """Once per worker process: the model comes from the path, never through the task graph."""
    import torch

    from facebatch.stages.common import worker_networks

    cfg, rt = setup.config, setup.runtime
    nets, device = worker_networks(setup, rt.generator_path, cfg.generator.sha256)
    encoder = None
    if rt.encoder_path:
        from facebatch.errors import CheckpointError
        from facebatch.nets.encoder import read_encoder

        found = read_encoder(rt.encoder_path, device=str(device))
        if cfg.encoder is None or found.sha256 != cfg.encoder.sha256:
            raise CheckpointError(f"{rt.encoder_path} on this worker is not the encoder the run uses")
        encoder = found.encoder
    state = project_state(nets, cfg, device, rt.batch_size, encoder)
    log.info(
        "project worker ready: %s on %s (%d torch threads, autocast %s)",
        nets.name,
        device,
        torch.get_num_threads(),
        state.projector.autocast,
    )
    return state


def project_files(
    items: list[dict],
    nets,
    projection: ProjectionConfig,
    *,
    seed: int = 0,
    batch_size: int | None = None,
    device: Any = "cpu",
    on_image=None,
    on_steps=None,
    encoder=None,
) -> pa.Table:
    """The project stage's rows for a few files, computed here with networks already loaded.

    `items` are ``{"image_id", "path"}`` dicts; the rows are exactly those `facebatch project` writes;
    `encoder` is a loaded `EncoderFile` (the start of `init: encoder` presets and its score).
    """
    config = ProjectConfig(GeneratorFacts.of(nets), projection, int(seed), None, False, False)
    state = project_state(nets, config, device, batch_size, encoder.encoder if encoder is not None else None)
    state.on_image, state.on_steps = on_image, on_steps
    info = ShardInfo(0, "part-00000", 1, Path("."), TABLE, "")
    return process_project(state, items, info)


def _aligner(backend: str | None) -> tuple[Callable | None, tuple[type[BaseException], ...]]:
    if backend is None:
        return None, ()
    from facebatch.alignment import api  # imported only when --align is used: it pulls in dlib

    def align(img, size):
        return api.align_for_projection(img, size, backend)

    return align, (api.NoFaceFound,)


class _Rows:
    """Column lists for one shard's rows, in item order."""

    def __init__(self, items: list[dict], shape: tuple[int, int], aligned: bool, seed: int):
        self.index = {item["image_id"]: n for n, item in enumerate(items)}
        n = len(items)
        self.cols: dict[str, list] = {
            k: [None] * n
            for k in (
                "file_sha256",
                "orig_width",
                "orig_height",
                "error",
                *ROW_SCORE_KEYS,
                "loss",
                "perceptual_backend",
                "steps",
                "seconds",
                "seed",
            )
        }
        self.status = ["error"] * n
        self.w = np.zeros((n, *shape), np.float32)
        self.quad = np.zeros((n, 4, 2), np.float32) if aligned else None
        self.items = items
        for item in items:  # known for every row, so the column never holds nulls (pandas would make it float)
            self.cols["seed"][self.index[item["image_id"]]] = per_image_seed(seed, item["image_id"])

    def set(self, image_id: str, **values) -> None:
        n = self.index[image_id]
        for key, value in values.items():
            self.cols[key][n] = value

    def table(self, schema: pa.Schema) -> pa.Table:
        ok = np.array([s == "ok" for s in self.status])
        arrays = {
            "image_id": pa.array([i["image_id"] for i in self.items], pa.string()),
            "source_path": pa.array([_source(i) for i in self.items], pa.string()),
            "status": pa.array(self.status, pa.string()),
            "w": latent_array_masked(self.w, ok, self.w.shape[1:]),
        }
        if self.quad is not None:
            has_quad = np.array([s == "ok" for s in self.status])
            arrays["quad"] = latent_array_masked(self.quad, has_quad, (4, 2))
        for name, values in self.cols.items():
            arrays[name] = pa.array(values, schema.field(name).type)
        return pa.table([arrays[f.name] for f in schema], schema=schema)


def process_project(state: ProjectState, items: list[dict], info: ShardInfo) -> pa.Table:
    cfg = state.config
    rows = _Rows(items, state.shape, aligned=state.align is not None, seed=cfg.seed)
    noise = None
    if cfg.save_noise:
        target = info.run.noise_part(info.name)
        noise = NoiseWriter(target, keep_from=target if info.retry else None, drop_ids=[i["image_id"] for i in items])
    try:
        for loaded in _prefetched_batches(state, items, rows):
            if loaded:
                _project_batch(state, loaded, rows, info, noise)
        if noise is not None:
            noise.publish()
            noise = None
    finally:
        if noise is not None:
            noise.discard()
        if state.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()  # give the cached blocks back between shards: a long-lived worker would hold them
    return rows.table(project_schema(*state.shape, aligned=state.align is not None))


def _prefetched_batches(state: ProjectState, items: list[dict], rows: _Rows) -> Iterator[list]:
    """Decoded batches, one decoded ahead of the one being optimised (threads: workers are daemons)."""
    chunks = [items[i : i + state.batch_size] for i in range(0, len(items), state.batch_size)]
    if not chunks:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="facebatch-decode") as pool:
        pending = pool.submit(_load_batch, state, chunks[0], rows)
        for nxt in chunks[1:] + [None]:
            loaded = pending.result()
            if nxt is not None:
                pending = pool.submit(_load_batch, state, nxt, rows)
            yield loaded


def _load_batch(state: ProjectState, chunk: list[dict], rows: _Rows) -> list[tuple[dict, Any, float]]:
    loaded = []
    fetched = prefetch([item.get("path") for item in chunk if "image" not in item])
    for item in chunk:
        start = time.perf_counter()
        image_id = item["image_id"]
        try:
            if "image" in item:  # in memory (the library's project of PIL images or tensors)
                tensor, meta = image_to_tensor(item["image"], state.resolution)
            else:
                data = fetched.get(str(item["path"]))
                tensor, meta = load_image(item["path"], state.resolution, align=state.align, data=data)
        except (UnreadableImage, *state.align_errors) as exc:
            meta = getattr(exc, "image_info", {})
            rows.set(image_id, error=str(exc) or type(exc).__name__, **_file_facts(meta))
            continue
        rows.set(image_id, **_file_facts(meta))
        if rows.quad is not None:
            rows.quad[rows.index[image_id]] = meta["quad"]
        loaded.append((item, tensor, time.perf_counter() - start))
    return loaded


def _source(item: dict) -> str | None:
    """The file an item came from; None for an image given in memory."""
    return None if item.get("path") is None else str(item["path"])


def _file_facts(meta: dict) -> dict:
    return {k: meta.get(k) for k in ("file_sha256", "orig_width", "orig_height")}


def _project_batch(state: ProjectState, loaded: list, rows: _Rows, info: ShardInfo, noise: NoiseWriter | None) -> None:
    import torch

    seed = state.config.seed
    targets = torch.stack([t for _, t, _ in loaded])
    seeds = [per_image_seed(seed, item["image_id"]) for item, _, _ in loaded]
    start = time.perf_counter()
    results = _project_halving(state.projector, targets, seeds, 0, _step_callback(state, len(seeds)))
    share = (time.perf_counter() - start) / len(loaded)
    for offset, res in results:
        for j in range(res.ws.shape[0]):
            item, _, load_s = loaded[offset + j]
            image_id = item["image_id"]
            n = rows.index[image_id]
            rows.status[n] = "ok"
            rows.w[n] = res.ws[j].numpy()
            rows.set(
                image_id,
                error=None,
                **{k: float(res.scores[k][j]) for k in ROW_SCORE_KEYS if k in res.scores},
                loss=float(res.losses[-1, j]) if len(res.losses) else None,
                perceptual_backend=res.perceptual_backend,
                steps=int(res.steps),
                seconds=share + load_s,
            )
            if state.on_image is not None:
                state.on_image(image_id, loaded[offset + j][1], res.reconstructions[j])
            if state.config.save_reconstructions:
                save_image(res.reconstructions[j], info.run.reconstruction(image_id))
            if noise is not None and res.noise is not None:
                noise.add(image_id, [layer[j].numpy() for layer in res.noise])


def _step_callback(state: ProjectState, n_images: int):
    """Image-steps to the caller's hook (invert) or to the run's progress channel (the runner's bar)."""
    report = state.on_steps or report_steps
    done = [0]

    def callback(step, total, losses):
        report((step - done[0]) * n_images)
        done[0] = step

    return callback


def _project_halving(projector, targets, seeds, offset: int, callback=None) -> list[tuple[int, Any]]:
    """Out of GPU memory: split the batch and go on rather than lose the shard (results do not depend on B)."""
    import torch

    try:
        return [(offset, projector.project(targets, seeds=seeds, callback=callback))]
    except torch.cuda.OutOfMemoryError:
        if len(seeds) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(seeds) // 2
        log.warning("out of GPU memory at batch %d; retrying as %d + %d", len(seeds), half, len(seeds) - half)
        return _project_halving(projector, targets[:half], seeds[:half], offset) + _project_halving(
            projector, targets[half:], seeds[half:], offset + half
        )  # no progress on a retry
