"""`augment`: edited images of every latent along boundaries and/or rendered through shifted generators
(StyleGAN-NADA), sharded on Dask, resumable."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.run_options import BatchResult, RunOptions, run_batch

DEFAULT_STRENGTHS = (-3.0, -1.5, 1.5, 3.0)


@dataclass(frozen=True)
class AugmentOptions:
    attributes: Sequence[str] = ()  # boundary names to edit along
    strengths: Sequence[float] = DEFAULT_STRENGTHS  # changes of the boundary's signed distance (SVM units)
    boundaries: str | Path | None = None  # None: the boundaries shipped with a built-in generator
    shifts: Sequence[str | Path] = ()  # shifted generators to render every latent (and each edit) through
    conditions: Sequence[str] = ()  # boundaries whose distances must not move
    layers: str | None = None  # W+ layers the edit may move (None: the boundary's)
    mode: str = "relative"  # relative: distance += s | absolute: distance = s
    generator: str | Path | None = None  # None: the one the latents' run used
    noise: str = "auto"  # auto | saved | const
    limit: int | None = None  # only the first N ok latents (a preview)
    sheet_rows: int = 16  # source images per contact sheet
    batch_size: int = 8  # images rendered together on a worker
    shard_size: int = 256  # edited images per shard (= per manifest part)
    column: str = "w"  # latent column of the table
    force: bool = False  # edit even if latents, boundaries and generator sha256 differ


@dataclass
class AugmentResult(BatchResult):
    boundaries: Path | None = None  # the boundaries file used
    shipped_with: str | None = None  # the built-in generator whose shipped boundaries were used, if so
    sheets: dict[str, Path] = field(default_factory=dict)  # contact sheet per attribute / shift


def augment(
    latents: str | Path,
    out: str | Path,
    options: AugmentOptions = AugmentOptions(),
    run: RunOptions = RunOptions(),
    console=None,
) -> AugmentResult:
    """Render every ok latent of `latents` (a project or sample run) moved along each attribute's boundary by
    each strength, and through each shifted generator: PNGs, a manifest linking each image to its source and
    generator, contact sheets."""
    from facebatch.pipeline.latents import read_index
    from facebatch.stages.augment import build_augment_spec, write_contact_sheets

    o = options
    attributes, shifts = list(o.attributes), list(o.shifts)
    if not attributes and not shifts:
        raise InputError("nothing to render: give --attr (boundary edits) and/or --shift (shifted generators)")
    if not o.strengths and attributes:
        raise InputError("--strengths is empty")
    if o.limit is not None and o.limit < 1:
        raise InputError("--limit must be at least 1")
    run.configure_storage()
    run.cluster()  # a bad cluster combination is one line before anything is read
    index = read_index(latents, o.column)
    boundaries, shipped_with = o.boundaries, None
    if boundaries is None and attributes:
        shipped_with, boundaries = shipped_boundaries_for(index, o.generator)
    spec = build_augment_spec(
        index=index,
        boundaries_path=boundaries,
        attributes=attributes,
        strengths=list(o.strengths),
        out_dir=storage.location(out),
        generator=o.generator,
        shifts=shifts,
        conditions=list(o.conditions),
        layers=o.layers,
        mode=o.mode,
        noise=o.noise,
        shard_size=o.shard_size,
        batch_size=o.batch_size,
        limit=o.limit,
        force=o.force,
        sheet_rows=o.sheet_rows,
    )
    summary = run_batch(spec, run, console)
    sheets = {}
    if not run.dry_run and summary.images_ok:
        sheets = write_contact_sheets(storage.location(out), max_rows=o.sheet_rows)
    return AugmentResult(summary, spec, storage.location(boundaries) if boundaries else None, shipped_with, sheets)


def shipped_boundaries_for(index, generator) -> tuple[str, Path]:
    """(built-in generator name, its boundaries file) for the run's generator; one line when it ships none."""
    from facebatch.nets.registry import shipped_boundaries
    from facebatch.pipeline.latents import resolve_generator

    _, sha = resolve_generator(generator, index)
    found = shipped_boundaries(sha)
    if found is None:
        raise InputError(
            f"no --boundaries given and generator {sha[:12]} ships none (only built-in generators do, e.g. "
            "celeba64); pass --boundaries FILE from `facebatch fit-boundaries` or `facebatch directions sefa`"
        )
    entry, path = found
    return entry.name, path
