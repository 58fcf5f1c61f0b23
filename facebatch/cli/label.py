"""`facebatch label`: attribute probabilities for images or latents -> a labels.csv fit-boundaries reads as is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from facebatch.cli.cluster_options import batch_command, report_run
from facebatch.cli.console import err, out
from facebatch.cli.fit_boundaries import split_names
from facebatch.errors import InputError

MAX_ERRORS_SHOWN = 3


def default_run_dir(labels_out: Path) -> Path:
    """Where the shard runner keeps its parts when --out-dir is not given: labels.csv -> labels_run/ beside it."""
    return labels_out.with_name(f"{labels_out.stem}_run")


@batch_command
def label(
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT_PATH",
            help="A folder of images (recursive, as `project`), or a `project`/`sample` run folder (its latents "
            "are rendered by their generator; --from source reads the original files instead).",
        ),
    ],
    labels_out: Annotated[Path, typer.Option("--out", "-o", help="The labels CSV to write (image_id + attributes).")],
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
        Optional[Path],
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
    from facebatch.nets.predictors import (
        collect_prompts,
        preflight,
        resolve_clip_predictor,
        resolve_predictor,
        select,
    )
    from facebatch.pipeline.atomic import atomic_write_bytes
    from facebatch.pipeline.ownership import claim_files, record_written
    from facebatch.pipeline.run_options import run_batch
    from facebatch.pipeline.rundir import RunDir
    from facebatch.stages.label import build_label_spec, labels_csv, plan_input, read_labels_table

    if not 0.0 <= threshold <= 1.0:
        raise InputError("--threshold must be between 0 and 1")
    if labels_out.exists() and labels_out.is_dir():
        raise InputError(f"-o {labels_out} is a folder; name the CSV file to write")
    run_dir = out_dir or default_run_dir(labels_out)
    claim_files(
        [labels_out],
        by=run_dir,
        overwrite=run.overwrite,
        way_out="pick another -o or move that file away (--overwrite replaces it, and labels every image again)",
    )
    run.cluster()  # a bad cluster combination is one line before anything is read
    if clip is None and (prompt or prompts_file):
        raise InputError("--prompt/--prompts need --clip MODEL (they are CLIP prompts)")
    if clip is not None and predictor is not None:
        raise InputError("--clip and --predictor are two ways to label: give one of them")
    if clip is not None:
        ref = resolve_clip_predictor(clip, collect_prompts(prompt or (), prompts_file))
    else:
        ref = resolve_predictor(predictor or "celeba-attrs")
    names = preflight(ref)  # the model loads once here: one that cannot is one line, not a failed shard per worker
    wanted = select(names, split_names(attrs)) if attrs else list(names)
    src = plan_input(input_path, source, exclude=[run_dir])
    spec = build_label_spec(
        source=src,
        predictor=ref,
        names=names,
        out_dir=run_dir,
        generator=generator,
        shard_size=shard_size,
        batch_size=batch_size,
    )
    summary = run_batch(spec, run, err)
    what = "rendered latents" if src.mode == "render" else "files"
    if run.dry_run:
        out.print(
            f"plan: {summary.images} {what} of {src.kind} {input_path} in {summary.shards} shards; "
            f"{summary.shards_skipped} done, {summary.images_todo} to label"
        )
        return
    if not summary.failures:
        frame = read_labels_table(run_dir)
        with RunDir(run_dir).lock():  # the CSV is this run's output: no other client may write it meanwhile
            claim_files(
                [labels_out], by=run_dir, overwrite=run.overwrite, way_out="pick another -o or move that file away"
            )
            atomic_write_bytes(labels_out, labels_csv(frame, wanted, binary, threshold))
            record_written([labels_out], by=run_dir)
        bad = frame[frame.status != "ok"]
        if not run.quiet:
            kind = f"0/1 at p >= {threshold:g}" if binary else "probabilities"
            out.print(
                f"{len(frame)} rows ({summary.images_processed} new) -> {labels_out}: {len(wanted)} attributes "
                f"({kind}) from {ref.name} on {what}; parts in {run_dir}"
            )
        if len(bad):
            err.print(
                f"{len(bad)} of {len(frame)} images could not be labelled: empty cells (unknown) in the CSV; "
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
