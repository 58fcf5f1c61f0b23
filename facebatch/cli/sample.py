"""`facebatch sample`: images and their latents from seeds, the start of label-free boundary fitting."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from facebatch import ranges
from facebatch.cli.cluster_options import (
    DeviceOption,
    DryRunOption,
    OverwriteOption,
    QuietOption,
    SchedulerFileOption,
    SchedulerOption,
    ThreadsPerWorkerOption,
    WorkersOption,
    cluster_options,
    report_run,
    run_shards,
)
from facebatch.cli.console import out
from facebatch.errors import InputError

# One run's seeds are planned in this process, about 340 bytes each (1,000,000: ~340 MB); more go in several runs.
MAX_SAMPLES = ranges.MAX_SELECTED


def parse_seeds(seeds: Optional[str], n: int, seed: int) -> list[int]:
    """`--seeds 0-9,42` wins; otherwise n consecutive seeds from --seed. Bounded before the list is made."""
    if seeds:
        return ranges.parse_seeds(seeds, "--seeds", most=MAX_SAMPLES)
    if not 1 <= n <= MAX_SAMPLES:
        raise InputError(f"-n {n}: from 1 to {MAX_SAMPLES:,} samples in one run")
    ranges.check_seeds([seed], "--seed")
    if seed + n - 1 > ranges.MAX_SEED:
        raise InputError(f"--seed {seed} -n {n} reaches seed {seed + n - 1}; seeds end at {ranges.MAX_SEED}")
    return list(range(seed, seed + n))


def sample(
    generator: Annotated[str, typer.Option("--generator", "-g", help="Registry name or checkpoint path.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder: images/ and latents/.")],
    n: Annotated[int, typer.Option("-n", help="How many samples (seeds --seed .. --seed+n-1).")] = 16,
    seed: Annotated[int, typer.Option("--seed", help="First seed.")] = 0,
    seeds: Annotated[
        Optional[str], typer.Option("--seeds", help="Explicit seeds, e.g. 0-99,123 (overrides -n/--seed).")
    ] = None,
    truncation: Annotated[float, typer.Option("--truncation", "--trunc", help="Truncation psi (1 = none).")] = 1.0,
    truncation_cutoff: Annotated[
        Optional[int], typer.Option("--truncation-cutoff", help="Truncate only the first K layers.")
    ] = None,
    noise_mode: Annotated[str, typer.Option("--noise-mode", help="const | random | none")] = "const",
    images: Annotated[
        bool, typer.Option("--images/--no-images", help="Write PNGs (off for latent-only runs of 100k+).")
    ] = True,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images rendered together.")] = 16,
    part_size: Annotated[
        int,
        typer.Option("--part-size", "--shard-size", help="Rows per Parquet part (= per shard; the unit of resume)."),
    ] = 10000,
    # Its own --workers default: sampling is one forward pass per image, so a cluster rarely pays for its start.
    workers: WorkersOption = None,
    scheduler: SchedulerOption = None,
    scheduler_file: SchedulerFileOption = None,
    threads_per_worker: ThreadsPerWorkerOption = None,
    device: DeviceOption = "auto",
    overwrite: OverwriteOption = False,
    dry_run: DryRunOption = False,
    quiet: QuietOption = False,
) -> None:
    """Sample the generator by seed: PNGs in OUT/images, latents (z, W+) in OUT/latents/part-*.parquet.

    Seeds follow the official recipe (z = RandomState(seed).randn(z_dim)), so images match
    NVlabs gen_images.py for the same seed, truncation and noise mode. Reruns skip finished parts;
    other settings in the same OUT are refused unless --overwrite.
    """
    from facebatch.nets.checkpoints import load_networks
    from facebatch.stages.sample import build_sample_spec

    seed_list = parse_seeds(seeds, n, seed)
    remote = bool(scheduler or scheduler_file)
    cluster = cluster_options(None if remote else workers, scheduler, scheduler_file, threads_per_worker, device)
    nets = load_networks(generator, device="cpu", with_d=False)  # here only for its sha256 and shapes
    spec = build_sample_spec(
        seeds=seed_list,
        out_dir=out_dir,
        nets=nets,
        truncation_psi=truncation,
        truncation_cutoff=truncation_cutoff,
        noise_mode=noise_mode,
        images=images,
        shard_size=part_size,
        batch_size=batch_size,
    )
    summary = run_shards(spec, cluster, overwrite, False, dry_run, quiet)
    if dry_run:
        out.print(
            f"plan: {summary.images} samples in {summary.shards} parts; {summary.shards_skipped} done, "
            f"{summary.images_todo} to draw"
        )
        return
    if not quiet:
        out.print(
            f"{summary.images} samples ({summary.images_processed} new) from {nets.name} -> {out_dir} "
            f"[{'images + ' if images else ''}latents]"
        )
    report_run(summary, quiet=True)
