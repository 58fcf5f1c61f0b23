"""`facebatch fit-boundaries`: InterFaceGAN boundaries from labels.csv and a latents table."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from facebatch.cli.cluster_options import QuietOption, StorageOption
from facebatch.cli.console import out
from facebatch.edit.boundary import Boundary
from facebatch.edit.layers import format_layers


def split_names(text: Optional[str]) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def boundaries_table(boundaries: list[Boundary], title: str) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        caption="accuracies: train, validation, balanced validation, unselected middle (scores only; "
        "InterFaceGAN's midpoint labels); middle rho: rank correlation of distance and score",
    )
    for col in (
        "attribute",
        "labels",
        "space",
        "layers",
        "train +/-",
        "C",
        "train",
        "val",
        "val bal.",
        "middle",
        "middle rho",
        "s",
    ):
        table.add_column(col, justify="left" if col in ("attribute", "labels", "space", "layers") else "right")
    for b in boundaries:
        m, c, fit = b.info["metrics"], b.info["counts"], b.info["fit"]
        table.add_row(
            b.name,
            b.info["label_kind"],
            b.space,
            format_layers(b.layers),
            f"{c['train_positive']}/{c['train_negative']}",
            f"{fit['C']:g}",
            _pct(m["train_accuracy"]),
            _pct(m["val_accuracy"]),
            _pct(m["val_balanced_accuracy"]),
            _pct(m["remaining_accuracy"]),
            "-" if m.get("remaining_spearman") is None else f"{m['remaining_spearman']:.2f}",
            f"{fit['seconds']:.2f}" + ("" if fit["converged"] else " (!)"),
        )
    return table


def fit_boundaries(
    labels: Annotated[
        str,
        typer.Argument(metavar="LABELS", help="CSV with an image_id (or path) column and one column per attribute."),
    ],
    latents: Annotated[
        str, typer.Option("--latents", "-l", help="OUT of `facebatch project`/`sample`, or its latents/ folder.")
    ],
    out_path: Annotated[str, typer.Option("--out", "-o", help="Boundaries file to write (JSON); a path or URL.")],
    attrs: Annotated[
        Optional[str], typer.Option("--attrs", "-a", help="Comma-separated attribute columns (default: all).")
    ] = None,
    exclude: Annotated[
        Optional[str], typer.Option("--exclude", help="Columns that are not attributes (e.g. identity).")
    ] = None,
    space: Annotated[
        str,
        typer.Option(
            "--space",
            help="w (mean over --layers; default: best recovery in the planted study, scales to 500k) | "
            "wplus (flattened) | layer (one SVM per layer).",
        ),
    ] = "w",
    layers: Annotated[
        Optional[str], typer.Option("--layers", help="W+ layers the boundary reads, e.g. 0-7 (default: all).")
    ] = None,
    id_col: Annotated[
        Optional[str], typer.Option("--id-column", help="Column holding image ids (default: image_id/path/file...).")
    ] = None,
    skip_unknown: Annotated[
        bool, typer.Option("--skip-unknown", help="Ignore label rows that match no latent.")
    ] = False,
    chosen_ratio: Annotated[
        float, typer.Option("--chosen-ratio", help="Continuous scores: top/bottom share per side (<=1) or count.")
    ] = 0.02,
    split_ratio: Annotated[
        float, typer.Option("--split-ratio", help="Training share of the selected rows; the rest validates.")
    ] = 0.7,
    C: Annotated[
        Optional[float], typer.Option("-C", help="SVM penalty on RMS-scaled latents (default: cross-validated).")
    ] = None,
    max_train_rows: Annotated[
        Optional[int],
        typer.Option("--max-train-rows", help="Train on a stratified subsample of at most N rows (memory)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the train/validation split.")] = 0,
    column: Annotated[str, typer.Option("--column", help="Latent column of the table.")] = "w",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing boundaries file.")] = False,
    update: Annotated[
        bool, typer.Option("--update", help="Add to an existing file, replacing same-named boundaries.")
    ] = False,
    quiet: QuietOption = False,
    storage_options: StorageOption = None,
) -> None:
    """Fit one linear SVM boundary per attribute (InterFaceGAN) and write them to a boundaries file.

    Binary columns (0/1, -1/1, true/false) use every labelled latent with a 70/30 split;
    numeric scores keep the top and bottom --chosen-ratio as positives and negatives and report
    accuracy on the unused middle too. Empty cells are unknown labels.
    """
    from facebatch.commands.boundaries import fit_boundaries as fit_and_write
    from facebatch.edit.fit import FitSettings
    from facebatch.pipeline import storage

    storage.configure(storage_options)

    settings = FitSettings(
        space=space, chosen_ratio=chosen_ratio, split_ratio=split_ratio, C=C, seed=seed, max_train_rows=max_train_rows
    )
    report = fit_and_write(
        labels,
        latents,
        out_path,
        overwrite=overwrite,
        update=update,
        attrs=split_names(attrs) or None,
        exclude=split_names(exclude),
        id_col=id_col,
        skip_unknown=skip_unknown,
        settings=settings,
        layers=layers,
        column=column,
    )
    if quiet:
        return
    out.print(boundaries_table(report.boundaries, f"boundaries -> {out_path}"))
    notes = [f"{report.matched} of {report.label_rows} label rows matched a latent"]
    if report.unknown:
        notes.append(f"{report.unknown} skipped (no latent)")
    if report.not_ok:
        notes.append(f"{report.not_ok} skipped (latent is an error row)")
    if not report.generator_sha256:
        notes.append("the latents record no generator sha256")
    if any(not b.info["fit"]["converged"] for b in report.boundaries):
        notes.append("(!) = liblinear hit its iteration limit")
    out.print("; ".join(notes))
