"""The `label` stage: images (files, or latents rendered by their generator) -> attribute probabilities.

The probabilities come from any `facebatch.nets.predictors` Predictor: a trained attribute network, or a
CLIP with one prompt pair per attribute (zero-shot); the rows are the same either way.

One row per input: ``image_id``, ``source``, ``status``, ``error``, then one float64 column per
attribute of the predictor (all of them: ``--attrs``, ``--binary`` and ``--threshold`` only shape the
CSV written from the parts, so changing them never redoes work). Inputs:

- files (a folder discovered as `project` discovers it, or `--from source` on a run): read at the
  predictor's resolution with facebatch's one image loader; an unreadable file is an error row;
- latents (a `project` or `sample` run, default): rendered in batches by the run's generator with
  constant noise, then predicted; a latent that is an error row in the run stays an error row here.

The rows keep the input run's ``image_id``, so the CSV joins that run's latents in `fit-boundaries`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from facebatch.errors import InputError
from facebatch.nets.predictors import PredictorRef
from facebatch.pipeline import storage
from facebatch.pipeline.records import JsonRecord, RunRecord, WorkerSetup, record_field
from facebatch.pipeline.rundir import IMAGES, LABELS, LATENTS, RUN_FILE, RunDir
from facebatch.pipeline.runner import StageSpec
from facebatch.pipeline.shard_task import ShardInfo

STAGE, TABLE = "label", LABELS
RESERVED = ("image_id", "source", "status", "error")
RENDER, SOURCE = "render", "source"


def label_schema(names: Sequence[str]) -> pa.Schema:
    return pa.schema(
        [
            pa.field("image_id", pa.string()),
            pa.field("source", pa.string()),  # the file read, or "<latents part>#<row>" for a rendered latent
            pa.field("status", pa.string()),
            pa.field("error", pa.string()),
            *[pa.field(n, pa.float64()) for n in names],
        ]
    )


@dataclass
class LabelInput:
    """What INPUT turned out to be, and the items to label."""

    kind: str  # "folder" | "project" | "sample"
    mode: str  # RENDER | SOURCE (a folder is always SOURCE)
    items: list[dict]
    root: Path
    index: Any = None  # LatentIndex when rendering
    generator: str | None = None  # the run's generator name, for messages


def find_run(path: Path) -> RunDir | None:
    """A `project`/`sample` run folder (holding _run.json and latents/), also when given its latents/ folder."""
    path = storage.location(path, "input")
    for root in (path, path.parent):
        if (root / RUN_FILE).is_file() and (root / LATENTS).is_dir() and (root == path or path.name == LATENTS):
            return RunDir(root, LATENTS)
    return None


def plan_input(path: Path, source: str | None, exclude: Sequence[Path] = ()) -> LabelInput:
    """Items from INPUT: a folder of images, a `project` run or a `sample` run; one-line errors otherwise."""
    from facebatch.pipeline.discover import discover_images, is_image_name, no_images

    path = storage.location(path, "input")
    if source not in (None, RENDER, SOURCE):
        raise InputError(f"--from must be render or source, not {source!r}")
    if not path.exists():
        raise InputError(f"no such folder or image: {path}")
    run = find_run(path)
    if run is None:
        if path.is_file() and not is_image_name(path.name):
            raise InputError(f"{path} is neither an image nor a `facebatch project`/`sample` run folder")
        if source == RENDER:
            raise InputError(f"--from render needs a `project` or `sample` run folder; {path} is images")
        items = discover_images(path, exclude=exclude)
        if not items:
            if (path / LATENTS).is_dir():
                raise InputError(f"{path} holds latents/ but no {RUN_FILE}: not a run facebatch can render")
            raise InputError(f"{path} is neither a folder of images nor a `project`/`sample` run: {no_images(path)}")
        return LabelInput("folder", SOURCE, items, path)
    record = run.read_run() or RunRecord()
    stage = record.stage
    if stage not in ("project", "sample"):
        raise InputError(f"{run.root} is a '{stage}' run; label reads images, `project` runs or `sample` runs")
    return _run_items(run, stage, record, source or RENDER)


def _run_items(run: RunDir, stage: str, record: RunRecord, mode: str) -> LabelInput:
    from facebatch.pipeline.latents import open_latents

    latents = open_latents(run.root)
    frame = latents.scalars(["image_id"] + (["source_path"] if stage == "project" else []))
    # The run's facts name the generator; else its config does (a project's as a record, a sample's by name).
    generator = record.metadata.get("generator") or (record.config.get("generator") or {})
    generator = generator.get("name") if isinstance(generator, dict) else generator
    if mode == SOURCE:
        if stage == "sample" and not record.config.get("images", True):
            raise InputError(
                f"{run.root} was sampled with --no-images: there are no files to read; "
                "leave out --from source to render its latents"
            )
        items = []
        for row in frame.itertuples(index=False):
            file = row.source_path if stage == "project" else str(run.folder(IMAGES) / row.image_id)
            items.append({"image_id": str(row.image_id), "path": str(file) if file else ""})
        return LabelInput(stage, SOURCE, items, run.root, generator=generator)
    index = latents.index("w")
    items = []
    for r, row in enumerate(frame.itertuples(index=False)):
        if index.ok[r]:
            part = str(index.files[index.file_of_row[r]].resolve())
            items.append({"image_id": str(row.image_id), "part": part, "row": int(index.row_in_file[r])})
        else:
            why = row.error or "no latent"
            items.append({"image_id": str(row.image_id), "error": f"no latent to render ({stage} row: {why})"})
    return LabelInput(stage, RENDER, items, run.root, index=index, generator=generator)


@dataclass(frozen=True)
class PredictorFacts(JsonRecord):
    """The predictor (or CLIP) that labels, as the run's config records it."""

    name: str
    kind: str
    sha256: str
    options: dict | None = record_field(None, omit_none=True)  # a CLIP's prompts: other prompts are other work

    def ref(self, path: str) -> PredictorRef:
        return PredictorRef(Path(path), self.name, self.kind, self.sha256, self.options or {})


@dataclass(frozen=True)
class LabelConfig(JsonRecord):
    """What decides a label run's rows (hashed: other values are another run)."""

    input: str  # the folder or run labelled
    input_kind: str  # folder | project | sample
    mode: str = record_field(json_name="from")  # RENDER (latents through their generator) | SOURCE (files)
    predictor: PredictorFacts = record_field()
    attributes: tuple[str, ...] = record_field()  # every attribute the predictor gives, in its order
    # Rendered latents only (a run of files records neither):
    generator_sha256: str | None = record_field(None, omit_none=True)
    noise_mode: str | None = record_field(None, omit_none=True)


@dataclass(frozen=True)
class LabelRuntime(JsonRecord):
    """What a worker needs besides the config, free to change on resume."""

    predictor_path: str
    batch_size: int  # images rendered and predicted together
    generator_path: str | None = record_field(None, omit_none=True)  # rendered latents only


def build_label_spec(
    *,
    source: LabelInput,
    predictor: PredictorRef,
    names: Sequence[str],
    out_dir: Path,
    generator: str | None = None,
    shard_size: int = 1024,
    batch_size: int = 32,
) -> StageSpec:
    """The stage as the runner sees it; `names` are the predictor's attribute names (all of them)."""
    from facebatch.pipeline.latents import check_generator, resolve_generator

    if shard_size < 1 or batch_size < 1:
        raise InputError("--shard-size and --batch-size must be at least 1")
    from facebatch.nets.predictors import FORMULA_STARTS

    formula = [n for n in names if {str(n)[:1], str(n).strip()[:1]} & set(FORMULA_STARTS)]
    if formula:  # a predictor file names its attributes: the labels CSV header must not become a formula
        raise InputError(
            f"predictor {predictor.name} names an attribute {formula[0]!r}, which a spreadsheet opening the labels "
            "CSV would run as a formula; rename it in the predictor file"
        )
    clash = [n for n in names if n in RESERVED]
    if clash:
        raise InputError(f"predictor {predictor.name} names an attribute {clash[0]!r}, a column label reserves")
    ids = [it["image_id"] for it in source.items]
    if len(set(ids)) != len(ids):
        raise InputError(f"{source.root} has repeated image_ids; label needs one row per image")
    config = LabelConfig(
        input=storage.resolved(source.root),
        input_kind=source.kind,
        mode=source.mode,
        predictor=PredictorFacts(predictor.name, predictor.kind, predictor.sha256, predictor.options or None),
        attributes=tuple(names),
    )
    runtime = LabelRuntime(predictor_path=str(predictor.path), batch_size=int(batch_size))
    metadata: dict = {"predictor": predictor.name, "predictor_sha256": predictor.sha256}
    if source.mode == RENDER:
        if not any("part" in it for it in source.items):
            raise InputError(f"{source.root} has no ok latents to render")
        path, sha = resolve_generator(generator, source.index)
        check_generator(sha, source.index, [], force=False)
        config = dataclasses.replace(config, generator_sha256=sha, noise_mode="const")
        runtime = dataclasses.replace(runtime, generator_path=str(path))
        metadata.update(generator_sha256=sha)
    return StageSpec(
        name=STAGE,
        out_dir=storage.location(out_dir),
        table=TABLE,
        items=source.items,
        shard_size=shard_size,
        config=config,
        setup=setup_label,
        process=process_label,
        runtime=runtime,
        schema=label_schema(names),
        metadata=metadata,
    )


@dataclass
class LabelState:
    predictor: Any
    G: Any  # the run's generator when latents are rendered, else None
    device: Any
    attributes: tuple[str, ...]
    batch_size: int


def setup_label(setup: WorkerSetup[LabelConfig, LabelRuntime]) -> LabelState:
    from facebatch.nets.predictors import load
    from facebatch.stages.common import torch_device, worker_networks

    cfg, rt = setup.config, setup.runtime
    device = torch_device(setup)
    ref = cfg.predictor.ref(rt.predictor_path)
    predictor = load(ref, device=device)
    if tuple(predictor.names) != cfg.attributes:
        raise RuntimeError(f"{ref.path} predicts other attributes than the run recorded")
    G = None
    if cfg.mode == RENDER:
        nets, _ = worker_networks(setup, rt.generator_path, cfg.generator_sha256, with_d=False)
        G = nets.G.eval()
    return LabelState(predictor, G, device, cfg.attributes, rt.batch_size)


def _predict(state: LabelState, images) -> np.ndarray:
    import torch

    with torch.no_grad():
        return state.predictor.probs(images.to(state.device)).float().cpu().numpy().astype(np.float64)


def process_label(state: LabelState, items: list[dict], info: ShardInfo) -> pa.Table:
    import torch

    from facebatch.pipeline.images import load_image
    from facebatch.pipeline.latents import read_rows

    names = state.attributes
    n, batch = len(items), state.batch_size
    probs = np.full((n, len(names)), np.nan)
    errors: list[str | None] = [it.get("error") for it in items]
    sources = [it.get("path") or (f"{it['part']}#{it['row']}" if "part" in it else None) for it in items]

    files = [k for k, it in enumerate(items) if "path" in it]
    for start in range(0, len(files), batch):
        loaded, ks = [], []
        for k in files[start : start + batch]:
            try:
                if not items[k]["path"]:
                    raise FileNotFoundError("the run recorded no source file for this row")
                img, _ = load_image(items[k]["path"], state.predictor.resolution)
                loaded.append(img)
                ks.append(k)
            except Exception as exc:  # unreadable, missing, a decompression bomb: an error row
                errors[k] = f"{type(exc).__name__}: {exc}"
        if ks:
            probs[ks] = _predict(state, torch.stack(loaded))

    render = [k for k, it in enumerate(items) if "part" in it]
    if render:
        parts = sorted({items[k]["part"] for k in render})
        ws = read_rows(
            [storage.location(p) for p in parts],
            "w",
            (state.G.num_ws, state.G.w_dim),
            np.array([parts.index(items[k]["part"]) for k in render]),
            np.array([items[k]["row"] for k in render]),
        )
        for start in range(0, len(render), batch):
            ks = render[start : start + batch]
            try:
                with torch.no_grad():
                    w = torch.from_numpy(ws[start : start + len(ks)]).to(state.device)
                    img = state.G.synthesis(w, noise_mode="const")
                probs[ks] = _predict(state, img)
            except Exception as exc:  # a failed batch becomes error rows; the shard goes on
                for k in ks:
                    errors[k] = f"{type(exc).__name__}: {exc}"

    ok = [e is None for e in errors]
    probs[~np.array(ok, dtype=bool)] = np.nan
    return pa.Table.from_arrays(
        [
            pa.array([it["image_id"] for it in items]),
            pa.array(sources, pa.string()),
            pa.array(["ok" if o else "error" for o in ok]),
            pa.array(errors, pa.string()),
            *[pa.array(probs[:, j], pa.float64(), from_pandas=True) for j in range(len(names))],
        ],
        schema=label_schema(names),
    )


def read_labels_table(out_dir: Path, n_parts: int | None = None):
    """The run's rows as a DataFrame in item order (parts are written in item order)."""
    from facebatch.pipeline.table import read_parts_frame

    parts = sorted(RunDir(storage.location(out_dir), TABLE).table_dir.glob("part-*.parquet"))
    return read_parts_frame(parts[:n_parts] if n_parts is not None else parts)


def labels_csv(frame, attrs: Sequence[str], binary: bool = False, threshold: float = 0.5) -> bytes:
    """image_id + one column per attribute; error rows get empty cells (unknown to fit-boundaries)."""
    import io

    import pandas as pd

    out = pd.DataFrame({"image_id": frame["image_id"]})
    for a in attrs:
        values = frame[a].to_numpy(dtype=np.float64)
        if binary:
            cells = np.where(values >= threshold, "1", "0").astype(object)
        else:
            cells = np.array([f"{v:.6g}" for v in values], dtype=object)
        cells[np.isnan(values)] = ""
        out[a] = cells
    buf = io.StringIO()
    out.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode()
