"""`facebatch invert IMG...`: the project stage on a few files, to look at the result (for datasets: `project`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from facebatch.cli.cluster_options import DeviceOption, QuietOption
from facebatch.cli.console import err, out, styled
from facebatch.cli.projection_options import (
    EncoderOption,
    GeneratorOption,
    PresetOption,
    SetOption,
    StepsOption,
)
from facebatch.errors import InputError, RunFailed

# score key -> column header (short, so the table fits 80 columns)
SHOWN_SCORES = {
    "psnr": "PSNR",
    "ssim": "SSIM",
    "perceptual": "percep",
    "mse": "MSE",
    "l1": "L1",
    "d_residual": "D res",
    "anomaly_score": "anomaly",
}


def _json_row(row: dict) -> dict:
    """JSON has no NaN/inf: a score that is not a number (no D, no perceptual net) is null."""
    return {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in row.items()}


def _score_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def invert(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGES", help="Image files to project.")],
    generator: GeneratorOption,
    out_dir: Annotated[
        Path,
        typer.Option("--out", "-o", help="Folder for <name>.png (target | reconstruction), scores.json and latents/."),
    ],
    preset: PresetOption = None,
    steps: StepsOption = None,
    set_: SetOption = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Run seed; each image's seed derives from it and the file name.")
    ] = 0,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", "-b", help="Images optimised together (default: as `project` picks it)."),
    ] = None,
    device: DeviceOption = "auto",
    encoder: EncoderOption = None,
    quiet: QuietOption = False,
) -> None:
    """Project image files into the generator; write target | reconstruction PNGs and print their scores.

    The `project` stage's own function on a few files, in this process: the same rows (scores.json, and
    OUT/latents/part-00000.parquet with the W+ codes). Images are centre-cropped and resized to the
    generator's resolution. Scores: PSNR/SSIM/MSE/L1 on pixels, the preset's perceptual distance, the
    discriminator-feature residual (when the checkpoint has a D) and the AnoGAN anomaly score.
    """
    import torch

    from facebatch import __version__
    from facebatch.commands.project import projection_encoder
    from facebatch.invert.presets import projection_config
    from facebatch.nets.checkpoints import load_networks
    from facebatch.nets.device import resolve_device
    from facebatch.pipeline.atomic import atomic_write_json
    from facebatch.pipeline.images import save_image
    from facebatch.pipeline.rundir import RunDir, safe_relpath, unique_ids
    from facebatch.pipeline.table import atomic_write_table
    from facebatch.stages.project import project_files

    if batch_size is not None and batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise InputError(f"no such image file: {', '.join(missing)}")
    dev = resolve_device(device)
    nets = load_networks(generator, device=str(dev))
    cfg = projection_config(preset, steps, set_, nets)
    enc = projection_encoder(cfg, encoder, nets)
    if enc is not None:
        enc.encoder.to(dev)

    # ids: the shortest unique tail of each path (a.png, or photos/a.png beside old/a.png), never absolute
    # or with '..'; each output is <id>.png under --out (the full id: a.jpg and a.png never share a file)
    by_id = dict(zip(unique_ids(images), images))
    items = [{"image_id": image_id, "path": str(path)} for image_id, path in by_id.items()]
    outputs: dict[str, str] = {}

    def side_by_side(image_id, target, reconstruction):
        png = out_dir / f"{safe_relpath(image_id)}.png"
        save_image(torch.cat([target, reconstruction.clamp(-1, 1)], dim=2), png)
        outputs[image_id] = str(png)

    progress = Progress(
        TextColumn("[bold]invert"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
    )
    with progress:
        task = progress.add_task("steps", total=cfg.total_steps * len(items))
        table = project_files(
            items,
            nets,
            cfg,
            seed=seed,
            batch_size=batch_size,
            device=dev,
            on_image=side_by_side,
            on_steps=lambda n: progress.advance(task, n),
            encoder=enc,
        )

    atomic_write_table(RunDir(out_dir).part("part-00000"), table)
    ordered = [
        {**_json_row(row), "output": outputs.get(row["image_id"])} for row in table.drop_columns(["w"]).to_pylist()
    ]
    atomic_write_json(
        out_dir / "scores.json",
        {
            "facebatch": __version__,
            "generator": nets.name,
            "generator_sha256": nets.sha256,
            "seed": seed,
            "perceptual_backend": cfg.perceptual,
            "config": cfg.to_dict(),
            "images": ordered,
        },
    )
    table = Table(title=f"{cfg.name}: {cfg.total_steps} steps, perceptual {cfg.perceptual}", title_justify="left")
    table.add_column("image", overflow="fold")
    for header in SHOWN_SCORES.values():
        table.add_column(header, justify="right")
    failed = [r for r in ordered if r["status"] != "ok"]
    for row in ordered:
        if row["status"] == "ok":
            table.add_row(row["image_id"], *[_score_cell(row[k]) for k in SHOWN_SCORES])
        else:
            table.add_row(row["image_id"], styled(("error", "red")), *[""] * (len(SHOWN_SCORES) - 1))
    out.print(table)
    for row in failed:
        err.print(styled((row["image_id"], "red"), f": {row['error']}"), highlight=False, soft_wrap=True)
    out.print(f"wrote {len(ordered) - len(failed)} side-by-side PNG(s), scores.json and latents/ to {out_dir}")
    if failed:
        raise RunFailed(f"{len(failed)} of {len(ordered)} images could not be read (see the table)")
