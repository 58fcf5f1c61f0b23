"""`facebatch sample`: images and their latents from seeds, the start of label-free boundary fitting."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from facebatch import __version__
from facebatch.cli.console import err, out
from facebatch.errors import InputError
from facebatch.pipeline.atomic import atomic_write_json
from facebatch.pipeline.table import atomic_write_table, latent_array, latent_field, run_metadata, with_run_metadata


def parse_seeds(seeds: Optional[str], n: int, seed: int) -> list[int]:
    """`--seeds 0-9,42` wins; otherwise n consecutive seeds from --seed."""
    if not seeds:
        if n < 1:
            raise InputError("-n must be at least 1")
        return list(range(seed, seed + n))
    result: list[int] = []
    for part in seeds.split(","):
        part = part.strip()
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise InputError(f"--seeds: cannot read {part!r} (non-negative seeds, e.g. 0-99,123)")
        result.extend(range(int(lo), int(hi or lo) + 1))
    if not result:
        raise InputError("--seeds selects no seeds")
    return result


def sample(
    generator: Annotated[str, typer.Option("--generator", "-g", help="Registry name or checkpoint path.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder: images/ and latents/.")],
    n: Annotated[int, typer.Option("-n", help="How many samples (seeds --seed .. --seed+n-1).")] = 16,
    seed: Annotated[int, typer.Option("--seed", help="First seed.")] = 0,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Explicit seeds, e.g. 0-99,123 (overrides -n/--seed).")] = None,
    truncation: Annotated[float, typer.Option("--truncation", "--trunc", help="Truncation psi (1 = none).")] = 1.0,
    truncation_cutoff: Annotated[Optional[int], typer.Option("--truncation-cutoff", help="Truncate only the first K layers.")] = None,
    noise_mode: Annotated[str, typer.Option("--noise-mode", help="const | random | none")] = "const",
    images: Annotated[bool, typer.Option("--images/--no-images", help="Write PNGs (off for latent-only runs of 100k+).")] = True,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b")] = 16,
    part_size: Annotated[int, typer.Option("--part-size", help="Rows per Parquet part.")] = 10000,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace parts written with other settings.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Sample the generator by seed: PNGs in OUT/images, latents (z, W+) in OUT/latents/part-*.parquet.

    Seeds follow the official recipe (z = RandomState(seed).randn(z_dim)), so images match
    NVlabs gen_images.py for the same seed, truncation and noise mode. Reruns skip finished parts.
    """
    from facebatch.nets.checkpoints import load_networks
    from facebatch.nets.device import resolve_device
    from facebatch.nets.sampling import sample as draw
    from facebatch.pipeline.images import save_image

    if noise_mode not in ("const", "random", "none"):
        raise InputError(f"--noise-mode must be const, random or none, not {noise_mode!r}")
    if batch_size < 1 or part_size < 1:
        raise InputError("--batch-size and --part-size must be at least 1")
    seed_list = parse_seeds(seeds, n, seed)
    dev = resolve_device(device)
    nets = load_networks(generator, device=str(dev))
    G = nets.G
    config = dict(command="sample", generator=nets.name, generator_sha256=nets.sha256, truncation_psi=truncation,
                  truncation_cutoff=truncation_cutoff, noise_mode=noise_mode, part_size=part_size, facebatch=__version__)
    schema = with_run_metadata(
        pa.schema([
            pa.field("image_id", pa.string()), pa.field("seed", pa.int64()), pa.field("status", pa.string()),
            pa.field("error", pa.string()), latent_field("z", (G.z_dim,)), latent_field("w", (G.num_ws, G.w_dim)),
        ]),
        config,
    )
    parts = [seed_list[i : i + part_size] for i in range(0, len(seed_list), part_size)]
    latents_dir, images_dir = out_dir / "latents", out_dir / "images"
    todo = []
    for idx, part in enumerate(parts):
        path = latents_dir / f"part-{idx:05d}.parquet"
        if path.exists():
            done = pq.read_schema(path)
            same = run_metadata(done) == config
            first = pq.read_table(path, columns=["seed"]).column("seed").to_pylist()
            if same and first == part:
                continue
            if not overwrite:
                raise InputError(f"{path} was written with other settings or seeds; use --overwrite to replace it")
        todo.append((idx, part))

    total = sum(len(p) for _, p in todo)
    progress = Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=err, disable=quiet or not err.is_terminal)
    with progress:
        task = progress.add_task("sample", total=total)
        for idx, part in todo:
            zs, wss = [], []
            for b in range(0, len(part), batch_size):
                chunk = part[b : b + batch_size]
                z, ws, img = draw(G, chunk, truncation, truncation_cutoff, noise_mode, device=dev)
                if images:
                    for s, im in zip(chunk, img):
                        save_image(im, images_dir / f"seed{s:06d}.png")
                zs.append(z.numpy())
                wss.append(ws.numpy())
                progress.advance(task, len(chunk))
            z_all, w_all = np.concatenate(zs), np.concatenate(wss)
            table = pa.Table.from_arrays(
                [pa.array([f"seed{s:06d}.png" for s in part]), pa.array(part, pa.int64()), pa.array(["ok"] * len(part)),
                 pa.nulls(len(part), pa.string()), latent_array(z_all, len(part), (G.z_dim,)),
                 latent_array(w_all, len(part), (G.num_ws, G.w_dim))],
                schema=schema,
            )
            atomic_write_table(latents_dir / f"part-{idx:05d}.parquet", table)
    # Same place and key as `project`'s run file, so `augment` finds the generator without --generator.
    atomic_write_json(out_dir / "_run.json", dict(stage="sample", config=config, seeds=len(seed_list),
                                                 runtime=dict(generator_path=str(Path(nets.path).resolve()))))
    if not quiet:
        out.print(f"{len(seed_list)} samples ({total} new) from {nets.name} -> {out_dir} "
                  f"[{'images + ' if images else ''}latents]")
