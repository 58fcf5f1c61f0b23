"""The stages: where networks meet the batch machinery, one module per stage.

A stage is a `StageSpec` (what `facebatch.pipeline.runner.run_stage` runs) built by one function of
its module from two frozen records of its own (`facebatch.pipeline.records`): its config (what `_run.json`
records and the resume hash covers) and its runtime (paths, batch size), plus two top-level functions the
spec names:

- ``setup(WorkerSetup) -> state``: once per worker process, with the typed config and runtime and the
  worker's device (load the generator, the landmark model, ...); the state is a dataclass;
- ``process(state, items, info) -> pyarrow.Table``: one shard of items in, its rows out (one row per
  item, or several for ``rows_per_item="many"``), every row with ``image_id``, ``status`` and
  ``error``; a bad input is an error row, never an exception.

The runner owns everything else: shards, resume, atomic parts, markers, ``_run.json``, ``_SUCCESS``,
retries, Ctrl-C, Dask. Side outputs go under the run folder (`info.run`, a `RunDir`).

Adding a stage is one module here (spec builder, schema, setup, process) and one command module in
`facebatch.cli` that parses options, builds the spec and calls `run_shards`.

- `sample`: seeds -> z, W+ and images
- `project`: images -> W+ latents + reconstruction scores
- `align`: images -> FFHQ-aligned crops + landmarks, one row per face
- `augment`: latents x boundaries x strengths -> edited images + manifest
- `label`: images, or latents rendered by their generator -> attribute probabilities (a labels.csv)
- `mix`: pairs of faces (PAIRS.csv) -> morphs, crossovers, inpainting, style and expression transfer + manifest
"""
