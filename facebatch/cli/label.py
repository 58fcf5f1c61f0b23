"""`facebatch label`: attribute probabilities for images or latents -> a labels.csv fit-boundaries reads as is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from facebatch.cli.cluster_options import batch_command, report_run
from facebatch.cli.console import err, out
from facebatch.cli.fit_boundaries import split_names

MAX_ERRORS_SHOWN = 3


@batch_command
def label(
    input_path: Annotated[
        str,
        typer.Argument(
            metavar="INPUT_PATH",
            help="A folder of images (recursive, as `project`), or a `project`/`sample` run folder (its latents "
            "are rendered by their generator; --from source reads the original files instead).",
        ),
    ],
    labels_out: Annotated[
        str, typer.Option("--out", "-o", help="The labels CSV to write (image_id + attributes); a path or URL.")
    ],
    predictor: Annotated[
        Optional[str],
        typer.Option(
            "--predictor",
            "-p",
            help="Registry name (kind attribute-predictor) or predictor file (default: celeba-attrs).",
        ),
    ] = None,
    clip: Annotated[
        Optional[str],
        typer.Option(
            "--clip",
            help="Zero-shot labels from a CLIP instead of a predictor: a registry name (celeba-clip), ARCH:TAG "
            "(ViT-B-32:openai, downloaded once), ARCH:/path/weights or a facebatch-clip file. Needs prompts.",
        ),
    ] = None,
    prompt: Annotated[
        Optional[list[str]],
        typer.Option(
            "--prompt",
            metavar="NAME=POS|NEG",
            help="With --clip, repeatable: NAME='POSITIVE|NEGATIVE' (e.g. Smiling='a smiling person|a person'); "
            "NAME's probability is CLIP's softmax over the two texts, each wrapped in the model's templates.",
        ),
    ] = None,
    prompts_file: Annotated[
        Optional[Path],
        typer.Option(
            "--prompts",
            metavar="FILE",
            help="With --clip: a YAML file of prompts, one per line as NAME: [POSITIVE, NEGATIVE].",
        ),
    ] = None,
    out_dir: Annotated[
        Optional[str],
        typer.Option("--out-dir", help="Run folder for the resumable parts (default: <labels stem>_run beside -o)."),
    ] = None,
    attrs: Annotated[
        Optional[str], typer.Option("--attrs", "-a", help="Attributes to write, comma-separated (default: all).")
    ] = None,
    binary: Annotated[bool, typer.Option("--binary", help="Write 0/1 (p >= --threshold) instead of p.")] = False,
    threshold: Annotated[float, typer.Option("--threshold", help="Cut for --binary.")] = 0.5,
    source: Annotated[
        Optional[str],
        typer.Option("--from", help="For a run: render (default: what its latents render) | source (its files)."),
    ] = None,
    generator: Annotated[
        Optional[str],
        typer.Option("--generator", "-g", help="Generator for rendering (default: the one the run recorded)."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images rendered/predicted together.")] = 32,
    shard_size: Annotated[
        int, typer.Option("--shard-size", help="Images per shard (= per Parquet part; the unit of resume).")
    ] = 1024,
    *,
    run,
) -> None:
    """Label every image (or rendered latent) with an attribute predictor or CLIP prompts: a CSV for fit-boundaries.

    The CSV has image_id (the input run's ids, so it joins its latents) and one column per attribute:
    probabilities, or 0/1 with --binary. With --clip, the attributes are the prompts' names (zero-shot:
    a direction learnt from words). An image that cannot be read gets empty cells (unknown) and
    is counted in the summary; the parts (OUT-DIR/labels/part-*.parquet) keep its error. Reruns
    resume; --attrs/--binary/--threshold only change the CSV, never the work.
    """
    from facebatch.commands.label import LabelOptions
    from facebatch.commands.label import label as label_images

    options = LabelOptions(
        predictor=predictor,
        clip=clip,
        prompts=tuple(prompt or ()),
        prompts_file=prompts_file,
        run_dir=out_dir,
        attrs=split_names(attrs) if attrs else (),
        binary=binary,
        threshold=threshold,
        source=source,
        generator=generator,
        batch_size=batch_size,
        shard_size=shard_size,
    )
    result = label_images(input_path, labels_out, options, run, console=err)
    summary, run_dir = result.summary, result.spec.out_dir
    if run.dry_run:
        out.print(
            f"plan: {summary.images} {result.what} of {result.kind} {input_path} in {summary.shards} shards; "
            f"{summary.shards_skipped} done, {summary.images_todo} to label"
        )
        return
    if result.labels is not None:
        bad, rows = result.errors, summary.images
        if not run.quiet:
            kind = f"0/1 at p >= {threshold:g}" if binary else "probabilities"
            out.print(
                f"{rows} rows ({summary.images_processed} new) -> {labels_out}: {len(result.attributes)} attributes "
                f"({kind}) from {result.model} on {result.what}; parts in {run_dir}"
            )
        if len(bad):
            err.print(
                f"{len(bad)} of {rows} images could not be labelled: empty cells (unknown) in the CSV; "
                f"errors in {run_dir}/labels",
                highlight=False,
                soft_wrap=True,
            )
            if not run.quiet:
                for row in bad.head(MAX_ERRORS_SHOWN).itertuples(index=False):
                    err.print(f"  {row.image_id}: {row.error}", highlight=False, soft_wrap=True)
    else:
        err.print(f"{labels_out} not written: some shards failed", highlight=False)
    report_run(summary, run.quiet)
