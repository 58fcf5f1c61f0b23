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

from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from facebatch import checks
from facebatch.edit.apply import edit_latents
from facebatch.edit.boundaries_io import load_boundaries
from facebatch.encoder.api import encode, load_encoder
from facebatch.encoder.api import train_encoder_file as train_encoder
from facebatch.errors import InputError
from facebatch.pipeline.latents import LatentTable
from facebatch.ranges import check_seeds, whole_number

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
    import torch

    from facebatch.nets.checkpoints import load_networks
    from facebatch.nets.device import resolve_device

    spec = checks.a_path(spec, "generator", "a registry name, a path or a URL")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return load_networks(spec, device=dev, with_d=with_d)


def read_latents(path: str | Path, columns: Sequence[str] | None = None) -> LatentTable:
    """A run (OUT of `project` / `sample`), its table folder or one part: scalar columns in `.frame`, the
    latent columns shaped (N, num_ws, w_dim) by `.latent("w")`."""
    from facebatch.pipeline.latents import read_latent_table

    if columns is not None:
        columns = checks.texts(columns, "columns", "column names")
    return read_latent_table(checks.a_path(path, "path"), columns)


def networks(generator: Any, device: Any = "cpu"):
    """`generator` as loaded `Networks`: as given when it is one, else loaded (G only)."""
    if hasattr(checks.a_generator(generator), "G"):
        return generator
    return load_generator(generator, device=str(device), with_d=False)


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

    paths = checks.paths(images, "images")
    overrides = checks.a_mapping(overrides, "overrides")
    check_seeds([seed], "--seed")
    if batch_size is not None:
        whole_number(batch_size, "--batch-size", lo=1)
    dev = resolve_device(device)
    nets = networks(generator, dev)
    cfg = load_preset(preset or default_preset_for(nets), overrides)
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
    from facebatch.edit.fit import FitSettings
    from facebatch.edit.fit_labels import fit_from_labels

    known = checks.keyword_names(fit_from_labels, skip=("labels_path", "latents_path"))
    checks.known_options(options, known, "fit_boundaries")
    for name in ("attrs", "exclude"):
        if options.get(name) is not None:
            options[name] = checks.texts(options[name], name, "attribute names")
    if options.get("settings") is not None:
        checks.an_instance(options["settings"], FitSettings, "settings", "facebatch.edit.fit.FitSettings")
    return fit_from_labels(checks.a_path(labels, "labels"), checks.a_path(latents, "latents"), **options)


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
    from facebatch.nets.device import check_device
    from facebatch.pipeline.cluster import ClusterOptions
    from facebatch.pipeline.runner import run_stage
    from facebatch.stages.augment import resolve_generator
    from facebatch.stages.mix import build_mix_spec, open_runs, read_manifest, write_contact_sheet

    check_device(device)  # here, before any work: in the worker it would fail every pair
    pairs, out = checks.a_path(pairs, "pairs"), checks.a_path(out, "out")
    latents = checks.paths(latents, "latents")
    overrides = checks.a_mapping(overrides, "overrides")
    check_seeds([seed], "--seed")
    if generator is None:
        if not latents:
            raise InputError("mix: give a generator, or latents= runs that name theirs")
        generator = resolve_generator(None, open_runs(latents).index)[0]
    nets = networks(generator)
    cfg = load_preset(preset or DEFAULT_PRESET, overrides)
    spec = build_mix_spec(
        app=app,
        pairs_csv=pairs,
        out_dir=out,
        nets=nets,
        projection=cfg.to_dict(),
        params=params,
        latents=latents,
        seed=seed,
        batch_size=batch_size,
    )
    summary = run_stage(spec, ClusterOptions(workers=0, device=device), overwrite=overwrite, progress=False)
    if summary.images_ok:
        write_contact_sheet(out, app)
    return read_manifest(out)


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
    is the `facebatch.domain_shift` package.

    `generator` is what `load_generator` returns or accepts; `clips` are CLIP specs (default: the
    built-in face CLIP when installed); `settings` are the command's options by field name (iters=300,
    batch=2, seed=2, auto_layer_k, auto_layer_iters, mixing, grid_seeds, snapshot_every). A rerun
    resumes from the snapshots in `work` (default: OUT's name + ``.nada/``). Returns the result with
    `.G`, `.losses`, `.rows` (W+ rows trained per iteration) and `.grid` (the before/after PNG).
    """
    from facebatch.domain_shift.api import run_nada
    from facebatch.domain_shift.train import NadaSettings

    known = {f.name for f in fields(NadaSettings)} | set(checks.keyword_names(run_nada))
    checks.known_options(settings, known - set(checks.keyword_names(shift_generator)), "shift_generator")
    # A str ("0-7" seeds, "0-5" or "all" rows) is read as the command reads it; anything else is a list of ints.
    if settings.get("grid_seeds") is not None and not isinstance(settings["grid_seeds"], str):
        settings["grid_seeds"] = checks.items(settings["grid_seeds"], "--grid-seeds", "seeds")
        check_seeds(settings["grid_seeds"], "--grid-seeds")
    if layers is not None and not isinstance(layers, str):
        layers = [whole_number(r, "--layers", lo=None) for r in checks.items(layers, "--layers", "W+ rows")]
    return run_nada(
        checks.a_generator(generator),
        source=checks.a_text(source, "--source"),
        target=checks.a_text(target, "--target"),
        out=checks.a_path(out, "out"),
        clips=checks.texts(clips, "clips", "CLIP specs"),
        clip_weights=checks.items(clip_weights, "clip_weights", "weights"),
        layers=layers,
        work=checks.maybe_path(work, "work"),
        device=device,
        overwrite=overwrite,
        **settings,
    )
