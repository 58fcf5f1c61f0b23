"""Where to cut a score: at a false-positive budget, at the best F1, or at a given value.

Operating points work on oriented scores (flag when oriented >= t, scikit-learn's convention);
a `Threshold` stores the cut in the score's own units with its comparison, so a value fitted on
a labelled validation run reads the same when applied to an unlabelled one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve

from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.atomic import atomic_write_json
from facebatch.scoring.polarity import FLAG_COLUMN, ScoreSpec, spec_for

RULES = ("best-f1", "fpr")

MAX_THRESHOLD_FILE_BYTES = 64 << 20  # a threshold.json is a few lines; a metrics.json holding one, kilobytes


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float  # oriented: flag when oriented score >= threshold
    tn: int
    fp: int
    fn: int
    tp: int

    def _ratio(self, num: int, den: int) -> float:
        return num / den if den else 0.0

    @property
    def tpr(self) -> float:
        return self._ratio(self.tp, self.tp + self.fn)

    @property
    def fpr(self) -> float:
        return self._ratio(self.fp, self.fp + self.tn)

    @property
    def precision(self) -> float:
        return self._ratio(self.tp, self.tp + self.fp)

    @property
    def f1(self) -> float:
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def accuracy(self) -> float:
        return self._ratio(self.tp + self.tn, self.tp + self.tn + self.fp + self.fn)

    def to_dict(self, spec: ScoreSpec) -> dict:
        value = spec.unorient(self.threshold)
        return {
            "threshold": value,
            "rule": f"{spec.positive_class} when {spec.name} {spec.comparison} {value:.6g}",
            "confusion_matrix": {"tn": self.tn, "fp": self.fp, "fn": self.fn, "tp": self.tp},
            "tpr": self.tpr,
            "fpr": self.fpr,
            "precision": self.precision,
            "f1": self.f1,
            "accuracy": self.accuracy,
        }


def at_threshold(y: np.ndarray, oriented: np.ndarray, threshold: float) -> OperatingPoint:
    tn, fp, fn, tp = confusion_matrix(np.asarray(y).astype(int), oriented >= threshold, labels=[0, 1]).ravel()
    return OperatingPoint(float(threshold), int(tn), int(fp), int(fn), int(tp))


def at_fpr(y: np.ndarray, oriented: np.ndarray, target: float) -> OperatingPoint:
    """The highest-TPR cut whose false-positive rate on these labels is <= target."""
    fpr, _, thresholds = roc_curve(y, oriented, drop_intermediate=False)
    idx = int(np.flatnonzero(fpr <= target)[-1])
    threshold = thresholds[idx]
    if not np.isfinite(threshold):  # roc_curve's first point flags nothing: cut above the maximum
        threshold = np.nextafter(np.max(oriented), np.inf)
    return at_threshold(y, oriented, float(threshold))


def best_f1(y: np.ndarray, oriented: np.ndarray) -> OperatingPoint:
    precision, recall, thresholds = precision_recall_curve(y, oriented)
    p, r = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    return at_threshold(y, oriented, float(thresholds[int(np.argmax(f1))]))


def fpr_key(target: float) -> str:
    return f"fpr<={target:g}"


@dataclass(frozen=True)
class Threshold:
    """A cut in the score's own units: flag when `score >= value` (higher_is positive) or `<=`."""

    score: str
    value: float
    higher_is: str
    task: str
    rule: str  # "given", "best-f1" or "fpr<=0.05"
    fitted_on: str | None = None

    @property
    def spec(self) -> ScoreSpec:
        return spec_for(self.score, self.task, self.higher_is)

    @property
    def flag_column(self) -> str:
        return FLAG_COLUMN[self.task]

    def flags(self, values: np.ndarray) -> np.ndarray:
        spec = self.spec
        return spec.orient(values) >= spec.orient(self.value)

    def describe(self) -> str:
        spec = self.spec
        return f"{spec.positive_class} when {self.score} {spec.comparison} {self.value:.6g}"

    def to_dict(self) -> dict:
        return {**asdict(self), "flag_column": self.flag_column, "meaning": self.describe()}

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> "Threshold":
        """A threshold.json written by `facebatch score --fit-threshold` (or metrics.json holding one)."""
        from facebatch.pipeline.textfiles import read_small_text

        if not storage.location(path).exists():
            raise InputError(f"no threshold file at {path}")
        text = read_small_text(storage.location(path), "threshold file", limit=MAX_THRESHOLD_FILE_BYTES)
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"threshold file {path} is not readable JSON ({exc})") from None
        if isinstance(data, dict) and isinstance(data.get("threshold"), dict):
            data = data["threshold"]
        try:
            threshold = cls(
                score=str(data["score"]),
                value=float(data["value"]),
                higher_is=str(data["higher_is"]),
                task=str(data["task"]),
                rule=str(data.get("rule", "given")),
                fitted_on=data.get("fitted_on"),
            )
        except (KeyError, TypeError, ValueError):
            raise InputError(
                f"{path} is not a facebatch threshold file (needs score, value, higher_is, task)"
            ) from None
        threshold.spec  # validates task and direction
        return threshold
