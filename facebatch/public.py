"""What a notebook user calls: every batch command as a function named like it, plus the models and tables.

Each is the code the matching command runs (the CLI parses its arguments into the same options objects and
calls the same `facebatch.commands` function), so results are the command's results:

    import facebatch as fb
    fb.list_models("generator"), fb.list_presets()
    nets = fb.load_generator("celeba64")                          # .sample(seeds), .render(ws), .mapping(z)
    fb.sample("celeba64", "runs/samples", n=64)                    # OUT/images, OUT/latents
    fb.project("photos/", "celeba64", "runs/faces", preset="hybrid", workers=0)
    table = fb.project([pil_image, "b.png"], nets, preset="fast") # in memory, no OUT: a LatentTable
    run = fb.read_latents("runs/faces")                            # .frame (scores), .latent("w") (N, num_ws, w_dim)
    fb.score("runs/faces", labels="is_fake.csv", report_dir="report")
    fb.label("runs/samples", "labels.csv")                         # attribute probabilities
    report = fb.fit_boundaries("labels.csv", "runs/samples")        # InterFaceGAN, one boundary per column
    edited = fb.edit_latents(run.latent("w"), report.boundaries[0], 2.0)
    fb.augment("runs/samples", "runs/aug", attributes=["Smiling"], strengths=[-2, 2])
    fb.mix("morph", "pairs.csv", "runs/morph", latents=["runs/faces"], frames=8)
    fb.nada("celeba64", "photo", "pencil sketch", "G_sketch.safetensors", iters=200)
    fb.align("raw_photos/", "runs/aligned")
    enc = fb.load_encoder(generator=nets); codes = fb.encode(["a.jpg"], enc)
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
    "align",
    "augment",
    "edit_latents",
    "encode",
    "fit_boundaries",
    "label",
    "list_models",
    "list_presets",
    "load_boundaries",
    "load_encoder",
    "load_generator",
    "mix",
    "nada",
    "project",
    "read_latents",
    "sample",
    "score",
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


def list_models(kind: str | None = None) -> list[str]:
    """The registry's model names (generators, encoders, attribute predictors, CLIPs), or those of one `kind`."""
    from facebatch.nets import registry

    entries = registry.models().values()
    kinds = sorted({e.kind for e in entries})
    if kind is not None and kind not in kinds:
        raise InputError(f"kind {kind!r}: the registry has {', '.join(kinds)}")
    return [e.name for e in entries if kind is None or e.kind == kind]


def list_presets() -> list[str]:
    """The projection presets `project` and `mix` take by name (a YAML file path works too)."""
    from facebatch.invert.presets import PRESETS

    return list(PRESETS)


def _options(where: str, settings: Mapping[str, Any], *kinds: type, rest: bool = False) -> list:
    """Keyword settings split into the options objects `kinds` (dataclasses) by field name; with `rest` the
    settings no kind knows come last as a dict, else an unknown one is refused naming the nearest."""
    names = [{f.name for f in fields(kind)} for kind in kinds]
    if not rest:
        checks.known_options(settings, set().union(*names), where)
    built = [kind(**{k: v for k, v in settings.items() if k in known}) for kind, known in zip(kinds, names)]
    if rest:
        built.append({k: v for k, v in settings.items() if not any(k in known for known in names)})
    return built


def _generator_spec(generator: Any) -> str | Path:
    """What a batch command's workers load: a registry name or path, or the file loaded `Networks` came from."""
    checks.a_generator(generator)
    return generator.path if hasattr(generator, "G") else generator


def project(images: Any, generator: Any, out: str | Path | None = None, **settings: Any):
    """`facebatch project`: W+ codes and reconstruction scores for images.

    With `out`, `images` is a folder (or one file) and the run is the command's: sharded, resumable, written to
    OUT/latents; `settings` are `ProjectOptions` fields (preset, steps, overrides, seed, batch_size, encoder,
    align, save_reconstructions, save_noise) and `RunOptions` fields (workers, device, overwrite, quiet, ...);
    returns a `ProjectResult`. Without `out`, `images` is a list of files, PIL images or [3, R, R] tensors in
    [-1, 1], projected here with the same stage function; `settings` are preset, overrides, seed, batch_size,
    device and encoder; returns the rows as a `LatentTable` (scores in `.frame`, W+ in `.latent("w")`).
    """
    if out is not None:
        from facebatch.commands.project import ProjectOptions
        from facebatch.commands.project import project as run_project
        from facebatch.pipeline.run_options import RunOptions

        options, run = _options("project", settings, ProjectOptions, RunOptions)
        return run_project(checks.a_path(images, "images"), _generator_spec(generator), out, options, run)
    checks.known_options(settings, ("preset", "overrides", "seed", "batch_size", "device", "encoder"), "project")
    return _project_here(images, generator, **settings)


def _project_here(
    images: Any,
    generator: Any,
    *,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str = "auto",
    encoder: Any = None,
) -> LatentTable:
    import pyarrow as pa
    import torch
    from PIL import Image

    from facebatch.invert.presets import default_preset_for, load_preset
    from facebatch.nets.device import resolve_device
    from facebatch.pipeline.rundir import unique_ids
    from facebatch.pipeline.table import column_to_numpy
    from facebatch.stages.project import project_files

    given = checks.items(images, "images", "images (paths, PIL images or tensors)")
    overrides = checks.a_mapping(overrides, "overrides")
    check_seeds([seed], "--seed")
    if batch_size is not None:
        whole_number(batch_size, "--batch-size", lo=1)
    dev = resolve_device(device)
    nets = networks(generator, dev)
    cfg = load_preset(preset or default_preset_for(nets), overrides)
    items = []
    for k, image in enumerate(given):
        if isinstance(image, (Image.Image, torch.Tensor)):
            items.append({"image_id": f"image-{k:05d}", "image": image, "path": None})
        else:
            items.append({"path": checks.a_path(image, f"images[{k}]")})
    files = [it for it in items if it["path"] is not None]
    for it, image_id in zip(files, unique_ids([it["path"] for it in files])):  # as `facebatch invert` names them
        it["image_id"], it["path"] = image_id, str(it["path"])
    enc = encoder if encoder is None or hasattr(encoder, "encoder") else load_encoder(encoder, generator=nets)
    if enc is None and cfg.init == "encoder":
        enc = load_encoder(None, generator=nets)
    if enc is not None:
        enc.encoder.to(dev)
    table = project_files(items, nets, cfg, seed=seed, batch_size=batch_size, device=dev, encoder=enc)
    w = column_to_numpy(pa.table({"w": table.column("w")}, schema=pa.schema([table.schema.field("w")])), "w")
    return LatentTable(frame=table.drop_columns(["w"]).to_pandas(), latents={"w": w})


def sample(generator: Any, out: str | Path, **settings: Any):
    """`facebatch sample`: images (OUT/images) and their z and W+ (OUT/latents) by seed, the official recipe.
    `settings`: `SampleOptions` fields (seeds, n, seed, truncation, truncation_cutoff, noise_mode, images,
    batch_size, part_size) and `RunOptions` fields. Returns a `SampleResult`."""
    from facebatch.commands.sample import SampleOptions
    from facebatch.commands.sample import sample as run_sample
    from facebatch.pipeline.run_options import RunOptions

    options, run = _options("sample", settings, SampleOptions, RunOptions)
    return run_sample(_generator_spec(generator), checks.a_path(out, "out"), options, run)


def align(images: str | Path, out: str | Path, **settings: Any):
    """`facebatch align`: FFHQ-aligned crops of every face under `images` (OUT/aligned, OUT/faces).
    `settings`: `AlignOptions` fields (size, backend, faces, min_score, shard_size) and `RunOptions` fields."""
    from facebatch.commands.align import AlignOptions
    from facebatch.commands.align import align as run_align
    from facebatch.pipeline.run_options import RunOptions

    options, run = _options("align", settings, AlignOptions, RunOptions)
    return run_align(checks.a_path(images, "images"), checks.a_path(out, "out"), options, run)


def augment(latents: str | Path, out: str | Path, **settings: Any):
    """`facebatch augment`: every ok latent of a run edited along boundaries and/or rendered through shifted
    generators. `settings`: `AugmentOptions` fields (attributes, strengths, boundaries, shifts, conditions,
    layers, mode, generator, noise, limit, ...) and `RunOptions` fields. Returns an `AugmentResult`."""
    from facebatch.commands.augment import AugmentOptions
    from facebatch.commands.augment import augment as run_augment
    from facebatch.pipeline.run_options import RunOptions

    for name in ("attributes", "conditions"):
        if name in settings:
            settings[name] = checks.texts(settings[name], name, "boundary names")
    if "shifts" in settings:
        settings["shifts"] = checks.paths(settings["shifts"], "shifts")
    options, run = _options("augment", settings, AugmentOptions, RunOptions)
    return run_augment(checks.a_path(latents, "latents"), checks.a_path(out, "out"), options, run)


def label(images: str | Path, labels: str | Path, **settings: Any):
    """`facebatch label`: attribute probabilities for a folder of images or a project/sample run -> the labels CSV
    at `labels` (image_id + one column per attribute), as fit-boundaries reads it. `settings`: `LabelOptions`
    fields (predictor, clip, prompts, prompts_file, run_dir, attrs, binary, threshold, source, generator, ...)
    and `RunOptions` fields. Returns a `LabelResult` (`.labels` is the CSV, `.errors` the rows not labelled)."""
    from facebatch.commands.label import LabelOptions
    from facebatch.commands.label import label as run_label
    from facebatch.pipeline.run_options import RunOptions

    for name in ("prompts", "attrs"):
        if name in settings:
            settings[name] = checks.texts(settings[name], name, "names")
    options, run = _options("label", settings, LabelOptions, RunOptions)
    return run_label(checks.a_path(images, "images"), checks.a_path(labels, "labels"), options, run)


def score(run: str | Path, **settings: Any):
    """`facebatch score`: AUROC/AP with bootstrap intervals, thresholds and the HTML report of a project run.
    `settings` are `ScoreOptions` fields (labels, label_column, task, scores, report_dir, n_bootstrap, ...).
    Returns a `ScoreResult` (`.metrics` is metrics.json)."""
    from facebatch.scoring.evaluate import ScoreOptions, evaluate

    checks.known_options(settings, {f.name for f in fields(ScoreOptions)} - {"run"}, "score")
    return evaluate(ScoreOptions(run=checks.a_path(run, "run"), **settings))


def fit_boundaries(
    labels: str | Path,
    latents: str | Path,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    update: bool = False,
    **options,
):
    """`facebatch fit-boundaries`: InterFaceGAN boundaries from a labels CSV and a latents table, one per column.

    Options are `fit_from_labels`'s (attrs, exclude, id_col, skip_unknown, settings (a FitSettings), layers,
    column). With `out` the boundaries file is written as the command writes it (refused when it exists,
    unless overwrite or update). Returns the report, whose `.boundaries` go to `edit_latents`.
    """
    from facebatch.commands.boundaries import fit_boundaries as fit_and_write
    from facebatch.edit.fit import FitSettings
    from facebatch.edit.fit_labels import fit_from_labels

    known = checks.keyword_names(fit_from_labels, skip=("labels_path", "latents_path"))
    checks.known_options(options, known, "fit_boundaries")
    for name in ("attrs", "exclude"):
        if options.get(name) is not None:
            options[name] = checks.texts(options[name], name, "attribute names")
    if options.get("settings") is not None:
        checks.an_instance(options["settings"], FitSettings, "settings", "facebatch.edit.fit.FitSettings")
    labels, latents = checks.a_path(labels, "labels"), checks.a_path(latents, "latents")
    return fit_and_write(labels, latents, checks.maybe_path(out, "out"), overwrite=overwrite, update=update, **options)


def mix(app: str, pairs: str | Path, out: str | Path, generator: Any = None, **settings: Any):
    """`facebatch mix APP PAIRS.csv -o OUT`: the same stage, files and manifest.

    `app` is morph, crossover, inpaint, style or expression. `settings` are `MixOptions` fields (latents,
    preset, steps, overrides, seed, batch_size, shard_size, sheet_rows), `RunOptions` fields (workers,
    device, overwrite, quiet, ...) and the app's own options by their command-line names (frames=8,
    mask="left", layers="0-3", style_weight=0.2, alpha_layers="3,4", alpha_sweep=True, ...). `generator` is
    what `load_generator` returns or accepts (None: the `latents` run's). Returns a `MixResult`;
    `.manifest()` reads the manifest (one row per output; rows of pairs that failed have status "error").
    """
    from facebatch.commands.mix import MixOptions
    from facebatch.commands.mix import mix as run_mix
    from facebatch.pipeline.run_options import RunOptions

    pairs, out = checks.a_path(pairs, "pairs"), checks.a_path(out, "out")
    if "latents" in settings:
        settings["latents"] = checks.paths(settings["latents"], "latents")
    if "seed" in settings:
        check_seeds([settings["seed"]], "--seed")
    if generator is not None:
        settings["generator"] = _generator_spec(generator)
    elif not settings.get("latents"):
        raise InputError("mix: give a generator, or latents= runs that name theirs")
    options, run, params = _options(f"mix {app}", settings, MixOptions, RunOptions, rest=True)
    return run_mix(checks.a_text(app, "app"), pairs, out, params, options, run)


def nada(
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
    checks.known_options(settings, known - set(checks.keyword_names(nada)), "nada")
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
