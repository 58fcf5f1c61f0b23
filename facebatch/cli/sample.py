"""`facebatch sample`: images and their latents from seeds, the start of label-free boundary fitting."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from facebatch.cli.cluster_options import batch_command, report_run
from facebatch.cli.console import err, out


@batch_command(without=("retry_errors",))
def sample(
    generator: Annotated[str, typer.Option("--generator", "-g", help="Registry name or checkpoint path.")],
    out_dir: Annotated[str, typer.Option("--out", "-o", help="Output folder or URL: images/ and latents/.")],
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
    *,
    run,
) -> None:
    """Sample the generator by seed: PNGs in OUT/images, latents (z, W+) in OUT/latents/part-*.parquet.

    Seeds follow the official recipe (z = RandomState(seed).randn(z_dim)), so images match
    NVlabs gen_images.py for the same seed, truncation and noise mode. Reruns skip finished parts;
    other settings in the same OUT are refused unless --overwrite.
    """
    from facebatch.commands.sample import SampleOptions
    from facebatch.commands.sample import sample as sample_seeds

    options = SampleOptions(
        seeds=seeds,
        n=n,
        seed=seed,
        truncation=truncation,
        truncation_cutoff=truncation_cutoff,
        noise_mode=noise_mode,
        images=images,
        batch_size=batch_size,
        part_size=part_size,
    )
    result = sample_seeds(generator, out_dir, options, run, console=err)
    summary, nets = result.summary, result.nets
    if run.dry_run:
        out.print(
            f"plan: {summary.images} samples in {summary.shards} parts; {summary.shards_skipped} done, "
            f"{summary.images_todo} to draw"
        )
        return
    if not run.quiet:
        out.print(
            f"{summary.images} samples ({summary.images_processed} new) from {nets.name} -> {out_dir} "
            f"[{'images + ' if images else ''}latents]"
        )
    report_run(summary, quiet=True)
