"""Paths are resolved on the client, and an existing cluster must share --out.

Roots: `run_stage` makes OUT absolute before any task is built; on an existing cluster the client writes
a probe file in OUT and every worker must read it back (`runner._check_shared_filesystem`), else one line:
"the workers do not share this filesystem".
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from facebatch.errors import InputError
from facebatch.pipeline import runner as runner_mod
from facebatch.pipeline.rundir import LATENTS, RunDir
from facebatch.pipeline.runner import ClusterOptions, StageSpec, run_stage


def setup(config):
    return config


def process(state, items, info):
    return pa.table(
        {
            "image_id": [i["image_id"] for i in items],
            "status": ["ok"] * len(items),
            "error": pa.array([None] * len(items), pa.string()),
            "cwd": [os.getcwd()] * len(items),
            "out": [str(info.out_dir)] * len(items),
        }
    )


def spec(out) -> StageSpec:
    return StageSpec(
        name="fs",
        out_dir=out,
        table=LATENTS,
        items=[{"image_id": f"{i}"} for i in range(3)],
        shard_size=2,
        config={},
        setup=setup,
        process=process,
    )


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)
    yield cluster.scheduler_address
    cluster.close()


def test_a_relative_out_reaches_the_tasks_as_an_absolute_path(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.chdir(tmp_path)
    summary = run_stage(spec(Path("rel_out")), ClusterOptions(workers=0), progress=False)
    assert summary.complete and summary.out_dir.is_absolute()
    assert pq.read_table(RunDir(tmp_path / "rel_out").table_dir).column("out")[0].as_py() == str(tmp_path / "rel_out")


def test_workers_that_share_the_folder_pass_the_check(tmp_path, scheduler):
    summary = run_stage(spec(tmp_path / "out"), ClusterOptions(scheduler=scheduler), progress=False)
    assert summary.complete
    assert not list((tmp_path / "out").glob(".facebatch-probe-*"))


@pytest.mark.parametrize("seen", [None, "another token"])
def test_workers_that_do_not_see_out_stop_the_run_with_one_line(tmp_path, scheduler, monkeypatch, seen):
    monkeypatch.setattr(runner_mod, "_read_probe", lambda path, options: seen)
    with pytest.raises(InputError, match="the workers do not share this filesystem"):
        run_stage(spec(tmp_path / "out"), ClusterOptions(scheduler=scheduler), progress=False)
    run_dir = RunDir(tmp_path / "out")
    assert not run_dir.success_file.exists()
    assert not list(run_dir.table_dir.glob("*.parquet"))
