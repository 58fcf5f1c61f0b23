"""What a notebook user calls: the library functions behind the commands, with plain arguments.

Each is the function the matching command uses, so results are the command's results:

    import facebatch as fb
    nets = fb.load_generator("stylegan2-ffhq-1024")            # or a checkpoint path
    table = fb.project_images(["a.jpg", "b.png"], nets, preset="fast")
    run = fb.read_latents("runs/faces")                          # OUT of `facebatch project` / `sample`
    report = fb.fit_boundaries("labels.csv", "runs/faces")       # InterFaceGAN, one boundary per column
    edited = fb.edit_latents(run.latent("w"), report.boundaries[0], 2.0)
    frames = fb.mix("morph", "pairs.csv", "runs/morph", nets, latents=["runs/faces"], frames=8)
    sketch = fb.shift_generator("celeba64", "photo", "pencil sketch", "G_sketch.safetensors", clips=["ViT-B-32:openai"])
    enc = fb.load_encoder(generator=nets)                         # the generator's own (or a path / name)
    codes = fb.encode(["a.jpg", "b.png"], enc)                    # W+ in one forward pass
    fb.train_encoder("celeba64", out="enc.safetensors", real="photos/", iters=2000)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from facebatch.edit.apply import edit_latents
from facebatch.edit.boundaries_io import load_boundaries
from facebatch.encoder.api import encode, load_encoder
from facebatch.encoder.api import train_encoder_file as train_encoder
from facebatch.pipeline.latents import LatentTable
from facebatch.pipeline.latents import read_latent_table as read_latents

__all__ = [
    "edit_latents",
    "encode",
    "fit_boundaries",
    "load_boundaries",
    "load_encoder",
    "load_generator",
    "mix",
    "project_images",
    "read_latents",
    "shift_generator",
    "train_encoder",
]


def load_generator(spec: str | Path, device: str = "cpu", *, with_d: bool = True):
    """G (and D when the checkpoint has one) from a registry name, a path or a URL: `Networks`
    with `.G`, `.D`, `.sha256`. Any supported format; none can run code."""
    from facebatch.nets.checkpoints import load_networks

    return load_networks(spec, device=device, with_d=with_d)


def project_images(
    images: Sequence[str | Path],
    generator: Any,
    *,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str = "auto",
    encoder: Any = None,
) -> LatentTable:
    """Project image files into W+ with `facebatch project`'s stage function, in this process.

    `generator` is what `load_generator` returns (or anything it accepts). Returns the rows
    `facebatch project` writes: scores in `.frame`, the W+ codes in `.latent("w")`. `encoder` (what
    `load_encoder` returns, a path or a registry name) is the start of the `encoder` / `hybrid` presets,
    which use the generator's own when none is given, and adds the encoder_consistency score.
    """
    import pyarrow as pa

    from facebatch.invert.presets import default_preset_for, load_preset
    from facebatch.nets.device import resolve_device
    from facebatch.pipeline.latents import LatentTable
    from facebatch.pipeline.table import column_to_numpy
    from facebatch.stages.project import project_files

    dev = resolve_device(device)
    nets = generator if hasattr(generator, "G") else load_generator(generator, device=str(dev))
    cfg = load_preset(preset or default_preset_for(nets), dict(overrides or {}))
    paths = [Path(p) for p in images]
    names = [p.name for p in paths]
    items = [{"image_id": p.name if names.count(p.name) == 1 else str(p), "path": str(p)} for p in paths]
    enc = encoder if encoder is None or hasattr(encoder, "encoder") else load_encoder(encoder, generator=nets)
    if enc is None and cfg.init == "encoder":
        enc = load_encoder(None, generator=nets)
    if enc is not None:
        enc.encoder.to(dev)
    table = project_files(items, nets, cfg.to_dict(), seed=seed, batch_size=batch_size, device=dev, encoder=enc)
    w = column_to_numpy(pa.table({"w": table.column("w")}, schema=pa.schema([table.schema.field("w")])), "w")
    return LatentTable(frame=table.drop_columns(["w"]).to_pandas(), latents={"w": w})


def fit_boundaries(labels: str | Path, latents: str | Path, **options):
    """InterFaceGAN boundaries from a labels CSV and a latents table, as `facebatch fit-boundaries` fits them.

    Options are `fit_from_labels`'s (attrs, exclude, id_col, settings, layers, ...); returns its report,
    whose `.boundaries` go to `edit_latents` or `facebatch.edit.boundaries_io.save_boundaries`.
    """
    from facebatch.edit.fit_labels import fit_from_labels

    return fit_from_labels(Path(labels), Path(latents), **options)


def mix(
    app: str,
    pairs: str | Path,
    out: str | Path,
    generator: Any = None,
    *,
    latents: Sequence[str | Path] = (),
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    batch_size: int = 8,
    device: str = "auto",
    overwrite: bool = False,
    **params: Any,
):
    """`facebatch mix APP PAIRS.csv -o OUT` in this process: the same stage, files and manifest.

    `app` is morph, crossover, inpaint, style or expression; `params` are the app's options by their
    command-line names (frames=8, mask="left", layers="0-3", style_weight=0.2, alpha_layers="3,4",
    alpha_sweep=True, ...). `generator` is what `load_generator` returns or accepts (None: the --latents
    run's). Returns the manifest as a DataFrame (the result codes: `read_latents(OUT / "manifest")`).
    A rerun resumes; rows of pairs that failed have status "error".
    """
    from facebatch.invert.presets import DEFAULT_PRESET, load_preset
    from facebatch.nets.checkpoints import load_networks
    from facebatch.nets.device import check_device
    from facebatch.pipeline.cluster import ClusterOptions
    from facebatch.pipeline.runner import run_stage
    from facebatch.stages.augment import resolve_generator
    from facebatch.stages.mix import build_mix_spec, open_runs, read_manifest, write_contact_sheet

    check_device(device)  # here, before any work: in the worker it would fail every pair
    if generator is None:
        if not latents:
            raise TypeError("mix() needs a generator, or latents= runs that name theirs")
        generator = resolve_generator(None, open_runs([Path(p) for p in latents]).index)[0]
    nets = generator if hasattr(generator, "G") else load_networks(generator, device="cpu", with_d=False)
    cfg = load_preset(preset or DEFAULT_PRESET, dict(overrides or {}))
    spec = build_mix_spec(
        app=app,
        pairs_csv=Path(pairs),
        out_dir=Path(out),
        nets=nets,
        projection=cfg.to_dict(),
        params=params,
        latents=[Path(p) for p in latents],
        seed=seed,
        batch_size=batch_size,
    )
    summary = run_stage(spec, ClusterOptions(workers=0, device=device), overwrite=overwrite, progress=False)
    if summary.images_ok:
        write_contact_sheet(Path(out), app)
    return read_manifest(Path(out))


def shift_generator(
    generator: Any,
    source: str,
    target: str,
    out: str | Path,
    *,
    clips: Sequence[str] = (),
    clip_weights: Sequence[float] = (),
    layers: str | Sequence[int] | None = None,
    work: str | Path | None = None,
    device: str = "auto",
    overwrite: bool = False,
    **settings: Any,
):
    """`facebatch nada` in this process: a copy of `generator` shifted from `source` to `target` text,
    written to `out` (facebatch safetensors, loadable wherever a generator is). Not named `nada`: that
    is the `facebatch.nada` package.

    `generator` is what `load_generator` returns or accepts; `clips` are CLIP specs (default: the
    built-in face CLIP when installed); `settings` are the command's options by field name (iters=300,
    batch=2, seed=2, auto_layer_k, auto_layer_iters, mixing, grid_seeds, snapshot_every). A rerun
    resumes from the snapshots in `work` (default: OUT's name + ``.nada/``). Returns the result with
    `.G`, `.losses`, `.rows` (W+ rows trained per iteration) and `.grid` (the before/after PNG).
    """
    from facebatch.nada.api import run_nada

    return run_nada(
        generator,
        source=source,
        target=target,
        out=out,
        clips=clips,
        clip_weights=clip_weights,
        layers=layers,
        work=work,
        device=device,
        overwrite=overwrite,
        **settings,
    )
