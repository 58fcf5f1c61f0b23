"""`facebatch score` as a library call: read a run, join labels, measure, threshold, report.

Only rows with status ok are scored (error rows are counted and named in the report); a score
that is NaN for some ok rows (d_residual without a discriminator) is evaluated on the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from facebatch import __version__, sheets
from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.ownership import claim_files, record_written
from facebatch.pipeline.rundir import RunDir, folder_lock
from facebatch.scoring import plots
from facebatch.scoring.flags import FlagSummary, write_flags
from facebatch.scoring.ground_truth import JoinedLabels, join_labels
from facebatch.scoring.metrics import distribution, separation
from facebatch.scoring.polarity import (
    DEFAULT_PRIMARY,
    ERROR_LIKE,
    POSITIVE_CLASS,
    TASKS,
    ScoreSpec,
    canonical,
    spec_for,
)
from facebatch.scoring.report import REPORT_FILES, THRESHOLD_JSON, report_paths, write_report
from facebatch.scoring.runtable import RunTable, read_run
from facebatch.scoring.thresholds import RULES, Threshold, at_fpr, at_threshold, best_f1, fpr_key


@dataclass
class ScoreOptions:
    run: Path
    report_dir: Path | None = None
    scores: Sequence[str] = ()  # the first is the primary score; every other known score is compared too
    task: str | None = None  # anomaly | fake; None: from the threshold file or the label column's name
    higher_is: str | None = None  # overrides the direction of the scores named in `scores`
    labels: Path | None = None
    label_column: str | None = None
    positive_label: str | None = None
    top_k: int = 16
    n_bootstrap: int = 1000
    seed: int = 0
    target_fpr: float = 0.05
    threshold_rule: str = "best-f1"
    fit_threshold: bool = False
    threshold: float | None = None
    threshold_file: Path | None = None
    flags_out: Path | None = None
    overwrite: bool = False


@dataclass
class ScoreResult:
    metrics: dict
    report_dir: Path
    files: list[Path] = field(default_factory=list)
    flags: FlagSummary | None = None


def _validate(opts: ScoreOptions) -> None:
    chosen = [
        name
        for name, on in (
            ("--threshold", opts.threshold is not None),
            ("--fit-threshold", opts.fit_threshold),
            ("--threshold-from", opts.threshold_file is not None),
        )
        if on
    ]
    if len(chosen) > 1:
        raise InputError(f"{' and '.join(chosen)} exclude each other: give one")
    if opts.fit_threshold and opts.labels is None:
        raise InputError("--fit-threshold needs --labels (a labelled validation run)")
    if not 0.0 < opts.target_fpr < 1.0:
        raise InputError(f"--target-fpr must be between 0 and 1, not {opts.target_fpr}")
    if opts.threshold_rule not in RULES:
        raise InputError(f"--threshold-rule must be one of {', '.join(RULES)}, not {opts.threshold_rule!r}")
    if opts.n_bootstrap < 0 or opts.top_k < 0:
        raise InputError("--bootstrap and --top-k must be >= 0")
    if opts.task is not None and opts.task not in TASKS:
        raise InputError(f"--task must be one of {', '.join(TASKS)}, not {opts.task!r}")
    if opts.threshold is not None and not np.isfinite(opts.threshold):
        raise InputError("--threshold must be a finite number")


def _task(opts: ScoreOptions, fixed: Threshold | None, labels: JoinedLabels | None) -> tuple[str, str]:
    if fixed is not None:
        if opts.task and opts.task != fixed.task:
            raise InputError(f"--task {opts.task} contradicts the threshold file's task {fixed.task}")
        return fixed.task, f"from {opts.threshold_file}"
    if opts.task:
        return opts.task, "--task"
    if labels is not None and "fake" in labels.column.lower():
        return "fake", f"from the label column name {labels.column!r}; set --task to change"
    return "anomaly", "default; pass --task fake for fake detection"


def _specs(
    run: RunTable, ok: pd.DataFrame, opts: ScoreOptions, task: str, fixed: Threshold | None
) -> dict[str, ScoreSpec]:
    """Primary score first, then every other score the run has; directions resolved."""

    def has_values(name: str) -> bool:
        return bool(np.isfinite(ok[name].to_numpy(dtype=np.float64)).any())

    requested = list(dict.fromkeys(canonical(s) for s in opts.scores))
    if fixed is not None:
        if requested and requested[0] != fixed.score:
            raise InputError(f"--score {requested[0]} contradicts the threshold file's score {fixed.score}")
        if opts.higher_is and opts.higher_is != fixed.higher_is:
            raise InputError(f"--higher-is {opts.higher_is} contradicts the threshold file ({fixed.higher_is})")
        requested = [fixed.score] + [s for s in requested if s != fixed.score]
    for name in requested:
        if name not in run.numeric_columns:
            raise InputError(
                f"the run has no numeric score column {name!r} (has: {', '.join(run.numeric_columns) or 'none'})"
            )
        if not has_values(name):
            raise InputError(
                f"score {name!r} has no finite value in the run's ok rows (d_residual needs a generator with D)"
            )
    available = [name for name in ERROR_LIKE if name in run.numeric_columns and has_values(name)]
    if not requested and not available:
        raise InputError(
            f"the run has no reconstruction scores ({', '.join(ERROR_LIKE)}): is it a `facebatch project` output? "
            f"(numeric columns: {', '.join(run.numeric_columns) or 'none'})"
        )
    primary = requested[0] if requested else (DEFAULT_PRIMARY if DEFAULT_PRIMARY in available else available[0])
    overridden = set(requested or [primary])
    direction = fixed.higher_is if fixed is not None else opts.higher_is
    names = list(dict.fromkeys([primary, *requested, *available]))
    return {name: spec_for(name, task, direction if name in overridden else None) for name in names}


def _evaluate_score(spec: ScoreSpec, values: np.ndarray, y: np.ndarray | None, opts: ScoreOptions) -> dict:
    finite = np.isfinite(values)
    entry = {
        **spec.to_dict(),
        "n": int(finite.sum()),
        "n_missing": int((~finite).sum()),
        "distribution": distribution(values[finite]),
    }
    if y is None:
        return entry
    mask = finite & ~np.isnan(y)
    yy = y[mask].astype(int)
    entry["labelled"] = int(mask.sum())
    if len(np.unique(yy)) < 2:
        entry["note"] = "labelled rows with a value hold one class only: not evaluated"
        return entry
    oriented = spec.orient(values[mask])
    entry.update(separation(yy, oriented, opts.n_bootstrap, opts.seed))
    entry["operating_points"] = {
        "best-f1": best_f1(yy, oriented).to_dict(spec),
        fpr_key(opts.target_fpr): at_fpr(yy, oriented, opts.target_fpr).to_dict(spec),
    }
    return entry


def _labels_summary(labels: JoinedLabels, y_ok: np.ndarray) -> dict:
    known = ~np.isnan(y_ok)
    return {
        **labels.summary(),
        "labelled_ok_rows": int(known.sum()),
        "positives": int((y_ok[known] == 1).sum()),
        "negatives": int((y_ok[known] == 0).sum()),
    }


def _check_primary_labels(values: np.ndarray, y: np.ndarray, positive_class: str) -> None:
    mask = np.isfinite(values) & ~np.isnan(y)
    classes = np.unique(y[mask])
    if len(classes) < 2:
        which = "none" if len(classes) == 0 else (positive_class if classes[0] == 1 else f"not {positive_class}")
        raise InputError(
            f"the labels that join the run's ok rows give one class only ({int(mask.sum())} rows, all {which}): "
            "AUROC and AP need both classes"
        )


def _top_k(run: RunTable, ok: pd.DataFrame, spec: ScoreSpec, y: np.ndarray | None, k: int) -> tuple[list[dict], list]:
    values = ok[spec.name].to_numpy(dtype=np.float64)
    order = [i for i in np.argsort(-spec.orient(values), kind="stable") if np.isfinite(values[i])][:k]
    listed, rows = [], []
    for rank, i in enumerate(order, 1):
        image_id = str(ok["image_id"].iloc[i])
        label = None if y is None or np.isnan(y[i]) else int(y[i])
        listed.append({"rank": rank, "image_id": image_id, spec.name: float(values[i]), "label": label})
        shown = image_id if len(image_id) <= 28 else "..." + image_id[-25:]
        caption = f"#{rank} {shown}\n{spec.name} {values[i]:.4g}"
        if label is not None:
            caption += f"\n{spec.positive_class if label else 'not ' + spec.positive_class}"
        source = ok["source_path"].iloc[i] if "source_path" in ok else None
        rows.append(
            sheets.SheetRow(
                image_id,
                caption,
                storage.location(source) if isinstance(source, str) else None,
                run.reconstruction_path(image_id),
            )
        )
    return listed, rows


def _threshold(
    opts: ScoreOptions,
    fixed: Threshold | None,
    spec: ScoreSpec,
    task: str,
    run: RunTable,
    y,
    values,
    points: dict | None,
) -> tuple[Threshold | None, dict | None]:
    """The threshold to apply (if any) and the labelled operating point to show.

    `points` are the primary score's operating points from _evaluate_score (None without labels).
    """
    rule = "best-f1" if opts.threshold_rule == "best-f1" else fpr_key(opts.target_fpr)
    if fixed is not None:
        threshold = fixed
    elif opts.threshold is not None:
        threshold = Threshold(spec.name, float(opts.threshold), spec.higher_is, task, "given")
    elif opts.fit_threshold:
        threshold = Threshold(spec.name, points[rule]["threshold"], spec.higher_is, task, rule, str(run.root))
    else:
        threshold = None
    if y is None:
        return threshold, None
    if threshold is None:
        name = "best F1" if rule == "best-f1" else f"highest TPR with FPR <= {opts.target_fpr:g}"
        return threshold, {"name": name, **points[rule]}
    mask = np.isfinite(values) & ~np.isnan(y)
    point = at_threshold(y[mask].astype(int), spec.orient(values[mask]), spec.orient(threshold.value))
    return threshold, {"name": f"at the applied threshold ({threshold.rule})", **point.to_dict(spec)}


REPORT_WAY_OUT = "pass another --report folder, or --overwrite to replace it"


def evaluate(opts: ScoreOptions) -> ScoreResult:
    _validate(opts)
    run = read_run(opts.run)
    # OUT/report is the run's own folder; a report folder elsewhere may hold a user's files.
    own = RunDir(run.root).report_dir
    report_dir = storage.location(opts.report_dir) if opts.report_dir is not None else own
    foreign = opts.report_dir is not None and report_dir.resolve() != own.resolve()
    if foreign:
        claim_files(
            [report_dir / name for name in REPORT_FILES], by=run.root, overwrite=opts.overwrite, way_out=REPORT_WAY_OUT
        )
    fixed = Threshold.load(opts.threshold_file) if opts.threshold_file is not None else None
    ok_mask = run.ok
    ok = run.frame[ok_mask].reset_index(drop=True)
    if len(ok) == 0:
        raise InputError(f"the run has no rows with status ok ({len(run.frame)} rows, all errors): nothing to score")
    labels = None
    if opts.labels is not None:
        labels = join_labels(
            opts.labels, run.frame["image_id"].astype(str).tolist(), opts.label_column, opts.positive_label
        )
    y = labels.y[ok_mask] if labels is not None else None
    task, task_source = _task(opts, fixed, labels)
    specs = _specs(run, ok, opts, task, fixed)
    primary = next(iter(specs.values()))
    primary_values = ok[primary.name].to_numpy(dtype=np.float64)
    if y is not None:
        _check_primary_labels(primary_values, y, POSITIVE_CLASS[task])

    scores = {name: _evaluate_score(spec, ok[name].to_numpy(dtype=np.float64), y, opts) for name, spec in specs.items()}
    points = scores[primary.name].get("operating_points")  # both classes: checked above
    threshold, point = _threshold(opts, fixed, primary, task, run, y, primary_values, points)
    flags = write_flags(run, threshold, opts.flags_out, opts.overwrite) if threshold is not None else None
    top, sheet_rows = _top_k(run, ok, primary, y, opts.top_k)

    notes = [
        f"{run.n_error} row(s) with status error were skipped (not scored)."
        if run.n_error
        else "No row had status error."
    ]
    notes += [
        f"{name}: {s['n_missing']} ok row(s) without a finite value were left out."
        for name, s in scores.items()
        if s["n_missing"]
    ]
    if "perceptual_backend" in ok and ok["perceptual_backend"].notna().any():
        backends = ", ".join(sorted(map(str, ok["perceptual_backend"].dropna().unique())))
        notes.append(f"perceptual distance backend: {backends}.")
    notes.append(
        "Targets in the contact sheet are source images centre-cropped to the reconstruction's size; "
        "runs projected with --align saw the aligned face instead."
    )
    if task == "fake":
        notes.append(
            "Reconstruction error also tracks how simple an image is: project real and generated images with "
            "the same preset and preprocessing, and report AUROC/AP rather than accuracy at an uncalibrated cut."
        )
    metrics = {
        "facebatch": __version__,
        "source": {"run": str(run.root), "table": str(run.table_path), "generator_sha256": run.generator_sha256()},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "task": task,
        "task_source": task_source,
        "positive_class": POSITIVE_CLASS[task],
        "rows": {"total": len(run.frame), "ok": int(ok_mask.sum()), "skipped_error": run.n_error},
        "labels": _labels_summary(labels, y) if labels is not None else None,
        "primary_score": primary.name,
        "scores": scores,
        "bootstrap": {
            "n_resamples": opts.n_bootstrap,
            "seed": opts.seed,
            "level": 0.95,
            "method": "percentile, stratified (each class resampled on its own)",
        },
        "operating_point": point,
        "threshold": threshold.to_dict() if threshold is not None else None,
        "flags": flags.to_dict() if flags is not None else None,
        "top_k": top,
        "notes": notes,
    }
    figures = _figures(ok, specs, y, threshold, point, primary, sheet_rows)
    with folder_lock(report_dir):  # two scores writing one report would interleave its files
        if foreign:
            paths = report_paths(report_dir, figures)
            claim_files(paths, by=run.root, overwrite=opts.overwrite, way_out=REPORT_WAY_OUT)
        files = write_report(report_dir, metrics, figures)
        if opts.fit_threshold and threshold is not None:
            threshold.save(report_dir / THRESHOLD_JSON)
            files.append(report_dir / THRESHOLD_JSON)
        record_written(files, by=run.root)
    return ScoreResult(metrics=metrics, report_dir=report_dir, files=files, flags=flags)


def _figures(ok, specs, y, threshold, point, primary, sheet_rows) -> dict[str, bytes]:
    figures: dict[str, bytes] = {}
    class_names = (f"not {primary.positive_class}", primary.positive_class)
    panels, curves = [], {}
    for name, spec in specs.items():
        values = ok[name].to_numpy(dtype=np.float64)
        keep = np.isfinite(values) & (~np.isnan(y) if y is not None else True)
        cut = (
            threshold.value
            if threshold is not None and name == threshold.score
            else (point["threshold"] if point is not None and name == primary.name else None)
        )
        labels = y[keep].astype(int) if y is not None else None
        panels.append(plots.Panel(spec, values[keep], labels, cut))
        if labels is not None and len(np.unique(labels)) == 2:  # the primary always has both (checked)
            curves[name] = (labels, spec.orient(values[keep]))
    figures["histograms"] = plots.histograms(panels, class_names)
    if y is not None:
        figures["roc"] = plots.roc(curves, primary.name, (point["fpr"], point["tpr"]))
        figures["pr"] = plots.precision_recall(curves, primary.name, (point["tpr"], point["precision"]))
    if sheet_rows:
        figures["contact_sheet"] = sheets.reconstruction_sheet(sheet_rows)
    return figures
