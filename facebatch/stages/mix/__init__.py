"""The `mix` stage: pairs of faces -> Image2StyleGAN(++) mixes and expression transfers, one or more rows per pair.

Apps (one per run): ``morph`` (frames between two W+ codes, noise maps too), ``crossover`` (a spatial
mask: A inside, B outside, blended by a masked projection; or ``layers``: the first k W+ rows from A, no
optimisation), ``inpaint`` (fill the pixels the mask marks unknown), ``style`` (B's texture inside a
region of A) and ``expression`` (Yang & Lim's per-layer alpha, an alpha sweep, or the neutral-pair
offset). The maths is `facebatch.edit.mixing`; this module reads pairs, masks and codes, calls it and
writes PNGs and rows.

    apps.py      the apps as a table: options, PAIRS.csv columns, mask, client checks, what each computes
    params.py    each app's own options as a record (what a run's config holds as its params)
    config.py    what a run records: its config (hashed) and runtime
    pairs.py     PAIRS.csv and the --latents runs it names
    worker.py    a shard on a worker: load pairs, run the app in batches, save files and rows
    outputs.py   the files a pair writes (OUT/images/<app>/<pair_id>/)
    manifest.py  the manifest table and the contact sheet
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from facebatch.checks import known_options
from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.rundir import IMAGES, MANIFEST, SHEETS
from facebatch.pipeline.runner import StageSpec
from facebatch.ranges import check_seeds, whole_number
from facebatch.stages.mix.apps import APPS
from facebatch.stages.mix.manifest import SCORES, manifest_schema, read_manifest, write_contact_sheet
from facebatch.stages.mix.pairs import open_runs, read_pairs
from facebatch.stages.mix.worker import process_mix, setup_mix

if TYPE_CHECKING:
    from facebatch.invert.presets import ProjectionConfig

__all__ = ["APPS", "build_mix_spec", "manifest_schema", "open_runs", "read_manifest", "write_contact_sheet"]


def build_mix_spec(
    *,
    app: str,
    pairs_csv: Path,
    out_dir: Path,
    nets,
    projection: ProjectionConfig,
    params: dict,
    latents: Sequence[Path] = (),
    seed: int = 0,
    shard_size: int = 64,
    batch_size: int = 8,
) -> StageSpec:
    """Validate what a user can get wrong (before any work) and describe the run; `nets` is the client's load."""
    from facebatch.stages.mix.config import MixConfig, MixGenerator, MixRuntime  # imports torch: not for --help

    if app not in APPS:
        raise InputError(f"unknown mix app {app!r}; choose one of {', '.join(APPS)}")
    known_options(params, APPS[app].options, f"mix {app}")
    whole_number(shard_size, "--shard-size", lo=1)
    whole_number(batch_size, "--batch-size", lo=1)
    check_seeds([seed], "--seed")
    G = nets.G
    runs = open_runs(latents) if latents else None
    if runs is not None and runs.sha256 and runs.sha256 != nets.sha256:
        raise InputError(
            f"--latents {runs.paths[0]} was made with generator {runs.sha256[:12]}, --generator is "
            f"{nets.sha256[:12]}: codes only mean something in their own generator"
        )
    if runs is not None:
        shape = tuple(runs.index.shape)
        if shape != (G.num_ws, G.w_dim):
            raise InputError(f"--latents codes are {list(shape)}, the generator's W+ is {[G.num_ws, G.w_dim]}")
    app_params = APPS[app].checked_params(params, G, projection)
    items = read_pairs(pairs_csv, APPS[app], runs)
    config = MixConfig(
        app=app,
        params=app_params,
        projection=projection,
        seed=int(seed),
        pairs=str(Path(pairs_csv).resolve()),
        latents=tuple(runs.paths) if runs else (),
        generator=MixGenerator(nets.name, nets.sha256, G.img_resolution),
        latent_shape=(G.num_ws, G.w_dim),
    )
    return StageSpec(
        name="mix",
        out_dir=storage.location(out_dir),
        table=MANIFEST,
        items=items,
        shard_size=shard_size,
        config=config,
        setup=setup_mix,
        process=process_mix,
        runtime=MixRuntime(
            generator_path=nets.location,
            generator_sha256=nets.sha256,
            batch_size=int(batch_size),
        ),
        schema=manifest_schema(G.num_ws, G.w_dim),
        score_columns=(*SCORES, "seconds"),
        side_dirs=(IMAGES, SHEETS),
        metadata={"generator_sha256": nets.sha256, "generator": nets.name},
        rows_per_item="many",
    )
