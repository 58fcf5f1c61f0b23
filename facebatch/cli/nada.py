"""`facebatch nada`: StyleGAN-NADA, a copy of the generator shifted to a text-described domain."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from facebatch.cli.cluster_options import DeviceOption, OverwriteOption, QuietOption
from facebatch.cli.console import err, out
from facebatch.domain_shift import DEFAULT_CLIP
from facebatch.errors import RunFailed


def iteration_progress(enabled: bool, total: int):
    """The iterations bar: the loss in the description, elapsed time and ETA; off a terminal it stays quiet."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("iterations"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=out,
        disable=not (enabled and out.is_terminal),
        transient=False,
    )


@contextmanager
def resumable(work: Path, total: int, unit: str = "iteration") -> Iterator[list[int]]:
    """A training loop the user may stop: Ctrl-C is one line saying where it stopped and which snapshot the
    same command goes on from, then exit 130. Yields a one-item list the progress callback keeps at the
    iteration reached."""
    from facebatch.pipeline.snapshots import latest_snapshot

    reached = [0]
    try:
        yield reached
    except KeyboardInterrupt:
        last = latest_snapshot(work)
        if last is None:
            then = "no snapshot was written yet, so rerunning the same command starts over"
        else:
            at = int(last.stem.split("-")[-1])
            then = f"rerunning the same command resumes from the last snapshot ({unit} {at}, {last})"
        err.print(f"interrupted at {unit} {reached[0]} of {total}: {then}", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


def nada(
    generator: Annotated[str, typer.Option("--generator", "-g", help="Registry name or checkpoint path to shift.")],
    source: Annotated[str, typer.Option("--source", help='Text for the domain the generator draws now ("photo").')],
    target: Annotated[str, typer.Option("--target", help='Text for the domain to move to ("pencil sketch").')],
    output: Annotated[
        str, typer.Option("--out", "-o", help="The shifted generator: facebatch .safetensors, usable as -g.")
    ],
    clip: Annotated[
        Optional[list[str]],
        typer.Option(
            "--clip",
            help=f"CLIP model, repeatable: a registry name (default {DEFAULT_CLIP}), ARCH:TAG (ViT-B-32:openai, "
            "downloaded once) or ARCH:/path/to/weights.",
        ),
    ] = None,
    clip_weight: Annotated[
        Optional[list[float]], typer.Option("--clip-weight", help="Loss weight per --clip, in order (default 1 each).")
    ] = None,
    iters: Annotated[
        int, typer.Option("--iters", help="Training iterations (style changes: 200-400, simple edits: ~50).")
    ] = 300,
    batch: Annotated[int, typer.Option("--batch", help="Samples per iteration (the reference README uses 2).")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random draw (the reference uses 2).")] = 2,
    layers: Annotated[
        Optional[str],
        typer.Option("--layers", help="Train these W+ rows' layers every step, e.g. 0-5 or all (default: adaptive)."),
    ] = None,
    auto_layer_k: Annotated[
        Optional[int], typer.Option("--auto-layer-k", help="Rows chosen per step (default int(2 * num_ws / 3)).")
    ] = None,
    auto_layer_iters: Annotated[
        int, typer.Option("--auto-layer-iters", help="W+ SGD steps per selection (0: train every row).")
    ] = 1,
    auto_layer_batch: Annotated[int, typer.Option("--auto-layer-batch", help="W codes per selection.")] = 8,
    mixing: Annotated[float, typer.Option("--mixing", help="Style-mixing probability of training samples.")] = 0.0,
    grid_seeds: Annotated[str, typer.Option("--grid-seeds", help="Seeds of the before/after grids.")] = "0-7",
    snapshot_every: Annotated[
        int, typer.Option("--snapshot-every", help="Iterations between snapshots and grids.")
    ] = 50,
    work: Annotated[
        Optional[str],
        typer.Option("--work", help="Folder for snapshots and grids (default: OUT's name + .nada/ beside it)."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Require a snapshot to go on from (a rerun resumes anyway when there is one)."),
    ] = False,
    device: DeviceOption = "auto",
    overwrite: OverwriteOption = False,
    quiet: QuietOption = False,
) -> None:
    """Fine-tune a copy of the generator so its images move from --source to --target (StyleGAN-NADA).

    The reference recipe: frozen and trainable copies; mapping, affine and ToRGB layers frozen;
    loss 1 - cos(image direction, text direction) summed over the --clip models with their weights;
    per step the top-k W+ rows by a global-CLIP step on W+ codes (or --layers); Adam lr 0.0016,
    betas (0, 0.992). Snapshots in the work folder make an interrupted run resume where it stopped
    (same result as an uninterrupted run); grids of fixed seeds show before and after. The output
    records the texts, CLIP models, settings and the base generator's sha256.
    """
    from facebatch.domain_shift.api import default_work_dir, run_nada
    from facebatch.domain_shift.train import MAX_GRID_SEEDS
    from facebatch.ranges import parse_seeds

    specs = list(clip or [])
    weights = list(clip_weight or [])
    bar = iteration_progress(not quiet, iters)

    def on_step(i: int, value: float, rows: list[int]) -> None:
        reached[0] = i
        bar.update(task, completed=i, description=f"nada loss {value:.4f}")

    with resumable(Path(work) if work else default_work_dir(output), iters) as reached, bar:
        task = bar.add_task("nada", total=iters)
        result = run_nada(
            generator,
            source=source,
            target=target,
            out=output,
            clips=specs,
            clip_weights=weights,
            iters=iters,
            batch=batch,
            seed=seed,
            layers=layers,
            auto_layer_k=auto_layer_k,
            auto_layer_iters=auto_layer_iters,
            auto_layer_batch=auto_layer_batch,
            mixing=mixing,
            grid_seeds=parse_seeds(grid_seeds, "--grid-seeds", most=MAX_GRID_SEEDS),
            snapshot_every=snapshot_every,
            work=work,
            resume=resume,
            device=device,
            overwrite=overwrite,
            on_step=on_step,
        )
    if len(result.losses) != iters:  # never claim a generator that was not written
        raise RunFailed(f"the run stopped at iteration {len(result.losses)} of {iters}; {output} was not written")
    if not quiet:
        losses = result.losses
        n = max(1, min(10, len(losses) // 2))  # two windows that do not overlap
        first, last = losses[:n], losses[-n:]
        resumed = f" (resumed at iteration {result.resumed_from})" if result.resumed_from else ""
        out.print(
            f"{len(losses)} iterations{resumed}: directional loss {sum(first) / n:.4f} (first {n}) -> "
            f"{sum(last) / n:.4f} (last {n})",
            highlight=False,
        )
        if result.grid is not None:
            out.print(f"before/after grid: {result.grid}", highlight=False, soft_wrap=True)
        out.print(f"shifted generator: {output}", highlight=False, soft_wrap=True)
