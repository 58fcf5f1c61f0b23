"""`facebatch mix APP PAIRS.csv`: Image2StyleGAN(++) morphs, crossovers, inpainting, local style transfer and
expression transfer on pairs of faces, through the shard runner (sharded, resumable, one row per output).

One sub-command per app, so each `--help` lists only its own options; the shared ones are defined once here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from typer.core import TyperGroup

from facebatch.cli.cluster_options import batch_command, report_run, shared_options
from facebatch.cli.console import err, error_line, out, styled
from facebatch.cli.projection_options import PresetOption, SetOption, StepsOption
from facebatch.errors import InputError

APPS = ("morph", "crossover", "inpaint", "style", "expression")
SHAPES_HELP = "center, left, right, eyes, mouth, random-box"


class _AppGroup(TyperGroup):
    """An unknown app is one line and exit 2, like every other user error."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            error_line(f"unknown mix app {args[0]!r}; choose one of {', '.join(APPS)}")
            raise typer.Exit(2)
        return super().resolve_command(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [a for a in APPS if a in self.commands]  # the order of the help text, not alphabetical


app = typer.Typer(
    cls=_AppGroup,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Mix pairs of faces: morph, crossover, inpaint, style, expression (Image2StyleGAN / ++, Yang & Lim).\n\n"
    "PAIRS.csv has columns a, b (image paths relative to the CSV, or image_ids of --latents runs), optional "
    "pair_id, mask (a PNG or a shape name), neutral (expression). Outputs: OUT/images/<app>/<pair_id>/, "
    "OUT/manifest/ (Parquet, one row per output), OUT/contact_sheets/<app>.png.",
)

PairsArg = Annotated[
    str, typer.Argument(help="CSV of pairs: a, b [, pair_id, mask, neutral]; paths relative to the CSV's folder.")
]
OutOption = Annotated[
    str, typer.Option("--out", "-o", help="Output folder: images/<app>/, manifest/, contact_sheets/, _run.json.")
]
GenOption = Annotated[
    Optional[str],
    typer.Option("--generator", "-g", help="Checkpoint path, registry name or URL (default: the --latents run's)."),
]
LatentsOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--latents",
        "-l",
        help="`facebatch project` run(s) whose image_ids PAIRS.csv may name: their W+ codes (and saved noise "
        "maps) are used instead of projecting again (repeatable; one generator).",
    ),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Run seed; each pair's seed derives from it and its pair_id.")]
BatchOption = Annotated[int, typer.Option("--batch-size", "-b", help="Pairs optimised together on a worker.")]
ShardOption = Annotated[int, typer.Option("--shard-size", help="Pairs per shard (= per manifest part).")]
SheetOption = Annotated[int, typer.Option("--sheet-rows", help="Pairs shown in the contact sheet.")]


def _mask_option(default: str, meaning: str):
    return Annotated[
        Optional[str],
        typer.Option(
            "--mask",
            "--hole",
            help=f"{meaning} for pairs without a mask cell: a shape ({SHAPES_HELP}) or a PNG (default: {default}).",
        ),
    ]


CrossoverMask = _mask_option("left", "Where the result takes A (white = A, black = B)")
InpaintMask = _mask_option("center", "The hole to fill (a shape), or a PNG that is white where pixels are KNOWN")
StyleMask = _mask_option("right", "The region of A that takes B's style")


# The options every app shares, declared once: typer lists them after the app's own, the app gets a MixOptions.
MIX_PARAMETERS = (
    ("generator", GenOption, None),
    ("latents", LatentsOption, None),
    ("preset", PresetOption, None),
    ("steps", StepsOption, None),
    ("set_", SetOption, None),
    ("seed", SeedOption, 0),
    ("batch_size", BatchOption, 8),
    ("shard_size", ShardOption, 64),
    ("sheet_rows", SheetOption, 16),
)


def _mix_options(set_=None, latents=None, **values):
    from facebatch.commands.mix import MixOptions

    return MixOptions(overrides=tuple(set_ or ()), latents=tuple(latents or ()), **values)


def mix_app(name: str):
    """Register an app: its own options, then the shared mix options, then the run options."""

    def register(fn):
        return app.command(name)(batch_command(shared_options(MIX_PARAMETERS, "common", _mix_options)(fn)))

    return register


def _run(app_name: str, params: dict, pairs: Path, out_dir: Path, common, run) -> None:
    from facebatch.commands.mix import mix
    from facebatch.stages.mix import read_manifest

    result = mix(app_name, pairs, out_dir, params, common, run, console=err)
    summary, cfg = result.summary, result.config
    if run.dry_run:
        out.print(
            f"plan: mix {app_name}, {summary.images} pairs in {summary.shards} shards; {summary.shards_skipped} done, "
            f"{summary.images_todo} to compute; preset {cfg.name} ({cfg.total_steps} steps) on {result.nets.name}"
        )
        return
    if not run.quiet:
        if result.sheet is not None:
            out.print(f"contact sheet: {result.sheet}")
        if summary.images_ok or summary.images_error:
            frame = read_manifest(out_dir)
            cut = frame[frame.mask_thresholded.fillna(False).astype(bool)].pair_id.unique()
            if len(cut):
                out.print(
                    f"{len(cut)} pair(s) had a mask that was not black and white; it was thresholded at 0.5 "
                    f"(mask_thresholded in the manifest): {', '.join(cut[:5])}{' ...' if len(cut) > 5 else ''}"
                )
            errors = frame[frame.status != "ok"]
            for row in errors.head(5).itertuples():
                err.print(
                    styled((f"pair {row.pair_id}:", "yellow"), " ", str(row.error)), highlight=False, soft_wrap=True
                )
    report_run(summary, run.quiet)


@mix_app("morph")
def morph(
    pairs: PairsArg,
    out_dir: OutOption,
    frames: Annotated[
        int, typer.Option("--frames", help="Frames from A to B, both endpoints included (W+ and noise together).")
    ] = 8,
    animation: Annotated[str, typer.Option("--animation", help="gif | webp | none: morph.<ext> per pair.")] = "gif",
    *,
    common,
    run,
) -> None:
    """Image2StyleGAN morph: frames (1-t) w_A + t w_B (noise maps too when both have them), PNGs + an animation."""
    _run("morph", {"frames": frames, "animation": animation}, pairs, out_dir, common, run)


@mix_app("crossover")
def crossover(
    pairs: PairsArg,
    out_dir: OutOption,
    mask: CrossoverMask = None,
    layers: Annotated[
        Optional[str],
        typer.Option(
            "--layers",
            help="Layer crossover instead (no optimisation): the first k W+ layers from A (e.g. 4) or a list "
            "(0-3,6); the rest from B.",
        ),
    ] = None,
    *,
    common,
    run,
) -> None:
    """Image2StyleGAN++ crossover: A inside the mask, B outside, blended by one masked projection."""
    if layers is not None and mask is not None:
        raise InputError("--layers (layer crossover) and --mask (spatial crossover) exclude each other")
    _run("crossover", {"mask": mask, "layers": layers}, pairs, out_dir, common, run)


@mix_app("inpaint")
def inpaint(
    pairs: PairsArg,
    out_dir: OutOption,
    mask: InpaintMask = None,
    *,
    common,
    run,
) -> None:
    """Image2StyleGAN++ inpainting: project with the loss on the known pixels; the generator fills the hole.

    PAIRS.csv needs only column a. A mask PNG is 1 (white) where pixels are known; a shape names the hole.
    """
    _run("inpaint", {"mask": mask}, pairs, out_dir, common, run)


@mix_app("style")
def style(
    pairs: PairsArg,
    out_dir: OutOption,
    mask: StyleMask = None,
    style_weight: Annotated[
        float,
        typer.Option(
            "--style-weight",
            help="Weight of the Gram-matrix style loss. 0.2 restyles the region and keeps the rest; "
            "1.0 cost ~4 dB of the content outside it in 40 steps.",
        ),
    ] = 0.2,
    *,
    common,
    run,
) -> None:
    """Image2StyleGAN++ local style transfer: content A everywhere, B's texture (Gram matrices) inside the mask."""
    _run("style", {"mask": mask, "style_weight": style_weight}, pairs, out_dir, common, run)


@mix_app("expression")
def expression(
    pairs: PairsArg,
    out_dir: OutOption,
    alpha_layers: Annotated[
        Optional[str],
        typer.Option("--alpha-layers", help="W+ layers taken from B (the expression), e.g. 3,4 (default: 3,4)."),
    ] = None,
    alpha: Annotated[
        Optional[str],
        typer.Option("--alpha", help="Explicit per-layer alpha in [0, 1], one value per W+ layer, comma-separated."),
    ] = None,
    alpha_sweep: Annotated[
        bool, typer.Option("--alpha-sweep", help="One result per candidate alpha (single layers and adjacent pairs).")
    ] = False,
    *,
    common,
    run,
) -> None:
    """Expression transfer: appearance from A, expression from B (Yang & Lim: w = alpha w_B + (1 - alpha) w_A).

    With a `neutral` column (B's person without the expression): w_A + (w_B - w_neutral) (Image2StyleGAN).
    """
    if sum(x is not None and x is not False for x in (alpha_layers, alpha, alpha_sweep or None)) > 1:
        raise InputError("choose one of --alpha-layers, --alpha and --alpha-sweep")
    params = {"alpha_layers": alpha_layers, "alpha": alpha, "alpha_sweep": alpha_sweep}
    _run("expression", params, pairs, out_dir, common, run)
