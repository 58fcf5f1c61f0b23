"""`run_nada`: what `facebatch nada` does, as one library call (validate, load, train or resume, write)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from facebatch import checks
from facebatch.domain_shift import DEFAULT_CLIP
from facebatch.errors import InputError
from facebatch.pipeline.ownership import record_written
from facebatch.pipeline.rundir import folder_lock
from facebatch.pipeline.snapshots import claim_trained_output

if TYPE_CHECKING:
    from facebatch.domain_shift.train import NadaResult


def default_work_dir(out: Path) -> Path:
    """G_sketch.safetensors -> G_sketch.nada/ beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.nada")


def parse_rows(spec: str | Sequence[int] | None, G) -> tuple[int, ...] | None:
    """--layers: None (adaptive), "all" (every conv row) or indices / ranges of W+ rows."""
    from facebatch.domain_shift.layers import candidate_rows, check_rows
    from facebatch.ranges import RangeTooLarge, parse_ranges

    if spec is None:
        return None
    if isinstance(spec, str):
        if spec.strip().lower() == "all":
            return tuple(candidate_rows(G))
        try:
            rows = parse_ranges(spec, largest=G.num_ws - 1)
        except RangeTooLarge:
            raise InputError(f"--layers {spec!r}: out of range, the generator has W+ rows 0-{G.num_ws - 1}") from None
        except ValueError:
            raise InputError(f"--layers {spec!r}: use W+ row indices and ranges such as 0-5 or 0,2,4") from None
    else:
        rows = [int(r) for r in spec]
    return tuple(check_rows(rows, G))


def default_clips() -> list[str]:
    from facebatch.nets import registry

    entry = registry.get(DEFAULT_CLIP)
    if entry is None or entry.kind != "clip":
        raise InputError(
            f"no --clip given and the face CLIP {DEFAULT_CLIP} is not in this install; pass --clip ARCH:TAG "
            "(e.g. ViT-B-32:openai, downloaded once) or --clip FILE (a facebatch-clip .safetensors)"
        )
    return [DEFAULT_CLIP]


def run_nada(
    generator,
    *,
    source: str,
    target: str,
    out: str | Path,
    clips: Sequence[str] = (),
    clip_weights: Sequence[float] = (),
    layers: str | Sequence[int] | None = None,
    work: str | Path | None = None,
    resume: bool = False,
    device: str = "auto",
    overwrite: bool = False,
    on_step: Callable[[int, float, list[int]], None] | None = None,
    stop_after: int | None = None,
    **settings,
) -> "NadaResult":
    """Train a NADA generator from `generator` (a registry name, a path or loaded `Networks`) and write it
    to `out` once `iters` iterations are done; `settings` are `NadaSettings` fields (iters, batch, seed, ...).

    Snapshots go to `work` (default: OUT's name + ``.nada/``); a rerun resumes from the newest one.
    `on_step(iteration, loss, rows)` is called after each iteration (a progress bar); `stop_after` ends
    this call after that many iterations (the output is written only when `iters` are done).
    """
    from facebatch.domain_shift.loss import ClipLoss
    from facebatch.domain_shift.train import (
        MAX_GRID_SEEDS,
        NadaSettings,
        nada_metadata,
        train_nada,
        write_nada_generator,
    )
    from facebatch.nets.checkpoints import load_networks
    from facebatch.nets.clip import load_clip, resolve_clip
    from facebatch.nets.device import resolve_device
    from facebatch.ranges import finite_number, parse_seeds

    out = checks.a_local_path(out, "--out", checks.TRAINED_LOCALLY)
    if work is not None:
        work = checks.a_local_path(work, "--work", checks.TRAINED_LOCALLY)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give the generator file to write (e.g. G_sketch.safetensors)")
    work_dir = Path(work) if work is not None else default_work_dir(out)
    claim_trained_output(out, work_dir, overwrite)
    if isinstance(settings.get("grid_seeds"), str):
        settings["grid_seeds"] = parse_seeds(settings["grid_seeds"], "--grid-seeds", most=MAX_GRID_SEEDS)
    if "grid_seeds" in settings:
        settings["grid_seeds"] = tuple(int(s) for s in settings["grid_seeds"])
    try:
        base = NadaSettings(source=source, target=target, **settings)
    except TypeError as exc:
        raise TypeError(f"run_nada: {exc}") from None
    base.check()  # texts and numbers first: before any network is loaded
    dev = resolve_device(device)
    specs = list(clips) or default_clips()
    weights = [finite_number(w, "--clip-weight", lo=0.0) for w in clip_weights] if clip_weights else [1.0] * len(specs)
    if len(weights) != len(specs):
        raise InputError(f"{len(specs)} --clip model(s) but {len(weights)} --clip-weight value(s): give one per model")
    if not any(weights):
        raise InputError(f"--clip-weight must be >= 0 with at least one above 0, got {weights}")
    refs = [resolve_clip(s) for s in specs]  # unknown or offline CLIPs fail here, in one line
    nets = generator if hasattr(generator, "G") else load_networks(generator, device="cpu", with_d=False)
    rows = parse_rows(layers, nets.G)
    s = NadaSettings(**{**base.__dict__, "layers": rows})
    models = [load_clip(r, device=dev) for r in refs]
    loss = ClipLoss.build(models, weights, s.source, s.target)
    clip_info = [{"spec": r.spec, "sha256": r.sha256, "weight": w} for r, w in zip(refs, weights)]
    base_info = {
        "name": nets.name,
        "path": str(Path(nets.path).resolve()),
        "sha256": nets.sha256,
        "format": nets.format,
    }
    run_key = {**s.resume_key(), "base_sha256": nets.sha256, "clips": clip_info}

    with folder_lock(work_dir):  # a second run on this work folder would train over the same snapshots
        result = train_nada(
            nets.G,
            loss,
            s,
            work_dir,
            run_key=run_key,
            device=dev,
            overwrite=overwrite,
            require_snapshot=resume,
            on_step=on_step,
            stop_after=stop_after,
        )
        if len(result.losses) == s.iters:
            extra = nada_metadata(s, clip_info, {**base_info, "work": str(work_dir.resolve())}, result, nets.G.num_ws)
            result.extra = extra
            claim_trained_output(out, work_dir, overwrite)  # again: another run may have written it meanwhile
            write_nada_generator(out, nets.g_kwargs, result.G, extra)
            record_written([out], by=work_dir)
    return result
