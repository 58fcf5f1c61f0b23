"""The shard runner on a cheap fake stage: resume, refusal, retry of error rows, failures, Dask faults."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from facebatch.errors import InputError
from facebatch.pipeline.latents import read_latent_table
from facebatch.pipeline.records import RunRecord
from facebatch.pipeline.rundir import LATENTS, RunDir
from facebatch.pipeline.runner import ClusterOptions, StageSpec, run_stage
from facebatch.pipeline.table import latent_array_masked, latent_field

SHAPE = (2, 3)
SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("value", pa.float64()),
        latent_field("w", SHAPE),
        pa.field("pid", pa.int64()),
    ]
)


def fake_setup(config: dict) -> dict:
    """Stands in for loading a model: logs each load so tests can count them."""
    if config.get("setup_log"):
        with open(config["setup_log"], "a") as fh:
            fh.write(f"{os.getpid()}\n")
    return {"offset": config["offset"]}


def fake_process(state: dict, items: list[dict], info) -> pa.Table:
    """value = index + offset; items marked bad become error rows until their `fix` file exists."""
    rows_ok, values, errors = [], [], []
    for item in items:
        if item.get("die_once") and not Path(item["die_once"]).exists():
            Path(item["die_once"]).write_text("died")
            os._exit(1)  # a worker killed mid-shard
        time.sleep(item.get("sleep", 0))
        bad = item.get("bad") and not Path(item["bad"]).exists()
        rows_ok.append(not bad)
        values.append(None if bad else float(item["index"] + state["offset"]))
        errors.append("broken input" if bad else None)
    if any(item.get("raise") for item in items):
        raise RuntimeError("stage bug")
    n = len(items)
    latents = np.stack([np.full(SHAPE, v if v is not None else 0.0, np.float32) for v in values])
    return pa.Table.from_arrays(
        [
            pa.array([i["image_id"] for i in items]),
            pa.array(["ok" if ok else "error" for ok in rows_ok]),
            pa.array(errors, pa.string()),
            pa.array(values, pa.float64()),
            latent_array_masked(latents, np.array(rows_ok), SHAPE),
            pa.array([os.getpid()] * n, pa.int64()),
        ],
        schema=SCHEMA,
    )


def make_spec(out: Path, n: int = 10, shard_size: int = 3, offset: float = 0.0, **item_extra) -> StageSpec:
    items = [{"image_id": f"img/{i:03d}.png", "index": i, **item_extra} for i in range(n)]
    return StageSpec(
        name="fake",
        out_dir=out,
        table=LATENTS,
        items=items,
        shard_size=shard_size,
        config={"offset": offset, "seed": 7},
        setup=fake_setup,
        process=fake_process,
        schema=SCHEMA,
        score_columns=["value"],
    )


HERE = ClusterOptions(workers=0)
THREADS = ClusterOptions(workers=2, processes=False)


def test_run_writes_parts_markers_and_readable_table(tmp_path):
    summary = run_stage(make_spec(tmp_path), THREADS, progress=False)
    assert summary.complete and summary.images_ok == 10 and summary.shards == 4
    run_dir = RunDir(tmp_path)
    parts = sorted(p.name for p in run_dir.table_dir.iterdir())
    assert parts == [f"part-{i:05d}.parquet" for i in range(4)]  # nothing else in the table folder
    assert sorted(p.name for p in run_dir.stats_dir.iterdir()) == [f"part-{i:05d}.json" for i in range(4)]
    assert run_dir.success_file.exists()
    run = json.loads(run_dir.run_file.read_text())
    assert (
        run["seed"] == 7 and run["status"] == "complete" and run["plan"] == {"items": 10, "shard_size": 3, "shards": 4}
    )
    # every reader the design names reads the folder as is
    frame = pd.read_parquet(run_dir.table_dir)
    assert frame["image_id"].tolist() == [f"img/{i:03d}.png" for i in range(10)]
    import dask.dataframe as dd

    assert dd.read_parquet(str(run_dir.table_dir)).compute()["value"].sum() == sum(range(10))
    assert pads.dataset(run_dir.table_dir).count_rows() == 10
    table = read_latent_table(run_dir.table_dir)
    assert table.latent("w").shape == (10, *SHAPE) and table.latent("w")[4, 1, 2] == 4.0
    assert table.metadata["config"] == {"offset": 0.0, "seed": 7}
    assert summary.scores["value"].mean == pytest.approx(4.5) and summary.scores["value"].max == 9


def test_the_run_record_reads_every_key_the_runner_writes(tmp_path):
    """Each top-level key of _run.json is a field of RunRecord, except the stage's own facts (its metadata)."""
    spec = make_spec(tmp_path)
    spec.metadata = {"generator": "g", "generator_sha256": "ab" * 32}
    spec.runtime = {"generator_path": "/x/g.pt"}
    run_stage(spec, HERE, progress=False)
    written = json.loads(RunDir(tmp_path).run_file.read_text())
    record = RunDir(tmp_path).read_run()
    named = {f.name for f in dataclasses.fields(RunRecord)} - {"metadata"}
    assert set(written) == named | set(spec.metadata)  # nothing the record would miss, no field never written
    assert {key: getattr(record, key) for key in named} == {key: written[key] for key in named}
    assert record.metadata == spec.metadata
    assert (record.stage, record.table, record.seed, record.status) == ("fake", "latents", 7, "complete")
    assert RunDir(tmp_path).generator_path() == "/x/g.pt"


def test_a_run_record_missing_keys_reads_them_as_defaults_and_keeps_unknown_ones():
    """A record from another facebatch version: what it lacks (or holds as null) is a default, not an error."""
    record = RunRecord.from_json({"stage": "sample", "config": {"generator": "g"}, "plan": None, "extra": [1]})
    assert (record.stage, record.config, record.metadata) == ("sample", {"generator": "g"}, {"extra": [1]})
    assert record.plan == {} and record.runtime == {} and record.config_hash is None and record.created_at is None
    assert RunRecord.from_json({}) == RunRecord()


def test_rerun_skips_finished_shards_and_redoes_unmarked_ones(tmp_path):
    run_stage(make_spec(tmp_path), HERE, progress=False)
    run_dir = RunDir(tmp_path)
    before = pq.read_table(run_dir.part("part-00000"))
    # shard 2 was published but its worker died before the marker: it must be redone, not trusted
    run_dir.marker("part-00002").unlink()
    (run_dir.table_dir / ".part-00003.parquet.tmp-999").write_bytes(b"half a file")  # left by a killed worker
    summary = run_stage(make_spec(tmp_path), HERE, progress=False)
    assert (summary.shards_skipped, summary.shards_run, summary.images_processed) == (3, 1, 3)
    assert not list(run_dir.table_dir.glob(".*"))  # the stale temp file is cleaned up
    assert pq.read_table(run_dir.part("part-00000")).equals(before)
    frame = pd.read_parquet(run_dir.table_dir)
    assert frame["image_id"].is_unique and len(frame) == 10


def test_rerun_with_other_config_or_input_refuses_unless_overwrite(tmp_path):
    run_stage(make_spec(tmp_path), HERE, progress=False)
    with pytest.raises(InputError, match=r"offset: 0\.0 -> 1\.0.*--overwrite"):
        run_stage(make_spec(tmp_path, offset=1.0), HERE, progress=False)
    with pytest.raises(InputError, match="input changed.*10 images in shards of 3 then, 11"):
        run_stage(make_spec(tmp_path, n=11), HERE, progress=False)
    with pytest.raises(InputError, match="input changed"):
        run_stage(make_spec(tmp_path, shard_size=4), HERE, progress=False)
    summary = run_stage(make_spec(tmp_path, offset=1.0), HERE, overwrite=True, progress=False)
    assert summary.images_processed == 10 and summary.scores["value"].min == 1.0


def test_dry_run_reports_the_plan_and_writes_nothing(tmp_path):
    run_stage(make_spec(tmp_path, n=6), HERE, progress=False)
    RunDir(tmp_path).marker("part-00001").unlink()
    snapshot = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    summary = run_stage(make_spec(tmp_path, n=6), HERE, dry_run=True, progress=False)
    assert (summary.shards_skipped, summary.shards_run, summary.images_todo) == (1, 1, 3)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == snapshot


def test_retry_errors_recomputes_only_error_rows(tmp_path):
    fix = tmp_path / "fixed"
    spec = make_spec(tmp_path / "out", n=7)
    run_dir = RunDir(spec.out_dir)
    for i in (1, 5):
        spec.items[i]["bad"] = str(fix)
    first = run_stage(spec, HERE, progress=False)
    assert (first.images_ok, first.images_error) == (5, 2) and first.complete
    frame = pd.read_parquet(run_dir.table_dir)
    assert frame.set_index("image_id").loc["img/001.png", "error"] == "broken input"
    assert frame["w"].isna().sum() == 2  # error rows keep their place with a null latent
    # a plain rerun does not touch error rows (a retry is asked for, never implied) ...
    assert run_stage(spec, HERE, progress=False).images_processed == 0
    fix.write_text("ok now")
    ok_before = pq.read_table(run_dir.part("part-00002"))  # rows 6: no errors
    second = run_stage(spec, HERE, retry_errors=True, progress=False)
    assert (second.images_processed, second.images_retried, second.shards_run) == (2, 2, 2)
    assert (second.images_ok, second.images_error) == (7, 0)
    assert pq.read_table(run_dir.part("part-00002")).equals(ok_before)
    frame = pd.read_parquet(run_dir.table_dir)
    assert frame["image_id"].tolist() == [f"img/{i:03d}.png" for i in range(7)] and (frame["status"] == "ok").all()


def test_a_failing_shard_is_reported_and_redone_on_rerun(tmp_path):
    spec = make_spec(tmp_path, n=6)
    spec.items[4]["raise"] = True
    summary = run_stage(spec, HERE, progress=False)
    run_dir = RunDir(tmp_path)
    assert summary.shards_failed == 1 and summary.failures[0] == ("part-00001", "RuntimeError: stage bug")
    assert not summary.complete and not run_dir.success_file.exists()
    assert not run_dir.part("part-00001").exists()
    assert json.loads(run_dir.run_file.read_text())["status"] == "incomplete"
    del spec.items[4]["raise"]
    again = run_stage(spec, HERE, progress=False)
    assert again.complete and again.shards_run == 1 and run_dir.success_file.exists()


def test_stage_must_return_one_row_per_item(tmp_path):
    spec = make_spec(tmp_path, n=3)
    spec.process = short_process
    summary = run_stage(spec, HERE, progress=False)
    assert summary.shards_failed == 1 and "expected exactly the 3" in summary.failures[0][1]


def short_process(state, items, info):
    return fake_process(state, items[:-1], info)


def test_duplicate_ids_and_bad_cluster_options_are_user_errors(tmp_path):
    spec = make_spec(tmp_path, n=3)
    spec.items[2]["image_id"] = spec.items[0]["image_id"]
    with pytest.raises(InputError, match="appears more than once"):
        run_stage(spec, HERE, progress=False)
    with pytest.raises(InputError, match="not both"):
        run_stage(make_spec(tmp_path), ClusterOptions(scheduler="tcp://x:1", scheduler_file=tmp_path), progress=False)


def test_killed_worker_shard_is_redone_without_lost_or_duplicate_rows(tmp_path):
    """Two worker processes; one dies (os._exit) in the middle of a shard; the model loads once per process."""
    log = tmp_path / "setup.log"
    spec = make_spec(tmp_path / "out", n=12, shard_size=2, sleep=0.05)
    spec.config["setup_log"] = str(log)
    spec.items[5]["die_once"] = str(tmp_path / "died")
    summary = run_stage(spec, ClusterOptions(workers=2, threads_per_worker=1), progress=False)
    assert (tmp_path / "died").exists()  # the fault really happened
    assert summary.complete and summary.images_ok == 12 and summary.shards_failed == 0
    frame = pd.read_parquet(RunDir(spec.out_dir).table_dir)
    assert sorted(frame["image_id"]) == [f"img/{i:03d}.png" for i in range(12)]
    assert frame["value"].tolist() == [float(i) for i in range(12)]
    loads = log.read_text().split()
    assert len(loads) == len(set(loads)) <= 3  # once per worker process (2, plus the one restarted)
    assert set(frame["pid"]) <= set(int(p) for p in loads)


def interrupting_process(state, items, info):
    """Ctrl-C arriving while a shard is being computed (in-process run: the signal lands in this thread)."""
    if any(item.get("interrupt") and not Path(item["interrupt"]).exists() for item in items):
        Path(items[0]["interrupt"]).write_text("pressed")
        raise KeyboardInterrupt
    return fake_process(state, items, info)


def test_interrupt_leaves_no_partial_part_and_the_rerun_completes(tmp_path):
    spec = make_spec(tmp_path / "out", n=9, shard_size=3)
    spec.process = interrupting_process
    for item in spec.items[3:6]:
        item["interrupt"] = str(tmp_path / "pressed")
    with pytest.raises(KeyboardInterrupt):
        run_stage(spec, HERE, progress=False)
    run_dir = RunDir(spec.out_dir)
    assert json.loads(run_dir.run_file.read_text())["status"] == "interrupted"
    assert sorted(p.name for p in run_dir.table_dir.iterdir()) == ["part-00000.parquet"]
    assert not run_dir.success_file.exists()
    summary = run_stage(spec, HERE, progress=False)
    assert summary.complete and (summary.shards_skipped, summary.images_processed) == (1, 6)
    frame = pd.read_parquet(run_dir.table_dir)
    assert frame["image_id"].tolist() == [f"img/{i:03d}.png" for i in range(9)]


def test_progress_bar_counts_images_on_a_terminal_and_stays_silent_off_one(tmp_path):
    import io

    from rich.console import Console

    tty = io.StringIO()
    run_stage(make_spec(tmp_path / "a"), HERE, progress=True, console=Console(file=tty, force_terminal=True, width=120))
    assert "10/10" in tty.getvalue() and "img/s" in tty.getvalue() and "images" in tty.getvalue()
    pipe = io.StringIO()
    run_stage(make_spec(tmp_path / "b"), HERE, progress=True, console=Console(file=pipe, force_terminal=False))
    assert pipe.getvalue() == ""


def test_an_existing_cluster_by_address_or_scheduler_file_is_used_and_left_running(tmp_path):
    """How users go past one machine: the runner connects, runs, and closes only its own client."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        by_address = run_stage(
            make_spec(tmp_path / "a"), ClusterOptions(scheduler=cluster.scheduler_address), progress=False
        )
        client.write_scheduler_file(str(tmp_path / "scheduler.json"))
        by_file = run_stage(
            make_spec(tmp_path / "b"), ClusterOptions(scheduler_file=tmp_path / "scheduler.json"), progress=False
        )
        assert client.submit(sum, [1, 2]).result() == 3  # the user's cluster survives the run
        workers = set(client.scheduler_info()["workers"])
    assert by_address.complete and by_file.complete and by_address.images_ok == by_file.images_ok == 10
    for out in ("a", "b"):
        run_dir = RunDir(tmp_path / out)
        run = json.loads(run_dir.run_file.read_text())
        assert run["cluster"]["scheduler" if out == "a" else "scheduler_file"] and len(workers) == 1
        assert pd.read_parquet(run_dir.table_dir)["value"].tolist() == [float(i) for i in range(10)]


def test_only_small_markers_travel_back_to_the_client(tmp_path, monkeypatch):
    """The client gets per-shard stats, never rows or latents: its memory does not grow with the dataset."""
    from facebatch.pipeline import runner as runner_module

    original = runner_module._execute_here
    seen: dict[int, list] = {}

    def spy(tasks, max_retries, finished):
        def record(task, marker, error):
            seen.setdefault(len(task.items), []).append(marker)
            finished(task, marker, error)

        original(tasks, max_retries, record)

    monkeypatch.setattr(runner_module, "_execute_here", spy)
    run_stage(make_spec(tmp_path / "small", n=4, shard_size=4), HERE, progress=False)
    run_stage(make_spec(tmp_path / "big", n=400, shard_size=400), HERE, progress=False)
    small, big = (len(json.dumps(seen[n][0])) for n in (4, 400))
    assert big < small + 100  # 100x the rows, the same few hundred bytes back (digits of counts aside)
    assert all(isinstance(m, dict) for ms in seen.values() for m in ms)


def always_dying_process(state, items, info):
    if any(item.get("die_always") for item in items):
        os._exit(1)  # e.g. an image that drives the worker out of memory every time
    return fake_process(state, items, info)


@pytest.mark.slow  # worker restarts: ~10-30 s on 2 busy cores
def test_a_shard_that_kills_every_worker_fails_alone_and_the_rest_is_kept(tmp_path):
    import dask

    spec = make_spec(tmp_path / "out", n=6, shard_size=2)
    spec.process = always_dying_process
    spec.items[2]["die_always"] = True
    # The scheduler runs in this process. One task at a time per worker, so only the dying shard is ever
    # on the worker when it dies; the shard finished before it loses its returned marker with the worker.
    settings = {"distributed.scheduler.allowed-failures": 0, "distributed.scheduler.worker-saturation": 1.0}
    with dask.config.set(settings):
        summary = run_stage(spec, ClusterOptions(workers=1, threads_per_worker=1), progress=False)
    assert summary.shards_failed == 1 and summary.failures[0][0] == "part-00001"
    assert "died repeatedly" in summary.failures[0][1]
    run_dir = RunDir(spec.out_dir)
    assert summary.images_ok == 4 and not summary.complete and not run_dir.success_file.exists()
    assert sorted(p.name for p in run_dir.table_dir.iterdir()) == [
        "part-00000.parquet",
        "part-00002.parquet",
    ]


class _LostFuture:
    """A future whose shard finished but whose worker died before the client fetched the marker."""

    status = "finished"

    def result(self):
        raise type("KilledWorker", (Exception,), {})("worker died")


def test_a_marker_lost_with_its_worker_is_read_from_disk_when_this_run_wrote_it(tmp_path):
    from facebatch.pipeline.runner import _outcome
    from facebatch.pipeline.shard_task import ShardInfo, ShardTask, run_shard

    items = make_spec(tmp_path).items[:3]
    task = ShardTask(
        stage="fake",
        info=ShardInfo(0, "part-00000", 1, tmp_path, LATENTS, "c"),
        items=items,
        ids_hash="h",
        setup=fake_setup,
        process=fake_process,
        setup_config={"offset": 0.0},
        state_key="k",
        run_metadata={},
        schema=SCHEMA,
        run_id="run-a",
    )
    published = run_shard(task)
    assert _outcome(_LostFuture(), task) == (published, None)
    task.run_id = "run-b"  # a marker an earlier run left proves nothing about this one
    assert _outcome(_LostFuture(), task) == (
        None,
        "the worker computing this shard died repeatedly (killed or out of memory)",
    )


def stepping_process(state: dict, items: list[dict], info) -> pa.Table:
    """The fake stage, reporting 5 optimisation steps per image as the projector does, one at a time."""
    from facebatch.pipeline.progress import report_steps

    for item in items:
        for _ in range(5):
            report_steps(1)
        time.sleep(item.get("sleep_after_steps", 0))
    return fake_process(state, items, info)


@pytest.mark.parametrize("cluster", [HERE, THREADS], ids=["in-process", "dask"])
def test_steps_reach_the_bar_while_shards_run(tmp_path, monkeypatch, cluster):
    from facebatch.pipeline import runner

    seen: list[tuple[int, int]] = []  # (steps reported so far, shards finished by then)
    finished = [0]
    add, done = runner._StepsBar.add, runner._StepsBar.shard_done

    def record_add(self, n):
        add(self, n)
        seen.append((self.reported, finished[0]))

    def record_done(self, items):
        done(self, items)
        finished[0] += 1

    monkeypatch.setattr(runner._StepsBar, "add", record_add)
    monkeypatch.setattr(runner._StepsBar, "shard_done", record_done)
    spec = make_spec(tmp_path, n=4, shard_size=4, sleep_after_steps=0.4 if cluster is THREADS else 0)
    spec.process, spec.steps_per_item = stepping_process, 5
    assert run_stage(spec, cluster, progress=False).images_ok == 4
    assert seen and seen[0][1] == 0  # progress arrived before the run's one shard finished
    if cluster is HERE:
        assert [s for s, _ in seen] == list(range(1, 21))  # every step, in order
    else:
        assert len(seen) < 20 and seen[-1][0] <= 20  # throttled: a few events, never more steps than were done
