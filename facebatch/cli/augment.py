"""`facebatch augment`: edited images of every latent along boundaries and/or rendered through shifted
generators (NADA), sharded on Dask, resumable."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from facebatch.cli.cluster_options import batch_command, report_run
from facebatch.cli.console import err, out
from facebatch.cli.fit_boundaries import split_names
from facebatch.errors import InputError
from facebatch.ranges import finite_number

DEFAULT_STRENGTHS = "-3,-1.5,1.5,3"
# Lets `--strengths -3 -1.5 1.5 3` work: click reads only "-3" as the option's value and would take
# "-1.5" for an unknown option; with these settings the rest arrive in ctx.args, in order.
CONTEXT = {"ignore_unknown_options": True, "allow_extra_args": True}


def parse_strengths(text: str, extra: list[str]) -> list[float]:
    values = []
    for token in [*text.split(","), *extra]:
        for part in token.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                float(part)
            except ValueError:
                raise InputError(
                    f"unexpected argument {part!r} (strengths are numbers: --strengths -3 -1.5 1.5 3)"
                ) from None
            values.append(finite_number(part, "--strengths"))
    if not values:
        raise InputError("--strengths is empty")
    return values


@batch_command
def augment(
    ctx: typer.Context,
    latents: Annotated[
        str, typer.Option("--latents", "-l", help="OUT of `facebatch project`/`sample` (or its latents/).")
    ],
    out_dir: Annotated[
        str, typer.Option("--out", "-o", help="Output folder or URL: images/, manifest/, contact_sheets/.")
    ],
    attr: Annotated[
        Optional[str],
        typer.Option(
            "--attr",
            "-a",
            help="Boundary name(s) to edit along, comma-separated (CelebA names, e.g. Smiling, find the shipped ones).",
        ),
    ] = None,
    shift: Annotated[
        Optional[list[str]],
        typer.Option(
            "--shift",
            help="A shifted generator (e.g. from `facebatch nada`) to render every latent through, with and without "
            "the --attr edits; repeatable.",
        ),
    ] = None,
    boundaries: Annotated[
        Optional[str],
        typer.Option(
            "--boundaries",
            "-B",
            help="Boundaries file from fit-boundaries or directions (default: the ones shipped with a built-in "
            "generator, e.g. celeba64).",
        ),
    ] = None,
    strengths: Annotated[
        str,
        typer.Option(
            "--strengths",
            "-s",
            help="Edit sizes in units of the boundary's signed distance (latent units: its normal has length 1), "
            "relative by default (see --mode), e.g. -3 -1.5 1.5 3 or -3,-1.5,1.5,3.",
        ),
    ] = DEFAULT_STRENGTHS,
    condition: Annotated[
        Optional[str], typer.Option("--condition", "-c", help="Boundaries to hold fixed, comma-separated.")
    ] = None,
    layers: Annotated[
        Optional[str], typer.Option("--layers", help="W+ layers the edit may move, e.g. 0-7 (default: the boundary's).")
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="relative: each latent's distance += s (same change for every image) | "
            "absolute: distance = s (every image to one level, InterFaceGAN's W-code rule).",
        ),
    ] = "relative",
    generator: Annotated[
        Optional[str], typer.Option("--generator", "-g", help="Checkpoint (default: the one the latents' run used).")
    ] = None,
    noise: Annotated[
        str, typer.Option("--noise", help="auto (saved noise maps when the project run kept them) | saved | const.")
    ] = "auto",
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N ok latents (a preview).")] = None,
    sheet_rows: Annotated[int, typer.Option("--sheet-rows", help="Source images per contact sheet.")] = 16,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images rendered together on a worker.")] = 8,
    shard_size: Annotated[
        int, typer.Option("--shard-size", help="Edited images per shard (= per manifest part).")
    ] = 256,
    column: Annotated[str, typer.Option("--column", help="Latent column of the table.")] = "w",
    force: Annotated[
        bool, typer.Option("--force", help="Edit even if latents, boundaries and generator sha256 differ.")
    ] = False,
    *,
    run,
) -> None:
    """Render every ok latent moved along each --attr by each strength, and through each --shift generator
    (the latent as it is and each edit): PNGs, a manifest linking each image to its source and generator,
    contact sheets. Saved noise maps of the run are used for every render when present.

    A strength is a change of the boundary's signed distance (SVM units, as InterFaceGAN): the
    edited latent's distance is the original's + s (--mode relative) or exactly s (absolute),
    also with --condition (those boundaries' distances do not move) and --layers.
    """
    from facebatch.commands.augment import AugmentOptions
    from facebatch.commands.augment import augment as edit_and_render

    attributes = split_names(attr)
    if attr is not None and not attributes:
        raise InputError("--attr names no boundary")
    options = AugmentOptions(
        attributes=attributes,
        strengths=parse_strengths(strengths, list(ctx.args)),
        boundaries=boundaries,
        shifts=tuple(shift or ()),
        conditions=split_names(condition),
        layers=layers,
        mode=mode,
        generator=generator,
        noise=noise,
        limit=limit,
        sheet_rows=sheet_rows,
        batch_size=batch_size,
        shard_size=shard_size,
        column=column,
        force=force,
    )
    result = edit_and_render(latents, out_dir, options, run, console=err)
    summary = result.summary
    if result.shipped_with and not run.quiet:
        out.print(
            f"using the boundaries shipped with {result.shipped_with}: {result.boundaries}",
            highlight=False,
            soft_wrap=True,
        )
    if run.dry_run:
        out.print(
            f"plan: {summary.images} images ({len(attributes)} attribute(s) x {len(options.strengths)} strengths, "
            f"{len(options.shifts)} shifted generator(s)) in "
            f"{summary.shards} shards; {summary.shards_skipped} done, {summary.images_todo} to render; "
            f"noise {'saved' if result.spec.config.use_saved_noise else 'const'}"
        )
        return
    if not run.quiet:
        for name, path in result.sheets.items():
            out.print(f"contact sheet {name}: {path}")
    report_run(summary, run.quiet)
