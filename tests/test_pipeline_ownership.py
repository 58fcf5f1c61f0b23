"""facebatch deletes, replaces and trusts only what its own records say it wrote.

Roots: markers list each shard's side files (the atomic writer records what it publishes) and --overwrite
removes only those, the parts, markers, _run.json and _SUCCESS, and only for a run of the same command; the
lock and temp files are opened with O_NOFOLLOW / O_EXCL; a finished part is trusted on resume (and by
readers) only while its size, footer and content hash match its marker; a run is read by its record, not by
a recursive search; single output files are replaced only by the run the folder's ledger says wrote them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facebatch.errors import InputError
from facebatch.pipeline.atomic import atomic_write_bytes, temp_path
from facebatch.pipeline.rundir import IMAGES, LATENTS, LOCK_FILE, RunDir
from facebatch.pipeline.runner import ClusterOptions, StageSpec, run_stage

HERE = ClusterOptions(workers=0)


def setup(config):
    return config


def process(state, items, info):
    for item in items:
        atomic_write_bytes(info.run.folder(IMAGES) / f"{item['image_id']}.txt", b"x")
    return pa.table(
        {
            "image_id": [i["image_id"] for i in items],
            "status": ["ok"] * len(items),
            "error": pa.array([None] * len(items), pa.string()),
            "value": [float(i["n"]) for i in items],
        }
    )


def spec(out: Path, n: int = 5, offset: int = 0) -> StageSpec:
    return StageSpec(
        name="own",
        out_dir=out,
        table=LATENTS,
        items=[{"image_id": f"sub/{i}", "n": i} for i in range(n)],
        shard_size=2,
        config={"offset": offset},
        setup=setup,
        process=process,
        side_dirs=(IMAGES,),
    )


def run(out, **kw):
    offset = kw.pop("offset", 0)
    return run_stage(spec(out, offset=offset), HERE, progress=False, **kw)


def test_overwrite_keeps_every_file_the_user_put_in_out(tmp_path):
    out = tmp_path / "out"
    run(out)
    run_dir = RunDir(out)
    images = run_dir.folder(IMAGES)
    mine = [
        out / "notes.txt",
        images / "my_photo.jpg",
        images / "sub" / "keep.txt",
        run_dir.table_dir / "README",
        run_dir.table_dir / "part-00000.parquet.bak",
        run_dir.stats_dir / "notes.md",
    ]
    for path in mine:
        path.write_text("user")
    summary = run(out, overwrite=True, offset=1)
    assert summary.complete
    for path in mine:
        assert path.read_text() == "user", path
    assert sorted(p.name for p in (images / "sub").iterdir()) == [f"{i}.txt" for i in range(5)] + ["keep.txt"]


def test_overwrite_removes_what_the_run_wrote_and_empty_folders(tmp_path):
    out = tmp_path / "out"
    run(out)
    RunDir(out).remove_outputs((IMAGES,))
    assert sorted(os.listdir(out)) == [LOCK_FILE]


def test_overwrite_without_a_run_record_removes_nothing(tmp_path):
    out = tmp_path / "out"
    images = RunDir(out).folder(IMAGES)
    images.mkdir(parents=True)
    (images / "a.png").write_text("user")
    run(out, overwrite=True)
    assert (images / "a.png").read_text() == "user"


def test_a_marker_naming_a_path_outside_out_is_not_followed(tmp_path):
    import json

    out = tmp_path / "out"
    run(out)
    victim = tmp_path / "victim.txt"
    victim.write_text("user")
    marker = RunDir(out).marker("part-00000")
    m = json.loads(marker.read_text())
    m["files"] = [str(victim), "../victim.txt", "images/../../victim.txt"]
    marker.write_text(json.dumps(m))
    run(out, overwrite=True, offset=1)
    assert victim.read_text() == "user"


def test_lock_file_symlink_is_refused_and_its_target_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / LOCK_FILE).symlink_to(victim)
    with pytest.raises(InputError, match="symbolic link"):
        run(out)
    assert victim.read_text() == "precious"


def test_temp_file_symlink_is_not_written_through(tmp_path):
    out = tmp_path / "out"
    target = RunDir(out).run_file
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    temp_path(target).symlink_to(victim)
    atomic_write_bytes(target, b"{}")
    assert victim.read_text() == "precious" and target.read_bytes() == b"{}"
    image = RunDir(out).folder(IMAGES) / "a.png"
    image.parent.mkdir()
    temp_path(image).symlink_to(victim)
    atomic_write_bytes(image, b"png")
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "delete_footer", "fewer_rows", "symlink"])
def test_a_damaged_finished_part_is_redone_on_resume(tmp_path, damage):
    out = tmp_path / "out"
    run(out)
    part = RunDir(out).part("part-00001")
    data = part.read_bytes()
    if damage == "truncate":
        part.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        part.write_bytes(b"")
    elif damage == "garbage":
        part.write_bytes(os.urandom(len(data)))
    elif damage == "delete_footer":
        part.write_bytes(data[:-8])
    elif damage == "fewer_rows":
        pq.write_table(pq.read_table(part).slice(0, 1), part)
    else:
        real = tmp_path / "elsewhere.parquet"
        real.write_bytes(data)
        part.unlink()
        part.symlink_to(real)
    summary = run(out)
    assert summary.complete and summary.shards_run == 1 and summary.shards_skipped == 2
    assert pq.read_table(part).num_rows == 2 and not part.is_symlink()


def test_an_intact_finished_part_is_still_skipped(tmp_path):
    out = tmp_path / "out"
    run(out)
    summary = run(out)
    assert summary.shards_run == 0 and summary.shards_skipped == 3


def test_a_part_altered_in_place_is_redone_on_resume_and_refused_by_readers(tmp_path):
    """Same size, same footer, other values: only the content hash in the marker tells."""
    from facebatch.pipeline.latents import open_latents

    out = tmp_path / "out"
    run(out)
    part = RunDir(out).part("part-00001")
    table = pq.read_table(part)
    data = bytearray(part.read_bytes())
    size = len(data)
    pq.write_table(table.set_column(3, "value", pa.array([99.0, 98.0])), part)  # same shape: same size here
    if part.stat().st_size != size:  # the writer chose another encoding: flip a byte of the data pages instead
        data[8] ^= 0xFF
        part.write_bytes(bytes(data))
    assert part.stat().st_size == size and pq.read_metadata(part).num_rows == 2
    with pytest.raises(InputError, match="changed after facebatch wrote it"):
        open_latents(out)
    summary = run(out)
    assert summary.shards_run == 1 and summary.shards_skipped == 2
    assert pq.read_table(part).column("value").to_pylist() == [2.0, 3.0]
    open_latents(out)  # redone: readable again


@pytest.mark.parametrize("record", ["[1, 2]", '"a string"', "3", "null", "{not json"])
def test_a_run_record_that_is_not_an_object_is_one_line_and_touches_nothing(tmp_path, record):
    out = tmp_path / "out"
    run(out)
    RunDir(out).run_file.write_text(record)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    for overwrite in (False, True):
        with pytest.raises(InputError, match="cannot tell what it wrote") as exc:
            run(out, overwrite=overwrite)
        assert "\n" not in str(exc.value)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_overwrite_never_replaces_another_commands_run(tmp_path):
    """`label S --out-dir S --overwrite` must not turn S (its own input) into a label run."""
    out = tmp_path / "out"
    run(out)
    run_dir = RunDir(out)
    parts = sorted(run_dir.table_dir.iterdir())
    other = spec(out)
    other.name = "label"
    with pytest.raises(InputError, match="holds a 'own' run; --overwrite replaces only a 'label' run"):
        run_stage(other, HERE, progress=False, overwrite=True)
    assert sorted(run_dir.table_dir.iterdir()) == parts
    assert '"stage": "own"' in run_dir.run_file.read_text()


def test_a_folder_of_runs_is_not_read_as_one_run(tmp_path):
    from facebatch.pipeline.latents import open_latents

    run(tmp_path / "runs" / "a")
    run(tmp_path / "runs" / "b")
    with pytest.raises(InputError, match="holds 2 facebatch run"):
        open_latents(tmp_path / "runs")
    assert len(open_latents(tmp_path / "runs" / "a").files) == 3
    # a copy of a part kept below a run's table folder is not part of the run
    a = RunDir(tmp_path / "runs" / "a")
    (a.table_dir / "old").mkdir()
    part = a.part("part-00000")
    (a.table_dir / "old" / part.name).write_bytes(part.read_bytes())
    assert len(open_latents(tmp_path / "runs" / "a").read().frame) == 5


@pytest.mark.parametrize("kind", ["fifo", "file"])
def test_an_output_that_is_not_a_folder_is_named_as_such(tmp_path, kind):
    out = tmp_path / "out"
    if kind == "fifo":
        os.mkfifo(out)
    else:
        out.write_text("x")
    with pytest.raises(InputError, match="not a folder to write into"):
        run(out)


def test_single_output_files_are_replaced_only_by_the_run_that_wrote_them(tmp_path):
    from facebatch.pipeline.ownership import LEDGER, claim_files, record_written

    run_a, run_b, out = tmp_path / "a", tmp_path / "b", tmp_path / "labels.csv"
    way_out = "pick another -o"
    claim_files([out], by=run_a, overwrite=False, way_out=way_out)  # nothing there yet
    out.write_text("mine")  # a user's file
    with pytest.raises(InputError, match="is not a file facebatch wrote there; pick another -o"):
        claim_files([out], by=run_a, overwrite=False, way_out=way_out)
    claim_files([out], by=run_a, overwrite=True, way_out=way_out)
    out.write_text("written by a")
    record_written([out], by=run_a)
    claim_files([out], by=run_a, overwrite=False, way_out=way_out)  # its own: may be rewritten
    with pytest.raises(InputError, match="the result of another facebatch run"):
        claim_files([out], by=run_b, overwrite=False, way_out=way_out)
    out.write_text("edited by hand since")
    with pytest.raises(InputError, match="is not a file facebatch wrote there"):
        claim_files([out], by=run_a, overwrite=False, way_out=way_out)
    (tmp_path / LEDGER).write_text("[garbage")  # a damaged ledger vouches for nothing
    with pytest.raises(InputError):
        claim_files([out], by=run_a, overwrite=False, way_out=way_out)
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        claim_files([tmp_path / "dir.csv"], by=run_a, overwrite=True, way_out=way_out)


def test_another_commands_run_is_refused_without_suggesting_overwrite(tmp_path):
    """Without --overwrite the refusal names the safe way out; --overwrite would be refused as well."""
    out = tmp_path / "out"
    run(out)
    other = spec(out)
    other.name = "label"
    with pytest.raises(
        InputError, match="holds a 'own' run; --overwrite replaces only a 'label' run: pick another"
    ) as exc:
        run_stage(other, HERE, progress=False)
    assert "use --overwrite" not in str(exc.value)
