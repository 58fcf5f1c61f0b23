"""`facebatch score`: how well reconstruction scores separate anomalous or fake images, with pictures."""

from __future__ import annotations

from contextlib import nullcontext
from enum import Enum
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table

from facebatch.cli.cluster_options import StorageOption
from facebatch.cli.console import err, out

# scikit-learn, scipy and matplotlib load inside the command, not when `facebatch --help` builds the app.


class Task(str, Enum):
    anomaly = "anomaly"
    fake = "fake"


class HigherIs(str, Enum):
    positive = "positive"
    negative = "negative"


class Rule(str, Enum):
    best_f1 = "best-f1"
    fpr = "fpr"


def _value(entry: dict) -> list[str]:
    ci = entry.get("ci95")
    return [f"{entry['value']:.3f}", f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else "-"]


def _key_table(m: dict) -> Table:
    """One row per score; an arrow says which way is positive (metrics.json spells it out)."""
    labelled = m["labels"] is not None
    table = Table(
        caption=f"{m['task']} detection; ↑: higher = more {m['positive_class']}, ↓: lower = more {m['positive_class']}",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    heads = ["score", "n"]
    heads += (
        ["AUROC", "95% CI", "AP", "95% CI", f"TPR@{m['config']['target_fpr']:g}", "F1"]
        if labelled
        else ["q0.05", "median", "q0.95"]
    )
    for i, head in enumerate(heads):
        table.add_column(head, justify="left" if i == 0 else "right", no_wrap=True)
    from facebatch.scoring.thresholds import fpr_key

    key = fpr_key(m["config"]["target_fpr"])
    for name, s in m["scores"].items():
        arrow = "↑" if s["higher_is"] == "positive" else "↓"
        if labelled and "auroc" in s:
            ops = s["operating_points"]
            cells = [
                *_value(s["auroc"]),
                *_value(s["average_precision"]),
                f"{ops[key]['tpr']:.3f}",
                f"{ops['best-f1']['f1']:.3f}",
            ]
        elif labelled:
            cells = ["-"] * 6
        else:
            q = s["distribution"].get("quantiles", {})
            cells = [f"{q[k]:.4g}" if k in q else "-" for k in ("0.05", "0.5", "0.95")]
        table.add_row(
            f"{name} {arrow}",
            str(s.get("labelled", s["n"])),
            *cells,
            style="bold" if name == m["primary_score"] else None,
        )
    return table


def score(
    run: Annotated[
        str,
        typer.Argument(metavar="RUN", help="A `facebatch project` output folder or URL (OUT, holding latents/)."),
    ],
    report: Annotated[
        Optional[str], typer.Option("--report", "-r", help="Report folder (default: OUT/report).")
    ] = None,
    score_names: Annotated[
        Optional[list[str]],
        typer.Option(
            "--score",
            "-s",
            help="Primary score column (repeatable; the first is primary): anomaly_score, mse, psnr, "
            "ssim, perceptual (alias lpips), l1, d_residual or any numeric column. Every known score is compared.",
        ),
    ] = None,
    task: Annotated[
        Optional[Task],
        typer.Option(
            help="anomaly: worse reconstruction = positive. fake: better reconstruction = positive (GAN-made). "
            "(default: fake when the label column's name says fake, else anomaly)"
        ),
    ] = None,
    higher_is: Annotated[
        Optional[HigherIs],
        typer.Option(
            "--higher-is",
            help="Override the direction of the --score columns: does a higher value mean the positive class?",
        ),
    ] = None,
    labels: Annotated[
        Optional[str],
        typer.Option(
            "--labels", "-l", help="CSV with image_id (or path) and a binary label column (0/1, -1/+1, true/false)."
        ),
    ] = None,
    label_column: Annotated[
        Optional[str],
        typer.Option(
            "--label-column", help="Label column (default: the only other column, or is_fake/is_anomalous/label)."
        ),
    ] = None,
    positive_label: Annotated[
        Optional[str],
        typer.Option("--positive-label", help="The label value that means positive, for words such as fake/real."),
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Images in the contact sheet (0: none).")] = 16,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", help="Bootstrap resamples for the 95% intervals (0: none).")
    ] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed (recorded in metrics.json).")] = 0,
    target_fpr: Annotated[
        float, typer.Option("--target-fpr", help="False-positive budget for the FPR operating point.")
    ] = 0.05,
    threshold_rule: Annotated[
        Rule, typer.Option("--threshold-rule", help="How --fit-threshold picks the cut.")
    ] = Rule.best_f1,
    fit_threshold: Annotated[
        bool,
        typer.Option(
            "--fit-threshold", help="Fit a threshold on these labels; write REPORT/threshold.json and the flags table."
        ),
    ] = False,
    threshold: Annotated[
        Optional[float],
        typer.Option(
            "--threshold", help="Flag rows past this value of the primary score (its direction decides >= or <=)."
        ),
    ] = None,
    threshold_from: Annotated[
        Optional[str], typer.Option("--threshold-from", help="Apply a threshold.json written by --fit-threshold.")
    ] = None,
    flags_out: Annotated[
        Optional[str], typer.Option("--flags-out", help="Folder of the flags table (default: OUT/flags).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing flags table or report.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the report path.")] = False,
    storage_options: StorageOption = None,
) -> None:
    """Evaluate reconstruction scores of a projection run: distributions and the most anomalous images; with labels,
    AUROC/AP with bootstrap intervals, thresholds, ROC/PR curves. Writes REPORT/report.html and metrics.json;
    --threshold/--fit-threshold/--threshold-from also write a flags table (is_anomalous / is_fake) beside the
    latents."""
    from facebatch.pipeline import storage
    from facebatch.scoring.evaluate import ScoreOptions, evaluate
    from facebatch.scoring.report import REPORT_HTML

    storage.configure(storage_options)

    opts = ScoreOptions(
        run=run,
        report_dir=report,
        scores=tuple(score_names or ()),
        task=task.value if task else None,
        higher_is=higher_is.value if higher_is else None,
        labels=labels,
        label_column=label_column,
        positive_label=positive_label,
        top_k=top_k,
        n_bootstrap=bootstrap,
        seed=seed,
        target_fpr=target_fpr,
        threshold_rule=threshold_rule.value,
        fit_threshold=fit_threshold,
        threshold=threshold,
        threshold_file=threshold_from,
        flags_out=flags_out,
        overwrite=overwrite,
    )
    with err.status(f"scoring {run} ...", spinner="dots") if not quiet and err.is_terminal else nullcontext():
        result = evaluate(opts)
    m = result.metrics
    if quiet:
        out.print(str(result.report_dir / REPORT_HTML), highlight=False)
        return
    out.print(_key_table(m))
    out.print(f"rows: {m['rows']['ok']} scored, {m['rows']['skipped_error']} skipped (status error)", highlight=False)
    if m["operating_point"]:
        op = m["operating_point"]
        cm = op["confusion_matrix"]
        out.print(
            f"{op['name']}: {op['rule']}  (TP {cm['tp']}, FP {cm['fp']}, FN {cm['fn']}, TN {cm['tn']}; "
            f"TPR {op['tpr']:.3f}, FPR {op['fpr']:.3f})",
            highlight=False,
        )
    if result.flags is not None:
        f = result.flags
        out.print(
            f"flags: {f.path} ({f.n_flagged} of {f.n_rows} rows {m['threshold']['flag_column']}; "
            f"threshold: {m['threshold']['meaning']})",
            highlight=False,
        )
    out.print(f"report: {result.report_dir / REPORT_HTML}", highlight=False)
