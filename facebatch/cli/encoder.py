"""`facebatch encoder train`: an image -> W+ encoder for any generator (its own samples, plus real photos)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from facebatch.cli.cluster_options import DeviceOption, OverwriteOption, QuietOption
from facebatch.cli.console import out
from facebatch.cli.nada import iteration_progress, resumable
from facebatch.errors import RunFailed

app = typer.Typer(help="Encoders: image -> W+ in one forward pass, trained for your generator.", no_args_is_help=True)


@app.command("train")
def train(
    generator: Annotated[str, typer.Option("--generator", "-g", help="Registry name or checkpoint path.")],
    output: Annotated[str, typer.Option("--out", "-o", help="The encoder to write (.safetensors).")],
    real: Annotated[
        Optional[str],
        typer.Option("--real", help="A folder of real images (image losses only): closes the samples-to-photos gap."),
    ] = None,
    real_limit: Annotated[int, typer.Option("--real-limit", help="Read at most this many real images.")] = 20000,
    iters: Annotated[int, typer.Option("--iters", help="Training steps.")] = 20000,
    batch: Annotated[int, typer.Option("--batch", help="Generated samples per step (exact W+ known).")] = 32,
    real_batch: Annotated[int, typer.Option("--real-batch", help="Real images per step (with --real).")] = 8,
    image_batch: Annotated[
        int, typer.Option("--image-batch", help="Of the samples, how many also get the pixel + perceptual losses.")
    ] = 8,
    image_every: Annotated[
        int, typer.Option("--image-every", help="Image losses every N-th step (they cost ~10x the latent loss).")
    ] = 1,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 5e-4,
    grad_clip: Annotated[float, typer.Option("--grad-clip", help="Clip the gradient's norm (0: off).")] = 1.0,
    perceptual_weight: Annotated[float, typer.Option("--perceptual-weight", help="e4e's LPIPS weight.")] = 0.8,
    delta_weight: Annotated[float, typer.Option("--delta-weight", help="e4e's delta regularisation.")] = 2e-4,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random draw.")] = 0,
    snapshot_every: Annotated[int, typer.Option("--snapshot-every", help="Steps between snapshots and grids.")] = 500,
    work: Annotated[
        Optional[str],
        typer.Option("--work", help="Folder for snapshots and grids (default: OUT's name + .encoder-work/)."),
    ] = None,
    half: Annotated[
        bool, typer.Option("--half", help="Store the weights as float16: half the file, codes differ by ~1e-3.")
    ] = False,
    device: DeviceOption = "auto",
    overwrite: OverwriteOption = False,
    quiet: QuietOption = False,
) -> None:
    """Train an encoder E: image -> W+ for GENERATOR (pSp/e4e feature pyramid, one head per W+ row).

    Every step: generated samples (truncation spread, style mixing, per-row jitter) with their exact
    W+ as target (latent loss), pixel + perceptual losses on a part of them and on --real images, and
    e4e's delta regularisation. Snapshots in the work folder make an interrupted run resume where it
    stopped (bit for bit on a CPU with the same threads); each snapshot draws target | reconstruction
    at fixed inputs. The output records the generator's sha256, the recipe and the images seen; an
    encoder is refused with any other generator.
    """
    from facebatch.encoder.api import default_work_dir, train_encoder_file

    bar = iteration_progress(not quiet, iters)

    def on_step(i: int, record: dict) -> None:
        reached[0] = i
        bar.update(task, completed=i, description=f"encoder latent {record['latent']:.3f}")

    with resumable(Path(work) if work else default_work_dir(output), iters, "step") as reached, bar:
        task = bar.add_task("encoder", total=iters)
        result = train_encoder_file(
            generator,
            out=output,
            real=real,
            real_limit=real_limit,
            work=work,
            device=device,
            overwrite=overwrite,
            iters=iters,
            batch=batch,
            real_batch=real_batch,
            image_batch=image_batch,
            image_every=image_every,
            lr=lr,
            grad_clip=grad_clip,
            perceptual_weight=perceptual_weight,
            delta_weight=delta_weight,
            seed=seed,
            snapshot_every=snapshot_every,
            half=half,
            on_step=on_step,
        )
    if result.iteration != iters:  # never claim an encoder that was not written
        raise RunFailed(f"the run stopped at step {result.iteration} of {iters}; {output} was not written")
    if not quiet:
        resumed = f" (resumed at step {result.resumed_from})" if result.resumed_from else ""
        out.print(f"{result.iteration} steps, {result.images_seen:,} images{resumed}", highlight=False)
        if result.grid is not None:
            out.print(f"target | reconstruction grid: {result.grid}", highlight=False, soft_wrap=True)
        out.print(f"encoder: {output}", highlight=False, soft_wrap=True)
