"""`facebatch invert IMG...`: project a few files and look at the result (the dataset command is `project`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from facebatch.cli.console import err, out
from facebatch.errors import InputError, RunFailed

# score key -> column header (short, so the table fits 80 columns)
SHOWN_SCORES = {"psnr": "PSNR", "ssim": "SSIM", "perceptual": "percep", "mse": "MSE", "l1": "L1",
                "d_residual": "D res", "anomaly_score": "anomaly"}


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN/inf: a score that is not a number (no D, no perceptual net) is null."""
    return float(value) if np.isfinite(value) else None


def _score_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def invert(
    images: Annotated[list[Path], typer.Argument(help="Image files to project.")],
    generator: Annotated[str, typer.Option("--generator", "-g", help="Checkpoint path, registry name or URL.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for <name>.png (target | reconstruction) and scores.json.")],
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="Projection preset name or YAML file.")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Override the preset's optimisation steps.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override any preset setting: key=value (repeatable).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Run seed; each image's seed derives from it and the file name.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images optimised together.")] = 8,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Project image files into the generator; write target | reconstruction PNGs and print their scores.

    Images are centre-cropped and resized to the generator's resolution. Scores: PSNR/SSIM/MSE/L1
    on pixels, the preset's perceptual distance, the discriminator-feature residual (when the
    checkpoint has a D) and the AnoGAN anomaly score.
    """
    import torch

    from facebatch import __version__
    from facebatch.invert.presets import DEFAULT_PRESET, load_preset, parse_overrides
    from facebatch.invert.projector import Projector
    from facebatch.nets.checkpoints import load_networks
    from facebatch.nets.device import resolve_device
    from facebatch.pipeline.images import UnreadableImage, load_image, save_image
    from facebatch.pipeline.project_stage import per_image_seed
    from facebatch.pipeline.atomic import atomic_write_json

    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise InputError(f"no such image file: {', '.join(missing)}")
    overrides = parse_overrides(set_ or [])
    if steps is not None:
        overrides["steps"] = steps
    cfg = load_preset(preset or DEFAULT_PRESET, overrides)
    dev = resolve_device(device)
    nets = load_networks(generator, device=str(dev))
    projector = Projector(nets.G, nets.D, cfg, device=dev)
    R = nets.G.img_resolution

    names = [p.name for p in images]
    ids = [p.name if names.count(p.name) == 1 else str(p) for p in images]  # full path only where names clash
    rows: dict[str, dict] = {}
    loaded: list[tuple[str, Path, "torch.Tensor"]] = []
    for image_id, path in zip(ids, images):
        try:
            loaded.append((image_id, path, load_image(path, R)[0]))
        except UnreadableImage as exc:
            rows[image_id] = {"image_id": image_id, "path": str(path), "status": "error", "error": str(exc)}

    progress = Progress(TextColumn("[bold]invert"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=err, disable=quiet)
    with progress:
        task = progress.add_task("steps", total=cfg.total_steps * len(loaded))
        for start in range(0, len(loaded), batch_size):
            batch = loaded[start : start + batch_size]
            seeds = [per_image_seed(seed, image_id) for image_id, _, _ in batch]
            done = progress.tasks[0].completed

            def advance(step, total, losses, done=done, n=len(batch)):
                progress.update(task, completed=done + step * n)

            res = projector.project(torch.stack([t for _, _, t in batch]), seeds, callback=advance)
            for j, (image_id, path, target) in enumerate(batch):
                png = out_dir / f"{image_id}.png"
                save_image(torch.cat([target, res.reconstructions[j].clamp(-1, 1)], dim=2), png)
                rows[image_id] = {"image_id": image_id, "path": str(path), "status": "ok", "error": None,
                                  "seed": seeds[j], "output": str(png), "final_loss": _finite_or_none(res.losses[-1, j]) if res.steps else None,
                                  **{k: _finite_or_none(v[j]) for k, v in res.scores.items()}}

    ordered = [rows[k] for k in dict.fromkeys(ids)]
    atomic_write_json(out_dir / "scores.json", {
        "facebatch": __version__, "generator": nets.name, "generator_sha256": nets.sha256, "seed": seed,
        "perceptual_backend": cfg.perceptual, "config": cfg.to_dict(), "images": ordered,
    })
    table = Table(title=f"{cfg.name}: {cfg.total_steps} steps, perceptual {cfg.perceptual}", title_justify="left")
    table.add_column("image", overflow="fold")
    for header in SHOWN_SCORES.values():
        table.add_column(header, justify="right")
    failed = [r for r in ordered if r["status"] != "ok"]
    for row in ordered:
        if row["status"] == "ok":
            table.add_row(row["image_id"], *[_score_cell(row[k]) for k in SHOWN_SCORES])
        else:
            table.add_row(row["image_id"], "[red]error[/]", *[""] * (len(SHOWN_SCORES) - 1))
    out.print(table)
    for row in failed:
        err.print(f"[red]{row['image_id']}[/]: {row['error']}", highlight=False, soft_wrap=True)
    out.print(f"wrote {len(ordered) - len(failed)} side-by-side PNG(s) and scores.json to {out_dir}")
    if failed:
        raise RunFailed(f"{len(failed)} of {len(ordered)} images could not be read (see the table)")
