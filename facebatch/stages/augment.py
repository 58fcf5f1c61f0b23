"""The `augment` stage: every ok latent x attribute x strength -> an edited image and a manifest row,
and every latent (edited or not) rendered through shifted generators (StyleGAN-NADA outputs).

Runs through the shared shard runner, so it is sharded, resumable and distributable like
`project`. One item is one image rendered once:

- an edit with the run's generator: id ``<image_id>@<attribute>=<strength>``,
  file ``images/<attribute>/<strength>/<name>``;
- the unedited latent through shifted generator S: ``<image_id>@shift=<S>``, ``images/@<S>/<name>``;
- an edit through S: ``<image_id>@<attribute>=<strength>@shift=<S>``, ``images/@<S>/<attribute>/<strength>/<name>``
  ("@" never occurs in an attribute's folder name, so the two trees cannot meet).

Every manifest row names the generator file and sha256 that drew it. Items of one source image are
adjacent so a shard reads each latent once. Items carry the latents part file and row, not the
latent, to keep the plan small. Over 400 lines: planning, the worker and the contact sheets all read the
same item layout (ids, folders, the shift/edit cross product); they stay together so it is defined once.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from facebatch.edit.apply import edit_latents
from facebatch.edit.boundaries_io import load_boundaries, pick
from facebatch.edit.conditional import edit_step
from facebatch.pipeline import storage
from facebatch.pipeline.latents import LatentIndex, check_generator, read_rows, resolve_generator
from facebatch.pipeline.records import JsonRecord, WorkerSetup, record_field
from facebatch.pipeline.rundir import IMAGES, MANIFEST, SHEETS, RunDir, output_names, safe_relpath
from facebatch.pipeline.runner import StageSpec
from facebatch.pipeline.shard_task import ShardInfo
from facebatch.pipeline.table import latent_array_masked, latents_schema, open_dataset

TABLE = MANIFEST
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def strength_label(s: float) -> str:
    return f"{s:+g}"


def safe_name(text: str) -> str:
    """A path component from an attribute name (CSV headers may hold spaces or slashes)."""
    return _UNSAFE.sub("_", text) or "_"


def item_id(source_id: str, attribute: str | None, strength: float | None, shift: str | None = None) -> str:
    edit = f"@{attribute}={strength_label(strength)}" if attribute is not None else ""
    return f"{source_id}{edit}{f'@shift={shift}' if shift else ''}"


def output_path(
    source_id: str, attribute: str | None, strength: float | None, name: str | None = None, shift: str | None = None
) -> str:
    """images/[@<shift>/][<attribute>/<strength>/]<name>, relative to AUG; `name` comes from
    `rundir.output_names` over the run's sources (unique, never leaving AUG), else it is computed for
    this id alone."""
    name = name or output_names([source_id])[source_id]
    parts = [IMAGES] + ([f"@{safe_name(shift)}"] if shift else [])
    if attribute is not None:
        parts += [safe_name(attribute), strength_label(strength)]
    return str(PurePosixPath(*parts, name))


def noise_file(latents_file: Path) -> Path:
    """The noise maps `project --save-noise` wrote beside a latents part."""
    return RunDir.of_part(latents_file).noise_part(latents_file.stem)


def plan_items(
    index: LatentIndex,
    attributes: Sequence[str],
    strengths: Sequence[float],
    limit: int | None = None,
    shifts: Sequence[str] = (),
) -> list[dict]:
    """Per ok latent: each edit with the run's generator, then per shift the plain latent and each edit."""
    rows = np.flatnonzero(index.ok)
    if limit is not None:
        rows = rows[:limit]
    names = output_names([str(index.image_ids[r]) for r in rows])  # x.jpg and x.png never share a file
    edits: list[tuple[str | None, float | None]] = [(a, float(s)) for a in attributes for s in strengths]
    renders = [(a, s, None) for a, s in edits] + [(a, s, g) for g in shifts for a, s in [(None, None), *edits]]
    return [
        {
            "out_name": names[str(index.image_ids[r])],
            "image_id": item_id(str(index.image_ids[r]), attr, s, shift),
            "source_id": str(index.image_ids[r]),
            "attribute": attr,
            "strength": s,
            "shift": shift,
            "part": str(index.files[index.file_of_row[r]]),
            "row": int(index.row_in_file[r]),
        }
        for r in rows
        for attr, s, shift in renders
    ]


def manifest_schema(num_ws: int, w_dim: int) -> pa.Schema:
    about = [
        pa.field("source_image_id", pa.string()),
        pa.field("attribute", pa.string()),
        pa.field("strength", pa.float64()),
        pa.field("mode", pa.string()),
        pa.field("condition", pa.list_(pa.string())),
        pa.field("layers", pa.string()),
        pa.field("distance_before", pa.float64()),
        pa.field("distance_after", pa.float64()),
        pa.field("shift", pa.string()),  # the shifted generator's name (null: the run's own generator)
        pa.field("generator", pa.string()),  # the file that drew this image
        pa.field("generator_sha256", pa.string()),
        pa.field("path", pa.string()),
    ]
    return latents_schema(num_ws, w_dim, about=about)


@dataclass(frozen=True)
class ShiftFacts(JsonRecord):
    """A shifted generator as the run's config records it (its file is in the runtime)."""

    name: str
    sha256: str


@dataclass(frozen=True)
class AugmentConfig(JsonRecord):
    """What decides an augment run's rows (hashed: other values are another run)."""

    latents: tuple[str, ...]  # the latents parts read
    latent_column: str
    latent_shape: tuple[int, int]  # (num_ws, w_dim)
    boundaries: str | None  # the boundaries file (None: no edits, shifts only)
    # Per boundary used (edited along or held), a fingerprint of its normal: a rewritten file with other
    # normals must not resume into the same manifest.
    boundaries_used: dict[str, str]
    attributes: tuple[str, ...]
    strengths: tuple[float, ...]
    conditions: tuple[str, ...]  # boundaries whose distances must not move
    edit_layers: tuple[int, ...] | None  # W+ rows an edit may move (None: each boundary's own)
    layers_label: str  # the manifest's `layers`
    mode: str  # relative | absolute
    use_saved_noise: bool
    generator_sha256: str
    limit: int | None  # only the first N ok latents
    # Recorded only with shifts: an edits-only run keeps the config (and the resume) it had before shifts existed.
    shifts: tuple[ShiftFacts, ...] | None = record_field(None, omit_none=True)


@dataclass(frozen=True)
class AugmentRuntime(JsonRecord):
    """What a worker needs besides the config, free to change on resume."""

    generator_path: str
    batch_size: int  # images rendered together
    shift_paths: dict[str, str]  # shift name -> its generator file
    sheet_sources: tuple[str, ...]  # sources rendered unedited too, for the contact sheets' strength-0 column


@dataclass
class AugmentState:
    generators: dict[str | None, Any]  # shift name (None: the run's own generator) -> G
    device: Any
    steps: dict[str, Any]  # attribute -> the W+ step that moves its distance by 1
    boundaries: dict[str, Any]  # attribute -> Boundary
    config: AugmentConfig
    runtime: AugmentRuntime


def setup_augment(setup: WorkerSetup[AugmentConfig, AugmentRuntime]) -> AugmentState:
    """Once per worker: the generators (the run's and each shifted one, checked by sha256) and, per
    attribute, the W+ step that moves its distance by 1."""
    from facebatch.nets.checkpoints import load_networks
    from facebatch.stages.common import worker_networks

    cfg, rt = setup.config, setup.runtime
    nets, device = worker_networks(setup, rt.generator_path, cfg.generator_sha256, with_d=False)
    steps, targets = {}, {}
    if cfg.attributes:
        boundaries = load_boundaries(storage.location(cfg.boundaries))
        conditions = pick(boundaries, list(cfg.conditions), "condition")
        for attr in cfg.attributes:
            (b,) = pick(boundaries, [attr])
            conds = [c for c in conditions if c.name != attr]
            steps[attr] = edit_step(b, conds, cfg.edit_layers)
            targets[attr] = b
    generators = {None: nets.G.eval()}
    for shift in cfg.shifts or ():
        path = rt.shift_paths[shift.name]
        shifted = load_networks(path, device=str(device), with_d=False, expect_sha256=shift.sha256)
        generators[shift.name] = shifted.G.eval()
    return AugmentState(generators, device, steps, targets, cfg, rt)


def _noise_for(state: AugmentState, part: str, source_id: str) -> list[np.ndarray] | None:
    from facebatch.pipeline.noise_store import read_noise

    if not state.config.use_saved_noise:
        return None
    path = noise_file(storage.location(part))
    if not path.exists():
        raise FileNotFoundError(f"no saved noise file {path} for this image")
    return read_noise(path, source_id)


def process_augment(state: AugmentState, items: list[dict], info: ShardInfo) -> pa.Table:
    from facebatch.pipeline.images import save_image

    cfg, rt = state.config, state.runtime
    generators = state.generators
    out_dir = storage.location(info.out_dir)
    # One read per source latent, even though each appears once per attribute and strength.
    sources = list(dict.fromkeys((i["part"], i["row"]) for i in items))
    files = sorted({p for p, _ in sources})
    src_ws = read_rows(
        [storage.location(f) for f in files],
        cfg.latent_column,
        cfg.latent_shape,
        np.array([files.index(p) for p, _ in sources]),
        np.array([r for _, r in sources]),
    )
    where = {key: n for n, key in enumerate(sources)}

    n = len(items)
    edited = np.zeros((n,) + cfg.latent_shape, dtype=np.float32)
    before, after = np.full(n, np.nan), np.full(n, np.nan)
    paths: list[str | None] = [None] * n
    errors: list[str | None] = [None] * n
    by_attr: dict[str, list[int]] = defaultdict(list)
    for k, it in enumerate(items):
        if it["attribute"] is None:  # a shifted render of the latent as it is
            edited[k] = src_ws[where[(it["part"], it["row"])]]
        else:
            by_attr[it["attribute"]].append(k)
    for attr, ks in by_attr.items():
        b = state.boundaries[attr]
        ws = src_ws[[where[(items[k]["part"], items[k]["row"])] for k in ks]]
        strengths = np.array([items[k]["strength"] for k in ks], dtype=np.float64)
        edited[ks] = edit_latents(ws, b, strengths, mode=cfg.mode, step=state.steps[attr])
        before[ks] = b.distance(ws)
        after[ks] = b.distance(edited[ks])

    todo, noise_cache = [], {}
    for k, it in enumerate(items):
        try:
            paths[k] = output_path(
                it["source_id"], it["attribute"], it["strength"], it.get("out_name"), it.get("shift")
            )
            key = (it["part"], it["source_id"])
            if key not in noise_cache:
                noise_cache[key] = _noise_for(state, *key)
            todo.append((k, noise_cache[key]))
        except (ValueError, KeyError, FileNotFoundError, OSError) as exc:
            errors[k] = f"{type(exc).__name__}: {exc}"
    batch = rt.batch_size
    by_generator: dict[str | None, list] = defaultdict(list)
    for k, nz in todo:
        by_generator[items[k].get("shift")].append((k, nz))
    chunks = [
        (shift, group[start : start + batch])
        for shift, group in by_generator.items()
        for start in range(0, len(group), batch)
    ]
    for shift, chunk in chunks:
        G = generators[shift]
        ks = [k for k, _ in chunk]
        try:
            img = _render(G, edited[ks], [nz for _, nz in chunk], state.device)
            for j, k in enumerate(ks):
                save_image(img[j].cpu(), out_dir / paths[k])
        except Exception as exc:  # a failed batch becomes error rows, the shard goes on
            for k in ks:
                errors[k] = f"{type(exc).__name__}: {exc}"

    _render_sheet_bases(state, items, src_ws, where, noise_cache, out_dir)
    ok = np.array([e is None for e in errors])
    files = {None: rt.generator_path, **rt.shift_paths}
    shas = {None: cfg.generator_sha256, **{s.name: s.sha256 for s in cfg.shifts or ()}}
    edits = [it["attribute"] is not None for it in items]
    return pa.Table.from_arrays(
        [
            pa.array([it["image_id"] for it in items]),
            pa.array([it["source_id"] for it in items]),
            pa.array([it["attribute"] for it in items], pa.string()),
            pa.array([it["strength"] for it in items], pa.float64()),
            pa.array([cfg.mode if e else None for e in edits], pa.string()),
            pa.array(
                [[c for c in cfg.conditions if c != it["attribute"]] if e else [] for it, e in zip(items, edits)],
                pa.list_(pa.string()),
            ),
            pa.array([cfg.layers_label if e else None for e in edits], pa.string()),
            pa.array(before),
            pa.array(after),
            pa.array([it.get("shift") for it in items], pa.string()),
            pa.array([files[it.get("shift")] for it in items], pa.string()),
            pa.array([shas[it.get("shift")] for it in items], pa.string()),
            pa.array([p if e is None else None for p, e in zip(paths, errors)], pa.string()),
            pa.array(["ok" if e is None else "error" for e in errors]),
            pa.array(errors, pa.string()),
            latent_array_masked(edited, ok, cfg.latent_shape),
        ],
        schema=manifest_schema(*cfg.latent_shape),
    )


def _render_sheet_bases(
    state: AugmentState, items: list[dict], src_ws, where: dict, noise_cache: dict, out_dir: Path
) -> None:
    """The unedited render (the reconstruction) of each contact-sheet source in this shard: the sheets' strength-0
    column. Side files of the sheets, not rows of the manifest: the augmentation set stays what was asked for."""
    from facebatch.pipeline.images import save_image

    wanted = set(state.runtime.sheet_sources)
    firsts = {it["source_id"]: it for it in items if it["source_id"] in wanted}
    for source_id, it in firsts.items():
        nz = noise_cache.get((it["part"], source_id))
        try:
            img = _render(state.generators[None], src_ws[where[(it["part"], it["row"])]][None], [nz], state.device)
            save_image(img[0].cpu(), out_dir / sheet_base_path(source_id, it.get("out_name")))
        except Exception:  # noqa: BLE001 - a sheet's picture must never fail the rows; the cell stays grey
            continue


def _render(G, ws: np.ndarray, noises: list, device):
    """G's images of W+ codes [B, num_ws, w_dim]: with each image's saved noise maps (a list per image, all
    given or all None), else const noise."""
    import torch

    ws_t = torch.from_numpy(np.ascontiguousarray(ws)).to(device)
    with torch.no_grad():
        if noises[0] is None:
            return G.synthesis(ws_t, noise_mode="const")
        noise = [torch.from_numpy(np.stack([nz[layer] for nz in noises])).to(device) for layer in range(len(noises[0]))]
        return G.synthesis(ws_t, noise=noise)


def sheet_base_path(source_id: str, name: str | None = None) -> str:
    """contact_sheets/reconstructions/<name>, relative to AUG."""
    return str(PurePosixPath(SHEETS, "reconstructions", name or output_names([source_id])[source_id]))


def _fingerprint(b) -> str:
    import hashlib

    h = hashlib.sha256(f"{b.space}|{b.layers}|{b.num_ws}".encode())
    h.update(b.normal.tobytes())
    h.update(b.intercept.tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Shift:
    """A shifted generator (e.g. a `facebatch nada` output) the latents are also rendered through."""

    name: str  # folder and manifest name: the file's stem, made unique
    path: Path
    sha256: str


def _architecture(path: Path) -> tuple[dict, dict]:
    """(W+ shape and resolution, parameter name -> shape) of a checkpoint, without building it; its weights finite."""
    from facebatch.nets.arch_check import check_finite
    from facebatch.nets.checkpoints import read_checkpoint

    _, raw = read_checkpoint(path)
    check_finite("generator", raw.g_state, path)  # here, once: in the workers it would fail every shard
    shapes = {k: tuple(v.shape) for k, v in raw.g_state.items()}
    kw = raw.g_kwargs
    return {k: kw.get(k) for k in ("z_dim", "w_dim", "img_resolution", "img_channels")}, shapes


def resolve_shifts(specs: Sequence[str], base_path: Path, base_sha: str, force: bool) -> list[Shift]:
    """--shift files: readable generators of the run generator's architecture, each once. A NADA output
    records its base generator: one trained from another generator than the latents' is refused
    unless --force (the latents would mean other images)."""
    from facebatch.domain_shift.train import read_nada_metadata
    from facebatch.errors import InputError
    from facebatch.nets import cache
    from facebatch.nets.checkpoints import resolve

    if not specs:
        return []
    base_summary, base_shapes = _architecture(base_path)
    shifts: list[Shift] = []
    for spec in specs:
        path, name = resolve(spec)
        path = Path(path).resolve()
        sha = cache.sha256_of(path)
        if sha == base_sha:
            raise InputError(f"--shift {spec} is the run's own generator (sha256 {sha[:12]}); nothing would shift")
        if any(s.sha256 == sha for s in shifts):
            raise InputError(f"--shift {spec} is given twice (sha256 {sha[:12]})")
        summary, shapes = _architecture(path)
        if summary != base_summary or shapes != base_shapes:
            diffs = [f"{k} {summary[k]} vs {base_summary[k]}" for k in summary if summary[k] != base_summary[k]]
            diffs += [
                f"{k} {list(shapes.get(k, ()))} vs {list(v)}" for k, v in base_shapes.items() if shapes.get(k) != v
            ]
            first = (diffs or ["other parameters"])[0]
            raise InputError(
                f"--shift {spec}: its architecture does not match the run's generator ({first}); "
                "a shifted generator must be a fine-tuned copy of the generator that made the latents"
            )
        base_of = (read_nada_metadata(path) or {}).get("base_generator") or {}
        if not force and base_of.get("sha256") and base_of["sha256"] != base_sha:
            raise InputError(
                f"--shift {spec} was trained from generator {base_of['sha256'][:12]}, the latents' generator is "
                f"{base_sha[:12]}; pass --force to render through it anyway"
            )
        unique, n = safe_name(name), 2  # resolve() names a file by its stem, a registry entry by its name
        while any(s.name == unique for s in shifts):
            unique, n = f"{safe_name(name)}-{n}", n + 1
        shifts.append(Shift(unique, path, sha))
    return shifts


def build_augment_spec(
    *,
    index: LatentIndex,
    boundaries_path: Path | None,
    attributes: Sequence[str],
    strengths: Sequence[float],
    out_dir: Path,
    generator: str | None,
    shifts: Sequence[str] = (),
    conditions: Sequence[str] = (),
    layers: str | None = None,
    mode: str = "relative",
    noise: str = "auto",
    shard_size: int = 256,
    batch_size: int = 8,
    limit: int | None = None,
    force: bool = False,
    sheet_rows: int = 16,
):
    """Validate everything a user can get wrong here, in the driver, before any worker starts.

    The first `sheet_rows` sources are also rendered unedited (their reconstruction) for the contact sheets."""
    from facebatch.edit.apply import MODES
    from facebatch.edit.layers import format_layers, parse_layers
    from facebatch.errors import InputError

    if mode not in MODES:
        raise InputError(f"--mode must be relative or absolute, not {mode!r}")
    if noise not in ("auto", "saved", "const"):
        raise InputError(f"--noise must be auto, saved or const, not {noise!r}")
    if not attributes and not shifts:
        raise InputError("nothing to render: give --attr (edits) and/or --shift (shifted generators)")
    if attributes and not strengths:
        raise InputError("no strengths given")
    if len(set(map(strength_label, strengths))) != len(strengths):
        raise InputError(f"--strengths has repeated values: {list(strengths)}")
    if shard_size < 1 or batch_size < 1:
        raise InputError("--shard-size and --batch-size must be at least 1")
    if attributes:
        if boundaries_path is None:
            raise InputError("--attr needs --boundaries")
        boundaries = load_boundaries(boundaries_path)
        targets = pick(boundaries, attributes)
        conds = pick(boundaries, conditions, "condition")
    elif conditions:
        raise InputError("--condition only applies to --attr edits")
    else:
        targets, conds = [], []
    edit_layers = parse_layers(layers, index.num_ws) if layers else None
    for b in targets:
        b.check_latents(np.zeros((1,) + index.shape, dtype=np.float32))
        edit_step(b, [c for c in conds if c.name != b.name], edit_layers)  # raises on impossible conditions
    path, sha = resolve_generator(generator, index)
    check_generator(sha, index, targets + conds, force)
    shifted = resolve_shifts(shifts, path, sha, force)
    saved = any(noise_file(f).exists() for f in index.files)
    if noise == "saved" and not saved:
        raise InputError(f"--noise saved: no saved noise beside the latents ({noise_file(index.files[0]).parent})")
    items = plan_items(index, list(attributes), list(strengths) if attributes else [], limit, [s.name for s in shifted])
    if not items:
        raise InputError("the latents table has no ok rows to edit")
    config = AugmentConfig(
        latents=tuple(str(f.resolve()) for f in index.files),
        latent_column=index.column,
        latent_shape=tuple(index.shape),
        boundaries=storage.resolved(boundaries_path) if attributes else None,
        boundaries_used={b.name: _fingerprint(b) for b in targets + conds},
        attributes=tuple(attributes),
        strengths=tuple(float(s) for s in strengths),
        conditions=tuple(conditions),
        edit_layers=tuple(edit_layers) if edit_layers is not None else None,
        layers_label=format_layers(edit_layers) if edit_layers else "boundary",
        mode=mode,
        use_saved_noise=noise == "saved" or (noise == "auto" and saved),
        generator_sha256=sha,
        limit=limit,
        shifts=tuple(ShiftFacts(s.name, s.sha256) for s in shifted) or None,
    )
    return StageSpec(
        name="augment",
        out_dir=storage.location(out_dir),
        table=TABLE,
        items=items,
        shard_size=shard_size,
        config=config,
        setup=setup_augment,
        process=process_augment,
        runtime=AugmentRuntime(
            generator_path=str(path),
            batch_size=batch_size,
            shift_paths={s.name: str(s.path) for s in shifted},
            sheet_sources=tuple(dict.fromkeys(it["source_id"] for it in items))[: max(sheet_rows, 0)],
        ),
        schema=manifest_schema(*index.shape),
        side_dirs=(IMAGES, SHEETS),
        metadata={"generator_sha256": sha},
    )


def write_contact_sheets(out_dir: Path, max_rows: int = 16) -> dict[str, Path]:
    """Sheets built from the manifest and the PNGs on disk after the run, so a resumed run gets complete ones.
    Every row is one source image, labelled by its id; every sheet starts with the original photo (or sample)
    and its reconstruction (the unedited latent: strength 0, framed):

    - per attribute, ``<attribute>.png`` (the run's generator) and ``<attribute>@<shift>.png``:
      original | reconstruction | each strength (through the shift: its unedited render is the 0 column);
    - ``@shifts.png`` (no attribute's sheet has an "@" in its name): original | reconstruction | each
      shifted generator's render of the unedited latent.
    """

    from facebatch.pipeline.atomic import atomic_write_bytes
    from facebatch.sheets import edit_grid

    run = RunDir(storage.location(out_dir), TABLE)
    dataset = open_dataset(run.table_dir)
    columns = ["source_image_id", "attribute", "strength", "path", "status"]
    has_shift = "shift" in dataset.schema.names  # manifests written before shifts existed have no such column
    rows_all = dataset.to_table(columns=columns + (["shift"] if has_shift else [])).to_pylist()
    for r in rows_all:
        r.setdefault("shift", None)
    sources = list(dict.fromkeys(r["source_image_id"] for r in rows_all))[:max_rows]
    names = output_names(list(dict.fromkeys(r["source_image_id"] for r in rows_all)))
    originals = _original_images(run, sources)
    bases = {src: _existing(run.root / sheet_base_path(src, names[src])) for src in sources}
    plain = {(r["source_image_id"], r["shift"]): run.root / r["path"] for r in rows_all
             if r["attribute"] is None and r["status"] == "ok"}  # fmt: skip
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows_all:
        if r["attribute"] is not None:
            groups[(r["attribute"], r["shift"] or "")].append(r)
    written = {}
    for (attr, shift), rows in sorted(groups.items()):
        strengths = sorted({r["strength"] for r in rows})
        ok = {(r["source_image_id"], r["strength"]): run.root / r["path"] for r in rows if r["status"] == "ok"}
        zero = (lambda src: plain.get((src, shift))) if shift else bases.get
        cells = [[originals.get(src), zero(src), *[ok.get((src, s)) for s in strengths]] for src in sources]
        labels = ["original", f"0: {shift}" if shift else "0: reconstr.", *[strength_label(s) for s in strengths]]
        name = f"{safe_name(attr)}@{safe_name(shift)}" if shift else safe_name(attr)
        title = f"{attr} through {shift}" if shift else attr
        path = run.folder(SHEETS) / f"{name}.png"
        atomic_write_bytes(path, edit_grid(title, labels, cells, row_labels=sources, marked_column=1))
        written[name] = path
    shifts = list(dict.fromkeys(g for (_, g) in plain if g))
    if shifts:
        # Column labels without the names' common start ("celeba64-smiling", "celeba64-glasses" -> "smiling", ...)
        common = os.path.commonprefix(shifts) if len(shifts) > 1 else ""
        labels = ["original", "reconstr.", *[g[len(common) :] or g for g in shifts]]
        title = "shifted generators" + (f" ({common}...)" if common else "")
        cells = [[originals.get(src), bases.get(src), *[plain.get((src, g)) for g in shifts]] for src in sources]
        path = run.folder(SHEETS) / "@shifts.png"
        atomic_write_bytes(path, edit_grid(title, labels, cells, row_labels=sources, marked_column=1))
        written["@shifts"] = path
    return written


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def _original_images(run: RunDir, sources: Sequence[str]) -> dict[str, Path | None]:
    """The photo each source latent was projected from (a project run's source_path), or the sample itself
    (a sample run's images/<id>); None where neither can be found (a grey cell)."""
    record = run.read_run()
    # This run's record, rewritten by this version when the run started: its own config record reads it.
    parts = [storage.location(p) for p in AugmentConfig.from_json(record.config).latents] if record is not None else []
    if not parts:
        return {}
    wanted, found = set(sources), {}
    try:
        table = open_dataset([p for p in parts if p.is_file()])
        columns = [c for c in ("image_id", "source_path") if c in table.schema.names]
        rows = table.to_table(columns=columns).to_pylist()
    except (OSError, ValueError):
        return {}
    latents_root = RunDir.of_part(parts[0]).root
    for row in rows:
        src = row.get("image_id")
        if src not in wanted:
            continue
        candidates = [row.get("source_path"), latents_root / IMAGES / safe_relpath(src)]
        found[src] = next((storage.location(c) for c in candidates if c and storage.location(c).is_file()), None)
    return found
