"""`facebatch score` on synthetic projection tables with known separation: what the report holds, that its
numbers are scikit-learn's on the right side of each score, thresholds and flags tables, and one clear error
(exit 2) for each labels mistake."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.pipeline.latents import read_latent_table
from facebatch.pipeline.rundir import LATENTS, RunDir
from facebatch.pipeline.table import atomic_write_table, latent_array, latent_field, with_run_metadata
from facebatch.scoring.flags import THRESHOLD_SIDE_FILE
from facebatch.scoring.report import METRICS_JSON, REPORT_HTML, THRESHOLD_JSON

runner = CliRunner()
STRINGS = ("image_id", "source_path", "status", "error", "perceptual_backend")
SCORES = ("mse", "psnr", "ssim", "l1", "perceptual", "d_residual", "anomaly_score")


def make_run(root: Path, n_pos=30, n_neg=50, n_err=3, sep=1.5, seed=0, parts=2, images=True) -> Path:
    """A projection output whose positives (first n_pos rows, ids 'pos/...') reconstruct worse by `sep` sigmas.

    Follows the pipeline's schema: scalar score columns, a W+ latent, error rows with NaN scores,
    reconstructions at OUT/reconstructions/<image_id>.png. d_residual is NaN (a generator without D).
    """
    rng = np.random.default_rng(seed)
    n = n_pos + n_neg + n_err
    positive = np.r_[np.ones(n_pos), np.zeros(n_neg + n_err)].astype(bool)
    ok = np.r_[np.ones(n_pos + n_neg), np.zeros(n_err)].astype(bool)
    mse = np.exp(rng.normal(size=n) + sep * positive - 5)
    cols = {
        "image_id": [f"{'pos' if p else 'neg'}/img{i:03d}.png" for i, p in enumerate(positive)],
        "status": np.where(ok, "ok", "error").tolist(),
        "error": [None if k else "cannot identify image file" for k in ok],
        "perceptual_backend": ["stlpips-vgg"] * n,
        "mse": mse,
        "psnr": 10 * np.log10(4 / mse),
        "ssim": 1 - 2 * mse,
        "l1": np.sqrt(mse),
        "perceptual": np.sqrt(mse) + rng.normal(0, 0.05, n),
        "d_residual": np.full(n, np.nan),
        "anomaly_score": np.sqrt(mse),
    }
    cols["source_path"] = [str(root / "src" / i) for i in cols["image_id"]]
    for name in SCORES:
        cols[name] = np.where(ok, cols[name], np.nan)
    fields = [pa.field(k, pa.string() if k in STRINGS else pa.float64()) for k in cols] + [latent_field("w", (2, 4))]
    schema = with_run_metadata(pa.schema(fields), {"generator_sha256": "f" * 64})
    for p, idx in enumerate(np.array_split(np.arange(n), parts)):
        arrays = [pa.array([cols[k][i] for i in idx], schema.field(k).type) for k in cols]
        arrays.append(latent_array(rng.normal(size=(len(idx), 2, 4)), len(idx), (2, 4)))
        atomic_write_table(RunDir(root).part(f"part-{p:05d}"), pa.Table.from_arrays(arrays, schema=schema))
    if images:
        for i, image_id in enumerate(cols["image_id"]):
            target = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)  # not square: the sheet centre-crops
            (root / "src" / image_id).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(target).save(root / "src" / image_id)
            if ok[i]:
                recon = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                path = RunDir(root).reconstruction(image_id)
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(recon).save(path)
    return root


def write_labels(
    path: Path,
    run: Path,
    column="is_anomalous",
    value=lambda image_id: int(image_id.startswith("pos/")),
    id_column="image_id",
    ids=None,
) -> Path:
    frame = read_latent_table(RunDir(run).table_dir, columns=["image_id"]).frame
    ids = list(frame.image_id) if ids is None else ids
    pd.DataFrame({id_column: ids, column: [value(i) for i in ids]}).to_csv(path, index=False)
    return path


def ok_rows(run: Path) -> pd.DataFrame:
    frame = read_latent_table(RunDir(run).table_dir, columns=["image_id", "status", *SCORES]).frame
    return frame[frame.status == "ok"].reset_index(drop=True)


def score(*args) -> "object":
    return runner.invoke(app, ["score", *map(str, args)])


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"))


def test_without_labels_distributions_and_the_most_anomalous_images(run_dir, tmp_path):
    res = score(run_dir, "--report", tmp_path / "rep", "--top-k", "5")
    assert res.exit_code == 0, res.output
    assert "80 scored, 3 skipped" in res.output
    files = {p.name for p in (tmp_path / "rep").iterdir()}
    assert {REPORT_HTML, METRICS_JSON, "histograms.png", "contact_sheet.png"} <= files
    assert "roc.png" not in files and not RunDir(run_dir).flags_dir.exists()
    m = json.loads((tmp_path / "rep" / METRICS_JSON).read_text())
    assert m["rows"] == {"total": 83, "ok": 80, "skipped_error": 3}
    assert m["primary_score"] == "anomaly_score" and m["task"] == "anomaly"
    assert "d_residual" not in m["scores"]  # all NaN: a generator without D
    frame = ok_rows(run_dir)
    assert m["scores"]["mse"]["distribution"]["quantiles"]["0.5"] == pytest.approx(frame.mse.median())
    top = [row["image_id"] for row in m["top_k"]]
    assert top == list(frame.sort_values("anomaly_score", ascending=False).image_id[:5])
    html = (tmp_path / "rep" / REPORT_HTML).read_text()
    assert html.count("data:image/png;base64,") == 2 and 'src="http' not in html  # self-contained
    sheet = Image.open(tmp_path / "rep" / "contact_sheet.png")
    assert sheet.height > 5 * 160


def test_with_labels_auroc_and_ap_are_sklearns_on_the_right_side(run_dir, tmp_path):
    labels = write_labels(tmp_path / "labels.csv", run_dir)
    res = score(run_dir, "--labels", labels, "--report", tmp_path / "rep", "--bootstrap", "200", "--top-k", "0")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "rep" / METRICS_JSON).read_text())
    frame = ok_rows(run_dir)
    y = frame.image_id.str.startswith("pos/").astype(int).to_numpy()
    for name, sign in (("mse", 1), ("anomaly_score", 1), ("psnr", -1), ("ssim", -1), ("perceptual", 1)):
        entry = m["scores"][name]
        assert entry["higher_is"] == ("positive" if sign > 0 else "negative")
        assert entry["auroc"]["value"] == pytest.approx(roc_auc_score(y, sign * frame[name]))
        assert entry["average_precision"]["value"] == pytest.approx(average_precision_score(y, sign * frame[name]))
        lo, hi = entry["auroc"]["ci95"]
        assert lo <= entry["auroc"]["value"] <= hi
    assert m["scores"]["mse"]["auroc"]["value"] > 0.75  # 1.5 sigma apart
    op = m["scores"]["anomaly_score"]["operating_points"]["fpr<=0.05"]
    assert op["fpr"] <= 0.05 and op["rule"].startswith("anomalous when anomaly_score >= ")
    assert m["labels"]["positives"] == 30 and m["labels"]["negatives"] == 50
    assert {"roc.png", "pr.png"} <= {p.name for p in (tmp_path / "rep").iterdir()}
    assert "AUROC" in res.output and "anomaly_score" in res.output


def test_fake_task_flips_the_direction_from_the_label_column(run_dir, tmp_path):
    # Label the well-reconstructed images as fake: GAN samples project better than photos.
    labels = write_labels(tmp_path / "labels.csv", run_dir, column="is_fake", value=lambda i: int(i.startswith("neg/")))
    res = score(
        run_dir, "--labels", labels, "--report", tmp_path / "rep", "--bootstrap", "0", "--score", "mse", "--top-k", "0"
    )
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "rep" / METRICS_JSON).read_text())
    assert m["task"] == "fake" and m["positive_class"] == "fake" and m["primary_score"] == "mse"
    assert m["scores"]["mse"]["direction"] == "lower mse = more likely fake"
    frame = ok_rows(run_dir)
    y = frame.image_id.str.startswith("neg/").astype(int)
    assert m["scores"]["mse"]["auroc"]["value"] == pytest.approx(roc_auc_score(y, -frame.mse))
    assert m["scores"]["mse"]["auroc"]["value"] > 0.75 and m["scores"]["mse"]["auroc"]["ci95"] is None


def test_higher_is_overrides_the_direction(run_dir, tmp_path):
    labels = write_labels(tmp_path / "labels.csv", run_dir)
    res = score(
        run_dir,
        "--labels",
        labels,
        "--report",
        tmp_path / "rep",
        "--bootstrap",
        "0",
        "--score",
        "mse",
        "--higher-is",
        "negative",
        "--top-k",
        "0",
    )
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "rep" / METRICS_JSON).read_text())
    y = ok_rows(run_dir).image_id.str.startswith("pos/").astype(int)
    assert m["scores"]["mse"]["auroc"]["value"] == pytest.approx(roc_auc_score(y, -ok_rows(run_dir).mse))
    assert m["scores"]["psnr"]["higher_is"] == "negative"  # not named with --score: default kept


def test_fit_threshold_then_apply_it_to_an_unlabelled_run(tmp_path):
    val = make_run(tmp_path / "val", seed=1, images=False)
    test = make_run(tmp_path / "test", seed=2, images=False)
    val_run = RunDir(val)
    latents_before = digest(val_run.table_dir)
    labels = write_labels(tmp_path / "labels.csv", val)
    res = score(
        val,
        "--labels",
        labels,
        "--fit-threshold",
        "--threshold-rule",
        "fpr",
        "--target-fpr",
        "0.1",
        "--bootstrap",
        "0",
        "--top-k",
        "0",
    )
    assert res.exit_code == 0, res.output
    assert digest(val_run.table_dir) == latents_before  # the projection output is never rewritten
    fitted = json.loads((val_run.report_dir / THRESHOLD_JSON).read_text())
    assert fitted["score"] == "anomaly_score" and fitted["higher_is"] == "positive" and fitted["rule"] == "fpr<=0.1"

    flags = read_latent_table(val_run.flags_dir).frame
    assert len(flags) == 83 and sorted(p.name for p in val_run.flags_dir.glob("*.parquet")) == sorted(latents_before)
    scored = flags[flags.status == "ok"]
    assert flags.is_anomalous[flags.status == "error"].isna().all() and len(scored) == 80
    assert (scored.is_anomalous == (scored.anomaly_score >= fitted["value"])).all()
    negatives = scored[~scored.image_id.str.startswith("pos/")]
    assert negatives.is_anomalous.astype(bool).mean() <= 0.1  # the FPR promise, on the data it was fitted on

    res = score(
        test,
        "--threshold-from",
        val_run.report_dir / THRESHOLD_JSON,
        "--top-k",
        "0",
        "--flags-out",
        tmp_path / "test_flags",
    )
    assert res.exit_code == 0, res.output
    applied = read_latent_table(tmp_path / "test_flags").frame
    ok = applied[applied.status == "ok"]
    assert (ok.is_anomalous == (ok.anomaly_score >= fitted["value"])).all()
    assert json.loads((tmp_path / "test_flags" / THRESHOLD_SIDE_FILE).read_text())["value"] == fitted["value"]

    res = score(test, "--threshold", "0.05", "--score", "psnr", "--top-k", "0", "--flags-out", tmp_path / "test_flags")
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = score(
        test,
        "--threshold",
        "25",
        "--score",
        "psnr",
        "--top-k",
        "0",
        "--flags-out",
        tmp_path / "test_flags",
        "--overwrite",
    )
    assert res.exit_code == 0, res.output
    by_psnr = read_latent_table(tmp_path / "test_flags").frame.query("status == 'ok'")
    assert (by_psnr.is_anomalous == (by_psnr.psnr <= 25)).all()  # lower psnr = anomalous


def test_bootstrap_intervals_are_seeded_through_the_cli(run_dir, tmp_path):
    labels = write_labels(tmp_path / "labels.csv", run_dir)

    def intervals(seed, name):
        res = score(
            run_dir,
            "--labels",
            labels,
            "--report",
            tmp_path / name,
            "--bootstrap",
            "100",
            "--seed",
            seed,
            "--top-k",
            "0",
        )
        assert res.exit_code == 0, res.output
        m = json.loads((tmp_path / name / METRICS_JSON).read_text())
        assert m["bootstrap"]["seed"] == seed and m["bootstrap"]["n_resamples"] == 100
        return {k: (s["auroc"]["ci95"], s["average_precision"]["ci95"]) for k, s in m["scores"].items() if "auroc" in s}

    first = intervals(4, "a")
    assert intervals(4, "b") == first  # bit-for-bit the same intervals for the same seed
    assert intervals(5, "c") != first


def test_fake_flags_column(run_dir, tmp_path):
    latents_before = digest(RunDir(run_dir).table_dir)
    res = score(
        run_dir,
        "--task",
        "fake",
        "--threshold",
        "0.01",
        "--score",
        "mse",
        "--top-k",
        "0",
        "--flags-out",
        tmp_path / "flags",
        "--report",
        tmp_path / "rep",
    )
    assert res.exit_code == 0, res.output
    flags = read_latent_table(tmp_path / "flags").frame.query("status == 'ok'")
    assert (flags.is_fake == (flags.mse <= 0.01)).all() and "is_anomalous" not in flags
    assert digest(RunDir(run_dir).table_dir) == latents_before  # a new table; the projection output is untouched


def test_labels_by_path_by_word_and_covering_more_images(run_dir, tmp_path):
    ids = [f"/data/set/{i}" for i in ok_rows(run_dir).image_id] + ["/data/set/elsewhere/a.png"]
    by_path = write_labels(
        tmp_path / "paths.csv",
        run_dir,
        id_column="path",
        ids=ids,
        column="label",
        value=lambda p: "anomalous" if "/pos/" in p else "normal",
    )
    res = score(
        run_dir,
        "--labels",
        by_path,
        "--positive-label",
        "anomalous",
        "--report",
        tmp_path / "rep",
        "--bootstrap",
        "0",
        "--top-k",
        "0",
    )
    assert res.exit_code == 0, res.output
    labels = json.loads((tmp_path / "rep" / METRICS_JSON).read_text())["labels"]
    assert labels["joined"] == 80 and labels["positives"] == 30 and labels["unknown_ids"] == 1


def _bad(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "name, text, extra, message",
    [
        ("nojoin.csv", "image_id,is_anomalous\nx/1.png,1\ny/2.png,0\n", [], "no row of"),
        (
            "nocol.csv",
            "image_id,is_anomalous\npos/img000.png,1\n",
            ["--label-column", "is_fake"],
            "no column 'is_fake'",
        ),
        ("multi.csv", "image_id,label\npos/img000.png,0\npos/img001.png,1\nneg/img040.png,2\n", [], "not binary"),
        ("one.csv", "image_id,is_anomalous\npos/img000.png,1\npos/img001.png,1\n", [], "one class only"),
        ("words.csv", "image_id,label\npos/img000.png,fake\nneg/img040.png,real\n", [], "--positive-label"),
        ("noid.csv", "file_name,label\na.png,1\nb.png,0\n", [], "no image id column"),
        ("empty.csv", "", [], "is empty"),
    ],
)
def test_bad_labels_give_one_clear_error(run_dir, tmp_path, name, text, extra, message):
    res = score(run_dir, "--labels", _bad(tmp_path, name, text), "--report", tmp_path / "rep", *extra)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in res.output, res.output
    assert not (tmp_path / "rep").exists()  # nothing half-written


def test_labels_that_join_only_one_class(run_dir, tmp_path):
    # Both classes in the file, but the negatives name images the run does not have.
    text = "image_id,is_anomalous\npos/img000.png,1\npos/img001.png,1\nother/x.png,0\n"
    res = score(run_dir, "--labels", _bad(tmp_path, "l.csv", text), "--report", tmp_path / "rep")
    assert res.exit_code == 2 and "one class only" in res.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fit-threshold"], "--fit-threshold needs --labels"),
        (["--score", "nope"], "no numeric score column 'nope'"),
        (["--score", "d_residual"], "no finite value"),
        (["--threshold", "1", "--fit-threshold"], "exclude each other"),
        (["--target-fpr", "1.5"], "--target-fpr"),
        (["--flags-out", f"{{run}}/{LATENTS}/flags", "--threshold", "0.1"], "inside the projection output"),
    ],
)
def test_bad_options_exit_2(run_dir, tmp_path, args, message):
    args = [a.replace("{run}", str(run_dir)) for a in args]
    res = score(run_dir, "--report", tmp_path / "rep", *args)
    assert res.exit_code == 2 and message in res.output, res.output


def test_not_a_run(tmp_path):
    res = score(tmp_path / "missing")
    assert res.exit_code == 2 and "no such run folder" in res.output
    (tmp_path / "empty").mkdir()
    res = score(tmp_path / "empty")
    assert res.exit_code == 2 and f"{LATENTS}/" in res.output


def test_a_report_folder_holding_a_users_files_is_not_overwritten(run_dir, tmp_path):
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / REPORT_HTML).write_text("my own report")
    res = score(run_dir, "--report", rep)
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "--overwrite" in res.output, res.output
    assert (rep / REPORT_HTML).read_text() == "my own report" and not (rep / METRICS_JSON).exists()
    assert score(run_dir, "--report", rep, "--overwrite").exit_code == 0
    first = (rep / METRICS_JSON).read_bytes()
    assert score(run_dir, "--report", rep).exit_code == 0  # its own report: a rerun replaces it
    assert json.loads(first)["rows"] == json.loads((rep / METRICS_JSON).read_bytes())["rows"]
    (rep / METRICS_JSON).write_text("{}")  # edited by hand since: the user's now
    assert score(run_dir, "--report", rep).exit_code == 2 and (rep / METRICS_JSON).read_text() == "{}"


def test_the_runs_own_report_folder_is_the_runs_to_replace(tmp_path):
    """OUT/report belongs to the run (a report an older facebatch wrote there has no ledger, and is replaced)."""
    run = make_run(tmp_path / "run")
    report = RunDir(run).report_dir
    report.mkdir()
    (report / REPORT_HTML).write_text("written before reports were recorded")
    res = score(run)
    assert res.exit_code == 0, res.output
    assert "written before" not in (report / REPORT_HTML).read_text()
