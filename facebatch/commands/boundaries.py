"""`fit-boundaries` and `directions sefa`: editing directions, fitted from labels or factorised from the
generator, written to a boundaries file with a record of how they were made."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from facebatch.pipeline import storage


def fit_boundaries(
    labels: str | Path,
    latents: str | Path,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    update: bool = False,
    **options,
):
    """InterFaceGAN boundaries from a labels CSV and a latents table, one per attribute column (`options` are
    `fit_from_labels`'s: attrs, exclude, id_col, skip_unknown, settings, layers, column). With `out`, the
    file is written (refused before the fit, which may take minutes, when it exists and neither overwrite
    nor update is given); returns the report, whose `.boundaries` go to `edit_latents`."""
    from facebatch.edit.boundaries_io import check_writable, write_boundaries
    from facebatch.edit.fit_labels import fit_from_labels

    labels, latents = storage.location(labels), storage.location(latents)
    if out is not None:
        check_writable(storage.location(out), overwrite, update)
    report = fit_from_labels(labels, latents, **options)
    if out is not None:
        record = {
            "command": "fit-boundaries",
            "labels": storage.resolved(labels),
            "latents": storage.resolved(latents),
            "label_rows": report.label_rows,
            "matched": report.matched,
            "unknown": report.unknown,
            "not_ok": report.not_ok,
        }
        write_boundaries(storage.location(out), report.boundaries, record, overwrite, update)
    return report


def sefa_directions(
    generator,
    out: str | Path | None = None,
    *,
    k: int = 10,
    layers: str | Sequence[int] | None = None,
    include_torgb: bool = False,
    prefix: str = "sefa",
    overwrite: bool = False,
    update: bool = False,
):
    """SeFa: the k eigenvectors of the style-modulation weights with the largest eigenvalues, as boundaries
    (closed form, no labels). `generator` is a registry name, a path or loaded `Networks`; with `out` the
    directions are written with their record. Returns (the directions, the generator's name)."""
    from facebatch.edit.boundaries_io import check_writable, write_boundaries
    from facebatch.edit.layers import format_layers, parse_layers
    from facebatch.edit.sefa import affine_layers, sefa_boundaries
    from facebatch.nets.checkpoints import load_networks

    if out is not None:
        check_writable(storage.location(out), overwrite, update)
    nets = generator if hasattr(generator, "G") else load_networks(generator, device="cpu", with_d=False)
    state = nets.G.state_dict()
    _, num_ws = affine_layers(state)
    rows = parse_layers(layers, num_ws)
    found = sefa_boundaries(
        state, k=k, w_rows=rows, include_torgb=include_torgb, generator_sha256=nets.sha256, prefix=prefix
    )
    if out is not None:
        record = {
            "command": "directions sefa",
            "generator": nets.name,
            "generator_sha256": nets.sha256,
            "layers": format_layers(rows),
            "k": k,
            "include_torgb": include_torgb,
        }
        write_boundaries(storage.location(out), found, record, overwrite, update)
    return found, nets.name
