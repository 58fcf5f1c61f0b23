"""`label`: attribute probabilities for images or a run's latents -> a labels CSV that fit-boundaries reads as is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.run_options import BatchResult, RunOptions, run_batch


@dataclass(frozen=True)
class LabelOptions:
    predictor: str | None = None  # registry name or predictor file (None: celeba-attrs, unless clip is given)
    clip: str | None = None  # zero-shot labels from a CLIP instead (needs prompts)
    prompts: Sequence[str] = ()  # NAME=POSITIVE|NEGATIVE, with clip
    prompts_file: str | Path | None = None  # a YAML file of prompts, with clip
    run_dir: str | Path | None = None  # the resumable parts (None: <CSV stem>_run beside the CSV)
    attrs: Sequence[str] = ()  # attributes to write (empty: all)
    binary: bool = False  # 0/1 at p >= threshold instead of p
    threshold: float = 0.5
    source: str | None = None  # for a run: render (default) | source (its original files)
    generator: str | Path | None = None  # for rendering (None: the one the run recorded)
    batch_size: int = 32
    shard_size: int = 1024


@dataclass
class LabelResult(BatchResult):
    labels: Path | None = None  # the CSV, when every shard finished
    attributes: list[str] = field(default_factory=list)  # its columns after image_id
    model: str = ""  # the predictor or CLIP that labelled
    what: str = ""  # "files" or "rendered latents"
    kind: str = ""  # the input: a folder of images, a project run, a sample run
    errors: object = None  # DataFrame of the rows that could not be labelled (image_id, error)


def default_run_dir(labels_out: Path) -> Path:
    """Where the parts go when no run folder is given: labels.csv -> labels_run/ beside it."""
    labels_out = storage.location(labels_out)
    return labels_out.with_name(f"{labels_out.stem}_run")


def label(
    input_path: str | Path,
    labels_out: str | Path,
    options: LabelOptions = LabelOptions(),
    run: RunOptions = RunOptions(),
    console=None,
) -> LabelResult:
    """Label every image under `input_path` (or every latent of a project/sample run, rendered by its generator)
    with an attribute predictor or CLIP prompts, and write the labels CSV (image_id + one column per attribute,
    empty cells for images that could not be labelled). Reruns resume; attrs/binary/threshold only change the
    CSV, never the work."""
    from facebatch.nets.predictors import collect_prompts, preflight, resolve_clip_predictor, resolve_predictor, select
    from facebatch.pipeline.atomic import atomic_write_bytes
    from facebatch.pipeline.ownership import claim_files, record_written
    from facebatch.pipeline.rundir import RunDir
    from facebatch.stages.label import build_label_spec, labels_csv, plan_input, read_labels_table

    run.configure_storage()
    o, labels_out = options, storage.location(labels_out, "-o")
    if not 0.0 <= o.threshold <= 1.0:
        raise InputError("--threshold must be between 0 and 1")
    if labels_out.is_dir():
        raise InputError(f"-o {labels_out} is a folder; name the CSV file to write")
    run_dir = storage.location(o.run_dir) if o.run_dir is not None else default_run_dir(labels_out)
    claim_files(
        [labels_out],
        by=run_dir,
        overwrite=run.overwrite,
        way_out="pick another -o or move that file away (--overwrite replaces it, and labels every image again)",
    )
    run.cluster()  # a bad cluster combination is one line before anything is read
    if o.clip is None and (o.prompts or o.prompts_file):
        raise InputError("--prompt/--prompts need --clip MODEL (they are CLIP prompts)")
    if o.clip is not None and o.predictor is not None:
        raise InputError("--clip and --predictor are two ways to label: give one of them")
    if o.clip is not None:
        ref = resolve_clip_predictor(o.clip, collect_prompts(o.prompts, o.prompts_file))
    else:
        ref = resolve_predictor(o.predictor or "celeba-attrs")
    names = preflight(ref)  # the model loads once here: one that cannot is one line, not a failed shard per worker
    wanted = select(names, list(o.attrs)) if o.attrs else list(names)
    src = plan_input(storage.location(input_path, "input"), o.source, exclude=[run_dir])
    spec = build_label_spec(
        source=src,
        predictor=ref,
        names=names,
        out_dir=run_dir,
        generator=o.generator,
        shard_size=o.shard_size,
        batch_size=o.batch_size,
    )
    summary = run_batch(spec, run, console)
    what = "rendered latents" if src.mode == "render" else "files"
    result = LabelResult(summary, spec, None, wanted, ref.name, what, src.kind)
    if run.dry_run or summary.failures:
        return result
    frame = read_labels_table(run_dir)
    with RunDir(run_dir).lock():  # the CSV is this run's output: no other client may write it meanwhile
        claim_files([labels_out], by=run_dir, overwrite=run.overwrite, way_out="pick another -o or move that file away")
        atomic_write_bytes(labels_out, labels_csv(frame, wanted, o.binary, o.threshold))
        record_written([labels_out], by=run_dir)
    result.labels = labels_out
    result.errors = frame.loc[frame.status != "ok", ["image_id", "error"]].reset_index(drop=True)
    return result
