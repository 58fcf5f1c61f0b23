"""The `augment` stage: every ok latent x attribute x strength -> an edited image and a manifest row.

Runs through the shared shard runner, so it is sharded, resumable and distributable like
`project`. One item is one (image, attribute, strength) triple with the id
``<image_id>@<attribute>=<strength>``; items of one source image are adjacent so a shard reads each
latent once. Items carry the latents part file and row, not the latent, to keep the plan small.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from facebatch.edit.apply import edit_latents
from facebatch.edit.boundaries_io import load_boundaries, pick
from facebatch.edit.conditional import edit_step
from facebatch.pipeline.latents import LatentIndex, read_rows
from facebatch.pipeline.rundir import IMAGES, SHEETS, RunDir, output_names
from facebatch.pipeline.runner import StageSpec
from facebatch.pipeline.shard_task import ShardInfo
from facebatch.pipeline.table import latent_array_masked, latent_field

TABLE = "manifest"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def strength_label(s: float) -> str:
    return f"{s:+g}"


def safe_name(text: str) -> str:
    """A path component from an attribute name (CSV headers may hold spaces or slashes)."""
    return _UNSAFE.sub("_", text) or "_"


def item_id(source_id: str, attribute: str, strength: float) -> str:
    return f"{source_id}@{attribute}={strength_label(strength)}"


def output_path(source_id: str, attribute: str, strength: float, name: str | None = None) -> str:
    """images/<attribute>/<strength>/<name>, relative to AUG; `name` comes from `rundir.output_names`
    over the run's sources (unique, never leaving AUG), else it is computed for this id alone."""
    name = name or output_names([source_id])[source_id]
    return str(PurePosixPath(IMAGES, safe_name(attribute), strength_label(strength), name))


def noise_file(latents_file: Path) -> Path:
    """The noise maps `project --save-noise` wrote beside a latents part."""
    return RunDir.of_part(latents_file).noise_part(latents_file.stem)


def plan_items(
    index: LatentIndex, attributes: Sequence[str], strengths: Sequence[float], limit: int | None = None
) -> list[dict]:
    rows = np.flatnonzero(index.ok)
    if limit is not None:
        rows = rows[:limit]
    names = output_names([str(index.image_ids[r]) for r in rows])  # x.jpg and x.png never share a file
    return [
        {
            "out_name": names[str(index.image_ids[r])],
            "image_id": item_id(str(index.image_ids[r]), attr, s),
            "source_id": str(index.image_ids[r]),
            "attribute": attr,
            "strength": float(s),
            "part": str(index.files[index.file_of_row[r]]),
            "row": int(index.row_in_file[r]),
        }
        for r in rows
        for attr in attributes
        for s in strengths
    ]


def manifest_schema(num_ws: int, w_dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("image_id", pa.string()),
            pa.field("source_image_id", pa.string()),
            pa.field("attribute", pa.string()),
            pa.field("strength", pa.float64()),
            pa.field("mode", pa.string()),
            pa.field("condition", pa.list_(pa.string())),
            pa.field("layers", pa.string()),
            pa.field("distance_before", pa.float64()),
            pa.field("distance_after", pa.float64()),
            pa.field("path", pa.string()),
            pa.field("status", pa.string()),
            pa.field("error", pa.string()),
            latent_field("w", (num_ws, w_dim)),
        ]
    )


def setup_augment(config: dict) -> dict[str, Any]:
    """Once per worker: the generator and, per attribute, the W+ step that moves its distance by 1."""
    from facebatch.stages.common import worker_networks

    nets, device = worker_networks(config, with_d=False)
    boundaries = load_boundaries(Path(config["boundaries"]))
    conditions = pick(boundaries, config["conditions"], "condition")
    steps, targets = {}, {}
    for attr in config["attributes"]:
        (b,) = pick(boundaries, [attr])
        conds = [c for c in conditions if c.name != attr]
        steps[attr] = edit_step(b, conds, config["edit_layers"])
        targets[attr] = b
    return {"G": nets.G.eval(), "device": device, "steps": steps, "boundaries": targets, "config": config}


def _noise_for(state: dict, part: str, source_id: str) -> list[np.ndarray] | None:
    from facebatch.pipeline.noise_store import read_noise

    if not state["config"]["use_saved_noise"]:
        return None
    path = noise_file(Path(part))
    if not path.exists():
        raise FileNotFoundError(f"no saved noise file {path} for this image")
    return read_noise(path, source_id)


def process_augment(state: dict, items: list[dict], info: ShardInfo) -> pa.Table:
    import torch

    from facebatch.pipeline.images import save_image

    cfg = state["config"]
    G = state["G"]
    out_dir = Path(info.out_dir)
    # One read per source latent, even though each appears once per attribute and strength.
    sources = list(dict.fromkeys((i["part"], i["row"]) for i in items))
    files = sorted({p for p, _ in sources})
    src_ws = read_rows(
        [Path(f) for f in files],
        cfg["latent_column"],
        tuple(cfg["latent_shape"]),
        np.array([files.index(p) for p, _ in sources]),
        np.array([r for _, r in sources]),
    )
    where = {key: n for n, key in enumerate(sources)}

    n = len(items)
    edited = np.zeros((n,) + tuple(cfg["latent_shape"]), dtype=np.float32)
    before, after = np.full(n, np.nan), np.full(n, np.nan)
    paths: list[str | None] = [None] * n
    errors: list[str | None] = [None] * n
    by_attr: dict[str, list[int]] = defaultdict(list)
    for k, it in enumerate(items):
        by_attr[it["attribute"]].append(k)
    for attr, ks in by_attr.items():
        b = state["boundaries"][attr]
        ws = src_ws[[where[(items[k]["part"], items[k]["row"])] for k in ks]]
        strengths = np.array([items[k]["strength"] for k in ks], dtype=np.float64)
        edited[ks] = edit_latents(ws, b, strengths, mode=cfg["mode"], step=state["steps"][attr])
        before[ks] = b.distance(ws)
        after[ks] = b.distance(edited[ks])

    todo, noise_cache = [], {}
    for k, it in enumerate(items):
        try:
            paths[k] = output_path(it["source_id"], it["attribute"], it["strength"], it.get("out_name"))
            key = (it["part"], it["source_id"])
            if key not in noise_cache:
                noise_cache[key] = _noise_for(state, *key)
            todo.append((k, noise_cache[key]))
        except (ValueError, KeyError, FileNotFoundError, OSError) as exc:
            errors[k] = f"{type(exc).__name__}: {exc}"
    batch = int(cfg.get("batch_size", 8))
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        ks = [k for k, _ in chunk]
        try:
            ws_t = torch.from_numpy(edited[ks]).to(state["device"])
            with torch.no_grad():
                if chunk[0][1] is not None:
                    noise = [
                        torch.from_numpy(np.stack([nz[layer] for _, nz in chunk])).to(state["device"])
                        for layer in range(len(chunk[0][1]))
                    ]
                    img = G.synthesis(ws_t, noise=noise)
                else:
                    img = G.synthesis(ws_t, noise_mode="const")
            for j, k in enumerate(ks):
                save_image(img[j].cpu(), out_dir / paths[k])
        except Exception as exc:  # a failed batch becomes error rows, the shard goes on
            for k in ks:
                errors[k] = f"{type(exc).__name__}: {exc}"

    ok = np.array([e is None for e in errors])
    return pa.Table.from_arrays(
        [
            pa.array([it["image_id"] for it in items]),
            pa.array([it["source_id"] for it in items]),
            pa.array([it["attribute"] for it in items]),
            pa.array([it["strength"] for it in items], pa.float64()),
            pa.array([cfg["mode"]] * n),
            pa.array([[c for c in cfg["conditions"] if c != it["attribute"]] for it in items], pa.list_(pa.string())),
            pa.array([cfg["layers_label"]] * n),
            pa.array(before),
            pa.array(after),
            pa.array([p if e is None else None for p, e in zip(paths, errors)], pa.string()),
            pa.array(["ok" if e is None else "error" for e in errors]),
            pa.array(errors, pa.string()),
            latent_array_masked(edited, ok, tuple(cfg["latent_shape"])),
        ],
        schema=manifest_schema(*cfg["latent_shape"]),
    )


def _fingerprint(b) -> str:
    import hashlib

    h = hashlib.sha256(f"{b.space}|{b.layers}|{b.num_ws}".encode())
    h.update(b.normal.tobytes())
    h.update(b.intercept.tobytes())
    return h.hexdigest()[:16]


def resolve_generator(spec: str | None, index: LatentIndex) -> tuple[Path, str]:
    """(checkpoint path, sha256): --generator, else the one the latents' run recorded in its _run.json."""
    from facebatch.errors import FacebatchError, InputError
    from facebatch.nets import cache
    from facebatch.nets.checkpoints import resolve

    if spec is None:
        # the run's recorded file first, then what `sample` records: a registry name or file stem
        candidates = [
            RunDir.of_part(index.files[0]).generator_path(),
            index.metadata.get("generator"),
        ]  # `sample` records a registry name or file stem
        for candidate in filter(None, candidates):
            try:
                path, _ = resolve(candidate)
            except FacebatchError:
                continue
            return Path(path).resolve(), cache.sha256_of(path)
        raise InputError("the latents do not say where their generator file is; pass --generator")
    path, _ = resolve(spec)
    return Path(path).resolve(), cache.sha256_of(path)


def check_generator(sha: str, index: LatentIndex, boundaries: Sequence, force: bool) -> None:
    """Latents, boundaries and generator must come from one generator: an edit is meaningless otherwise."""
    from facebatch.errors import InputError

    if force:
        return
    if index.generator_sha256 and index.generator_sha256 != sha:
        raise InputError(
            f"the latents were made with generator {index.generator_sha256[:12]}, --generator is "
            f"{sha[:12]}; pass --force to edit anyway"
        )
    for b in boundaries:
        if b.generator_sha256 and b.generator_sha256 != sha:
            raise InputError(
                f"boundary {b.name!r} was fitted for generator {b.generator_sha256[:12]}, --generator is "
                f"{sha[:12]}; pass --force to use it anyway"
            )


def build_augment_spec(
    *,
    index: LatentIndex,
    boundaries_path: Path,
    attributes: Sequence[str],
    strengths: Sequence[float],
    out_dir: Path,
    generator: str | None,
    conditions: Sequence[str] = (),
    layers: str | None = None,
    mode: str = "relative",
    noise: str = "auto",
    shard_size: int = 256,
    batch_size: int = 8,
    limit: int | None = None,
    force: bool = False,
):
    """Validate everything a user can get wrong here, in the driver, before any worker starts."""
    from facebatch.edit.apply import MODES
    from facebatch.edit.layers import format_layers, parse_layers
    from facebatch.errors import InputError

    if mode not in MODES:
        raise InputError(f"--mode must be relative or absolute, not {mode!r}")
    if noise not in ("auto", "saved", "const"):
        raise InputError(f"--noise must be auto, saved or const, not {noise!r}")
    if not strengths:
        raise InputError("no strengths given")
    if len(set(map(strength_label, strengths))) != len(strengths):
        raise InputError(f"--strengths has repeated values: {list(strengths)}")
    if shard_size < 1 or batch_size < 1:
        raise InputError("--shard-size and --batch-size must be at least 1")
    boundaries = load_boundaries(boundaries_path)
    targets = pick(boundaries, attributes)
    conds = pick(boundaries, conditions, "condition")
    edit_layers = parse_layers(layers, index.num_ws) if layers else None
    for b in targets:
        b.check_latents(np.zeros((1,) + index.shape, dtype=np.float32))
        edit_step(b, [c for c in conds if c.name != b.name], edit_layers)  # raises on impossible conditions
    path, sha = resolve_generator(generator, index)
    check_generator(sha, index, targets + conds, force)
    saved = any(noise_file(f).exists() for f in index.files)
    if noise == "saved" and not saved:
        raise InputError(f"--noise saved: no saved noise beside the latents ({noise_file(index.files[0]).parent})")
    items = plan_items(index, list(attributes), list(strengths), limit)
    if not items:
        raise InputError("the latents table has no ok rows to edit")
    config = {
        "latents": [str(f.resolve()) for f in index.files],
        "latent_column": index.column,
        "latent_shape": list(index.shape),
        "boundaries": str(Path(boundaries_path).resolve()),
        # A rewritten boundaries file with other normals must not resume into the same manifest.
        "boundaries_used": {b.name: _fingerprint(b) for b in targets + conds},
        "attributes": list(attributes),
        "strengths": [float(s) for s in strengths],
        "conditions": list(conditions),
        "edit_layers": edit_layers,
        "layers_label": format_layers(edit_layers) if edit_layers else "boundary",
        "mode": mode,
        "use_saved_noise": noise == "saved" or (noise == "auto" and saved),
        "generator_sha256": sha,
        "limit": limit,
    }
    return StageSpec(
        name="augment",
        out_dir=Path(out_dir),
        table=TABLE,
        items=items,
        shard_size=shard_size,
        config=config,
        setup=setup_augment,
        process=process_augment,
        runtime={"generator_path": str(path), "batch_size": batch_size},
        schema=manifest_schema(*index.shape),
        side_dirs=(IMAGES, SHEETS),
        metadata={"generator_sha256": sha},
    )


def write_contact_sheets(out_dir: Path, max_rows: int = 16) -> dict[str, Path]:
    """One sheet per attribute in AUG/manifest (rows = source images, columns = strengths), built from
    the manifest and the PNGs on disk after the run, so a resumed run gets a complete sheet."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from facebatch.pipeline.atomic import atomic_write_bytes
    from facebatch.sheets import edit_grid

    run = RunDir(Path(out_dir), TABLE)
    table = pads.dataset(str(run.table_dir), format="parquet").to_table(
        columns=["source_image_id", "attribute", "strength", "path", "status"]
    )
    written = {}
    for attr in sorted(set(table.column("attribute").to_pylist())):
        rows = table.filter(pc.equal(table.column("attribute"), attr)).to_pylist()
        strengths = sorted({r["strength"] for r in rows})
        sources = list(dict.fromkeys(r["source_image_id"] for r in rows))[:max_rows]
        ok = {(r["source_image_id"], r["strength"]): run.root / r["path"] for r in rows if r["status"] == "ok"}
        cells = [[ok.get((src, s)) for s in strengths] for src in sources]
        path = run.folder(SHEETS) / f"{safe_name(attr)}.png"
        atomic_write_bytes(path, edit_grid(attr, [strength_label(s) for s in strengths], cells))
        written[attr] = path
    return written
