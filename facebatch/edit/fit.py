"""Fit one InterFaceGAN boundary: sample selection, a linear SVM, accuracies, and a Boundary.

Estimator: ``LinearSVC(dual="auto")`` (liblinear). InterFaceGAN uses ``SVC(kernel="linear")``,
whose libsvm solver grows about quadratically with the sample count; liblinear's primal Newton
solver is linear in it (bench/boundaries.py --parts scale times 10k/100k/500k; dual="auto" picks the
primal for rows > features, so memory is the data plus liblinear's copy, ~28 bytes a value). On the
same 10k planted latents (``--quick``), LinearSVC recovered the normal at cosine 0.915 (val 0.806)
where SGDClassifier(hinge) reached 0.673 without converging in 50 epochs: SGD is faster but its
normal is noisier, and the normal is the product here. The features are centred
before fitting because liblinear penalises the intercept like a weight; centring makes that
penalty harmless, and the intercept is mapped back to raw latent coordinates and kept.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.svm import LinearSVC

from facebatch.edit.boundary import SPACES, Boundary
from facebatch.errors import InputError
from facebatch.ranges import finite_number

MIN_TRAIN_PER_CLASS = 2
C_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
CV_FOLDS = 3
CV_MAX_VALUES = 25_000_000  # rows x features searched: 10k rows of 512-d W, ~2.7k of 18x512 W+
CV_MAX_ROWS = 10_000


@dataclass
class FitSettings:
    # Default space "w", on evidence (bench/boundaries.py --parts space --space-sizes 2000,10000 --seeds 3: W+
    # codes of the fixture mapping with 0.3 per-layer jitter, 10% flipped labels; cosine of the fitted edit to
    # the planted one at 2k / 10k latents): an attribute of the whole code is recovered best in w (0.833 /
    # 0.867; layer 0.805 / 0.833, wplus 0.798 / 0.791; validation accuracy equal within 0.01). An attribute of
    # layers 0-3 only needs `--layers 0-3` (w 0.827 / 0.860, wplus 0.748 / 0.801; w over all layers 0.48).
    # w is also InterFaceGAN's space for StyleGAN, is exact for `sample` latents (all rows equal), and has
    # num_ws times fewer features: 500k latents fit in ~6 GB (350k training rows x 512 x 28 bytes + the
    # data), where flattened W+ of an 18-layer generator would need ~85 GB (check_memory).
    space: str = "w"
    layers: list[int] | None = None  # None = every layer
    chosen_ratio: float = 0.02  # continuous scores: top/bottom fraction (<= 1) or count (> 1) per side
    split_ratio: float = 0.7  # training share; the rest validates
    # SVM penalty on RMS-scaled features; None = choose_C (cross-validated). No fixed value is right for
    # both isotropic latents and strongly anisotropic ones such as W (bench/boundaries.py --parts c).
    C: float | None = None
    max_iter: int = 2000
    max_train_rows: int | None = None  # stratified subsample of the training rows (memory: see check_memory)
    seed: int = 0

    def check(self) -> None:
        if self.space not in SPACES:
            raise InputError(f"unknown space {self.space!r}: use one of {', '.join(SPACES)}")
        if not 0 < self.split_ratio < 1:
            raise InputError(f"--split-ratio must be between 0 and 1 (got {self.split_ratio})")
        if self.max_train_rows is not None and self.max_train_rows < 2 * MIN_TRAIN_PER_CLASS:
            raise InputError(f"--max-train-rows must be at least {2 * MIN_TRAIN_PER_CLASS}")
        finite_number(self.chosen_ratio, "--chosen-ratio")
        if self.C is not None:
            finite_number(self.C, "-C")
        if self.chosen_ratio <= 0:
            raise InputError(f"--chosen-ratio must be positive (got {self.chosen_ratio})")
        if self.C is not None and self.C <= 0:
            raise InputError(f"-C must be positive (got {self.C})")


def features(ws: np.ndarray, space: str, layers: list[int]) -> np.ndarray:
    """What the SVM sees: (N, w_dim) for w, (N, L*w_dim) for wplus, (N, L, w_dim) for layer."""
    sel = ws[:, layers]
    if space == "w":
        return sel.mean(axis=1, dtype=np.float64).astype(np.float32)
    if space == "wplus":
        return sel.reshape(len(ws), -1)
    return sel


@dataclass
class Selection:
    train: np.ndarray  # indices into the labelled rows
    val: np.ndarray
    y: np.ndarray  # 0/1 for every labelled row used (NaN-free where selected)
    remaining: np.ndarray  # continuous only: the unselected middle
    remaining_y: np.ndarray


def select_samples(values: np.ndarray, kind: str, settings: FitSettings, name: str) -> Selection:
    """Binary: every labelled row, stratified split. Continuous: InterFaceGAN's top/bottom selection."""
    rng = np.random.default_rng(settings.seed)
    labelled = np.flatnonzero(~np.isnan(values))
    empty = np.empty(0, dtype=np.int64)
    if kind == "binary":
        y = values.copy()
        counts = [int((y[labelled] == c).sum()) for c in (0, 1)]
        if min(counts) * settings.split_ratio < MIN_TRAIN_PER_CLASS or min(counts) < MIN_TRAIN_PER_CLASS + 1:
            raise InputError(
                f"attribute {name!r}: too few examples of one class to train and validate "
                f"({counts[0]} negative, {counts[1]} positive labelled latents)"
            )
        train, val = train_test_split(
            labelled, train_size=settings.split_ratio, stratify=y[labelled], random_state=settings.seed
        )
        return Selection(np.sort(train), np.sort(val), y, empty, empty)
    scores = values[labelled]
    order = labelled[np.argsort(-scores, kind="stable")]
    n = len(order)
    r = settings.chosen_ratio
    chosen = int(n * r) if r <= 1 else int(r)
    chosen = min(chosen, n // 2)
    n_train = int(chosen * settings.split_ratio)
    if n_train < MIN_TRAIN_PER_CLASS or chosen - n_train < 1:
        raise InputError(
            f"attribute {name!r}: --chosen-ratio {r:g} of {n} labelled latents keeps {chosen} per side, too few to "
            "train and validate; label more latents or raise --chosen-ratio"
        )
    pos, neg = order[:chosen].copy(), order[n - chosen :].copy()
    rng.shuffle(pos)
    rng.shuffle(neg)
    y = np.full(len(values), np.nan)
    y[pos], y[neg] = 1.0, 0.0
    train = np.sort(np.concatenate([pos[:n_train], neg[:n_train]]))
    val = np.sort(np.concatenate([pos[n_train:], neg[n_train:]]))
    remaining = order[chosen : n - chosen]
    threshold = (values[order[0]] + values[order[-1]]) / 2  # InterFaceGAN's middle-set labelling rule
    remaining_y = (values[remaining] >= threshold).astype(float)
    return Selection(train, val, y, np.sort(remaining), remaining_y[np.argsort(remaining)])


def _prepare(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centred features divided by one scalar (their RMS spread), with the mean and the scalar.

    Neither changes the geometry (the normal keeps its direction), but the centring keeps liblinear's
    penalised intercept harmless and the scalar makes C mean the same for latents of any scale.
    """
    mean = X.mean(axis=0, dtype=np.float64)
    scale = float(np.sqrt(X.var(axis=0, dtype=np.float64).mean())) or 1.0
    Xs = X.astype(np.float32)  # one float32 copy, changed in place: at 500k x 512 every copy is 1 GB
    Xs -= mean.astype(np.float32)
    Xs /= np.float32(scale)
    return Xs, mean, scale


def _classifier(C: float, settings: FitSettings) -> LinearSVC:
    return LinearSVC(C=C, dual="auto", class_weight="balanced", max_iter=settings.max_iter, random_state=settings.seed)


def choose_C(X: np.ndarray, y: np.ndarray, settings: FitSettings) -> tuple[float, dict]:
    """The smallest C whose cross-validated accuracy is within one standard error of the best.

    Why search: in W, which is strongly anisotropic, C = 0.01 left a planted normal at cosine 0.24
    while C = 1e-4 reached 0.80 (2k fixture latents), yet on isotropic latents 1e-4 over-shrinks.
    Why the smallest within one SE (Breiman's rule): accuracy is flat over several C while the normal
    is not, and the stronger penalty keeps the coordinates the data does not pin down small.
    """
    if settings.C is not None:
        return float(settings.C), {}
    n_max = int(min(CV_MAX_ROWS, max(2_000, CV_MAX_VALUES // max(1, X[0].size))))
    if len(y) > n_max:
        keep, _ = train_test_split(np.arange(len(y)), train_size=n_max, stratify=y, random_state=settings.seed)
        X, y = X[np.sort(keep)], y[np.sort(keep)]
    Xs, _, _ = _prepare(X.reshape(len(X), -1))
    folds = StratifiedKFold(
        n_splits=min(CV_FOLDS, int(min(np.bincount(y.astype(int))))), shuffle=True, random_state=settings.seed
    )
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for C in C_GRID:
            scores.append(float(np.mean(cross_val_score(_classifier(C, settings), Xs, y.astype(int), cv=folds))))
    best = max(scores)
    se = float(np.sqrt(best * (1 - best) / len(y)))
    chosen = next(C for C, acc in zip(C_GRID, scores) if acc >= best - se)
    return float(chosen), {"grid": list(C_GRID), "cv_accuracy": scores, "rows": int(len(y))}


def _svm(X: np.ndarray, y: np.ndarray, settings: FitSettings, C: float) -> tuple[np.ndarray, float, bool]:
    """Unit normal, intercept (raw latent coordinates, unit-normal scale) and whether liblinear converged."""
    Xs, mean, scale = _prepare(X)
    clf = _classifier(C, settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(Xs, y.astype(int))
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    coef = clf.coef_.ravel().astype(np.float64) / scale
    norm = np.linalg.norm(coef)
    if not norm > 0:
        raise InputError("the SVM found no direction (all-zero weights): are the latents identical?")
    intercept = (float(clf.intercept_[0]) - coef @ mean) / norm
    return coef / norm, intercept, converged


# liblinear keeps its own copy of the training data as (int index, double value) pairs, 16 bytes a value,
# beside the float64 array sklearn hands it and our float32 centred copy: measured 5.0 GB over the data for
# 350k x 512 (bench/boundaries.py), i.e. ~28 bytes per training value.
BYTES_PER_TRAIN_VALUE = 28


def check_memory(n_train: int, n_features: int, name: str) -> None:
    """Refuse up front a fit that cannot fit in memory (flattened W+ of many latents), with the way out."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not Linux: no cheap figure, so no check
        return
    need = n_train * n_features * BYTES_PER_TRAIN_VALUE
    if need > 0.8 * available:
        fits = int(0.8 * available / (n_features * BYTES_PER_TRAIN_VALUE))
        raise InputError(
            f"attribute {name!r}: training on {n_train:,} rows of {n_features:,} features "
            f"needs ~{need / 2**30:.1f} GB, "
            f"{available / 2**30:.1f} GB is free; pass --max-train-rows {fits:,} or fit in the w space"
        )


def _accuracy(d: np.ndarray, y: np.ndarray) -> float | None:
    return float(np.mean((d > 0) == (y > 0.5))) if len(y) else None


def _balanced(d: np.ndarray, y: np.ndarray) -> float | None:
    return float(balanced_accuracy_score(y > 0.5, d > 0)) if len(y) and len(np.unique(y)) > 1 else None


def _spearman(d: np.ndarray, scores: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(d) < 3 or np.ptp(scores) == 0:
        return None
    return float(spearmanr(d, scores).statistic)


def feature_distance(boundary: Boundary, X: np.ndarray) -> np.ndarray:
    """The boundary's signed distance computed from ``features`` (equal to ``boundary.distance`` of the latents)."""
    if boundary.space == "layer":
        return boundary.layer_distances_of_rows(X).mean(axis=1)
    return X.astype(np.float64) @ boundary.normal.ravel() + float(boundary.intercept)


def fit_boundary(
    name: str,
    X: np.ndarray,
    values: np.ndarray,
    kind: str,
    settings: FitSettings,
    num_ws: int,
    generator_sha256: str | None = None,
) -> Boundary:
    """X: ``features(ws, settings.space, layers)`` of the candidate rows; values: their labels (NaN = unlabelled).

    Taking features rather than W+ codes lets the caller stream a large table and keep only the
    (N, w_dim) means for the default space.
    """
    settings.check()
    layers = list(range(num_ws)) if settings.layers is None else list(settings.layers)
    sel = select_samples(values, kind, settings, name)
    if settings.max_train_rows is not None and len(sel.train) > settings.max_train_rows:
        keep, _ = train_test_split(
            sel.train, train_size=settings.max_train_rows, stratify=sel.y[sel.train], random_state=settings.seed
        )
        sel.train = np.sort(keep)
    check_memory(len(sel.train), X[0].size, name)
    t0 = time.perf_counter()
    y_train = sel.y[sel.train]
    if settings.space == "layer":
        # One C for all rows, searched on the middle one: rows share their statistics, and a search per
        # row would multiply the cost by the number of layers.
        C, search = choose_C(X[sel.train, len(layers) // 2], y_train, settings)
        fits = [_svm(X[sel.train, k], y_train, settings, C) for k in range(len(layers))]
        normal = np.stack([f[0] for f in fits])
        intercept = np.array([f[1] for f in fits])
        converged = all(f[2] for f in fits)
    else:
        C, search = choose_C(X[sel.train], y_train, settings)
        normal, intercept, converged = _svm(X[sel.train], y_train, settings, C)
        if settings.space == "wplus":
            normal = normal.reshape(len(layers), -1)
    seconds = time.perf_counter() - t0
    boundary = Boundary(
        name=name,
        space=settings.space,
        layers=layers,
        num_ws=num_ws,
        normal=normal,
        intercept=intercept,
        method="svm",
        generator_sha256=generator_sha256,
    )
    d = feature_distance(boundary, X)
    y = sel.y
    metrics = {
        "train_accuracy": _accuracy(d[sel.train], y[sel.train]),
        "val_accuracy": _accuracy(d[sel.val], y[sel.val]),
        "val_balanced_accuracy": _balanced(d[sel.val], y[sel.val]),
        "remaining_accuracy": _accuracy(d[sel.remaining], sel.remaining_y) if kind == "continuous" else None,
        # InterFaceGAN's middle labels split at the midpoint of the extreme scores, which for skewed scores
        # puts (almost) every middle row in one class; the rank correlation is the scale-free check.
        "remaining_spearman": _spearman(d[sel.remaining], values[sel.remaining]) if kind == "continuous" else None,
    }
    if settings.space == "layer":
        per_layer = boundary.layer_distances_of_rows(X[sel.val])
        metrics["per_layer_val_accuracy"] = [_accuracy(per_layer[:, k], y[sel.val]) for k in range(len(layers))]
    counts = {
        "labelled": int((~np.isnan(values)).sum()),
        "train_positive": int((y[sel.train] == 1).sum()),
        "train_negative": int((y[sel.train] == 0).sum()),
        "val_positive": int((y[sel.val] == 1).sum()),
        "val_negative": int((y[sel.val] == 0).sum()),
        "remaining": int(len(sel.remaining)),
    }
    boundary.info = {
        "label_kind": kind,
        "metrics": metrics,
        "counts": counts,
        "fit": {
            **asdict(settings),
            "C": C,
            "C_search": search,
            "layers": layers,
            "estimator": "sklearn.svm.LinearSVC",
            "loss": "squared_hinge",
            "class_weight": "balanced",
            "converged": converged,
            "seconds": round(seconds, 3),
        },
    }
    return boundary
