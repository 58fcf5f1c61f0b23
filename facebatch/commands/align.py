"""`align`: FFHQ-aligned crops of every face in a folder, sharded on Dask, resumable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facebatch.pipeline import storage
from facebatch.pipeline.run_options import BatchResult, RunOptions, run_batch


@dataclass(frozen=True)
class AlignOptions:
    size: int = 1024  # side of the aligned square in pixels (FFHQ: 1024)
    backend: str = "dlib"  # landmark backend: dlib | face-alignment
    faces: str = "largest"  # largest: one face per image; all: every face found
    min_score: float | None = None  # detection score threshold (None: the backend's)
    shard_size: int = 256  # images per shard (= per Parquet part; the unit of resume)


class AlignResult(BatchResult):
    """The run's summary and stage: the faces table is OUT/faces, the crops OUT/aligned."""


def align_run_options(run: RunOptions) -> RunOptions:
    """Landmarks and warps are single-threaded CPU work: one torch thread per local worker (so a large host
    gets one worker per core), always on the CPU; a remote cluster's workers decide for themselves."""
    return run.with_(device="cpu", threads_per_worker=None if run.remote else 1)


def align(
    input_dir: str | Path,
    out: str | Path,
    options: AlignOptions = AlignOptions(),
    run: RunOptions = RunOptions(),
    console=None,
) -> AlignResult:
    """Align every face under `input_dir` the way FFHQ was made: OUT/aligned/*.png and OUT/faces/part-*.parquet,
    one row per aligned face (an image without a face is an error row)."""
    from facebatch.pipeline.discover import discover_images, no_images
    from facebatch.stages.align import build_align_spec

    run = align_run_options(run)
    run.configure_storage()
    run.cluster()
    input_dir, out = storage.location(input_dir), storage.location(out)
    items = discover_images(input_dir, exclude=[out])
    if not items:
        raise no_images(input_dir)
    o = options
    spec = build_align_spec(
        items=items,
        out_dir=out,
        size=o.size,
        backend=o.backend,
        faces=o.faces,
        min_score=o.min_score,
        shard_size=o.shard_size,
    )
    return AlignResult(run_batch(spec, run, console), spec)
