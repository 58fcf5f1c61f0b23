"""`facebatch directions`: label-free editing directions, written in the boundaries format."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from facebatch.cli.cluster_options import QuietOption
from facebatch.cli.console import out
from facebatch.edit.layers import format_layers

app = typer.Typer(
    help="Label-free editing directions (SeFa), usable by `facebatch augment` like boundaries.", no_args_is_help=True
)


@app.command("sefa")
def sefa(
    generator: Annotated[str, typer.Option("--generator", "-g", help="Registry name or checkpoint path.")],
    out_path: Annotated[str, typer.Option("--out", "-o", help="Boundaries file to write (JSON), a path or URL.")],
    k: Annotated[int, typer.Option("-k", "--k", help="How many directions (largest eigenvalues first).")] = 10,
    layers: Annotated[
        Optional[str], typer.Option("--layers", help="W+ layers to factorise, e.g. 0-3 (default: all).")
    ] = None,
    include_torgb: Annotated[
        bool, typer.Option("--include-torgb", help="Also use the ToRGB affines that share a layer with a conv.")
    ] = False,
    prefix: Annotated[str, typer.Option("--prefix", help="Names are <prefix>_00, <prefix>_01, ...")] = "sefa",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing boundaries file.")] = False,
    update: Annotated[
        bool, typer.Option("--update", help="Add to an existing file, replacing same-named entries.")
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """SeFa: eigenvectors of the style-modulation weights (closed form, no labels, under a second).

    Each direction is a unit W vector applied to the chosen layers; its "distance" is the
    coordinate of a latent along it, so augment strengths are steps in latent units.
    """
    from facebatch.commands.boundaries import sefa_directions

    found, name = sefa_directions(
        generator, out_path, k=k, layers=layers, include_torgb=include_torgb, prefix=prefix, overwrite=overwrite,
        update=update,
    )  # fmt: skip
    if quiet:
        return
    table = Table(title=f"SeFa directions of {name} -> {out_path}", title_justify="left", header_style="bold")
    for col in ("name", "eigenvalue", "share", "layers"):
        table.add_column(col, justify="right" if col in ("eigenvalue", "share") else "left")
    for b in found:
        table.add_row(
            b.name, f"{b.info['eigenvalue']:.4g}", f"{100 * b.info['explained']:.2f}%", format_layers(b.layers)
        )
    out.print(table)
    out.print(f"{len(found[0].info['affines'])} affine layers factorised")
