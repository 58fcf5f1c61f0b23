"""Score evaluation maths on synthetic scores with known separation: equal to scikit-learn, honest intervals,
thresholds that keep their promises, and directions that flip between anomaly and fake detection."""

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from facebatch.errors import InputError
from facebatch.scoring.metrics import auroc_ap, bootstrap_ci, distribution, separation
from facebatch.scoring.polarity import default_higher_is, spec_for
from facebatch.scoring.thresholds import Threshold, at_fpr, at_threshold, best_f1


def gaussian_scores(n_pos, n_neg, d, seed=0):
    """Positives ~ N(d, 1), negatives ~ N(0, 1): the true AUROC is Phi(d / sqrt 2)."""
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(d, 1, n_pos), rng.normal(0, 1, n_neg)]
    return np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)], scores


@pytest.mark.parametrize("seed", range(40))
def test_fast_auroc_ap_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n_pos, n_neg = rng.integers(1, 40, 2)
    y, s = gaussian_scores(n_pos, n_neg, 0.7, seed)
    s = np.round(s, 1)  # many ties: sklearn puts tied scores in one step
    got = auroc_ap(s[y == 1], s[y == 0])
    assert got == pytest.approx([roc_auc_score(y, s), average_precision_score(y, s)], abs=1e-12)


def test_separation_matches_sklearn_and_the_known_auroc():
    y, s = gaussian_scores(2000, 3000, 1.5, seed=1)
    res = separation(y, s, n_resamples=200, seed=0)
    assert res["auroc"]["value"] == roc_auc_score(y, s)
    assert res["average_precision"]["value"] == average_precision_score(y, s)
    assert res["auroc"]["value"] == pytest.approx(norm.cdf(1.5 / np.sqrt(2)), abs=0.015)  # 0.856
    assert res["n_positive"] == 2000 and res["average_precision"]["chance"] == pytest.approx(0.4)


def test_intervals_contain_the_estimate_and_shrink_with_n():
    widths = []
    for n in (40, 640):
        y, s = gaussian_scores(n, n, 1.0, seed=n)
        res = separation(y, s, n_resamples=500, seed=3)
        for metric in ("auroc", "average_precision"):
            lo, hi = res[metric]["ci95"]
            assert lo <= res[metric]["value"] <= hi
        widths.append(np.diff(res["auroc"]["ci95"])[0])
    assert widths[1] < 0.4 * widths[0]  # 16x the data: about a quarter of the width


def test_bootstrap_is_seeded_and_stratified():
    y, s = gaussian_scores(2, 300, 2.0, seed=5)
    pos, neg = s[y == 1], s[y == 0]
    a, b = bootstrap_ci(pos, neg, 300, seed=7), bootstrap_ci(pos, neg, 300, seed=7)
    assert a == b and a != bootstrap_ci(pos, neg, 300, seed=8)
    # A plain (unstratified) resample of 302 rows with 2 positives draws none ~13 % of the time,
    # where AUROC is undefined; stratified resampling always keeps both classes.
    assert np.isfinite(a["auroc"] + a["average_precision"]).all()
    assert bootstrap_ci(pos[:1], neg, 300, seed=7) is None  # one positive: nothing to resample
    assert bootstrap_ci(pos, neg, 0, seed=7) is None


def test_distribution_quantiles():
    values = np.arange(101, dtype=float)
    d = distribution(values)
    assert d["quantiles"]["0.05"] == 5.0 and d["quantiles"]["0.5"] == 50.0 and d["n"] == 101
    assert distribution(np.array([]))["n"] == 0


@pytest.mark.parametrize("target", [0.01, 0.05, 0.1, 0.3])
def test_threshold_at_fpr_keeps_the_budget_and_is_the_best_such_cut(target):
    y, s = gaussian_scores(300, 500, 1.2, seed=11)
    point = at_fpr(y, s, target)
    assert point.fpr <= target
    # Any lower cut (the next score below it) either breaks the budget or gains no TPR.
    lower = s[s < point.threshold]
    if len(lower):
        nxt = at_threshold(y, s, lower.max())
        assert nxt.fpr > target or nxt.tpr == point.tpr
    assert point.tp + point.fn == 300 and point.fp + point.tn == 500


def test_threshold_at_fpr_when_even_the_top_score_is_negative():
    y = np.array([0, 1, 1, 0])
    s = np.array([9.0, 1.0, 2.0, 0.0])
    point = at_fpr(y, s, 0.01)
    assert point.fp == 0 and point.tp == 0 and point.threshold > 9.0


def test_best_f1_is_the_maximum_over_every_cut():
    y, s = gaussian_scores(30, 50, 1.0, seed=2)
    brute = max(f1_score(y, s >= t) for t in np.unique(s))
    assert best_f1(y, s).f1 == pytest.approx(brute)


def test_directions_flip_between_anomaly_and_fake():
    assert default_higher_is("mse", "anomaly") == "positive" and default_higher_is("psnr", "anomaly") == "negative"
    assert default_higher_is("mse", "fake") == "negative" and default_higher_is("ssim", "fake") == "positive"
    assert default_higher_is("my_column", "fake") is None
    with pytest.raises(InputError, match="--higher-is"):
        spec_for("my_column", "anomaly")
    psnr = spec_for("psnr", "anomaly")
    assert psnr.describe() == "lower psnr = more likely anomalous"
    assert np.array_equal(psnr.orient([1.0, 2.0]), [-1.0, -2.0]) and psnr.unorient(-3.0) == 3.0


def test_threshold_in_score_units_flags_the_right_side(tmp_path):
    low_is_fake = Threshold("mse", 0.01, "negative", "fake", "given")
    assert low_is_fake.flags(np.array([0.001, 0.01, 0.5])).tolist() == [True, True, False]
    assert low_is_fake.describe() == "fake when mse <= 0.01" and low_is_fake.flag_column == "is_fake"
    high_is_anomalous = Threshold("anomaly_score", 0.2, "positive", "anomaly", "best-f1")
    assert high_is_anomalous.flags(np.array([0.1, 0.3])).tolist() == [False, True]
    high_is_anomalous.save(tmp_path / "t.json")
    assert Threshold.load(tmp_path / "t.json") == high_is_anomalous
    (tmp_path / "bad.json").write_text('{"score": "mse"}')
    with pytest.raises(InputError, match="not a facebatch threshold file"):
        Threshold.load(tmp_path / "bad.json")


def test_a_threshold_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    import os

    from facebatch.errors import InputError
    from facebatch.scoring.thresholds import Threshold

    os.mkfifo(tmp_path / "threshold.json")
    with pytest.raises(InputError, match="threshold file .* FIFO"):
        Threshold.load(tmp_path / "threshold.json")
    with pytest.raises(InputError, match="no threshold file"):
        Threshold.load(tmp_path / "missing.json")
