"""Which way each reconstruction score points, per task.

An anomalous image reconstructs worse than a normal one (higher error, lower PSNR/SSIM); a
GAN-made image reconstructs better than a real photo (lower error, higher PSNR/SSIM). Every
metric is computed on an *oriented* score, where higher always means "more likely the positive
class", so ROC, PR and thresholds need no special cases; the raw direction is kept for people.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facebatch.errors import InputError

TASKS = ("anomaly", "fake")
POSITIVE_CLASS = {"anomaly": "anomalous", "fake": "fake"}
FLAG_COLUMN = {"anomaly": "is_anomalous", "fake": "is_fake"}
HIGHER_IS = ("positive", "negative")

# True where a higher value means a worse reconstruction (the projector's columns).
ERROR_LIKE = {
    "mse": True,
    "l1": True,
    "perceptual": True,
    "d_residual": True,
    "anomaly_score": True,
    "encoder_consistency": True,
    "psnr": False,
    "ssim": False,
}
ALIASES = {"lpips": "perceptual", "stlpips": "perceptual", "anomaly": "anomaly_score", "residual": "l1"}
DEFAULT_PRIMARY = "anomaly_score"


def canonical(name: str) -> str:
    key = name.strip()
    return ALIASES.get(key.lower(), key)


def default_higher_is(name: str, task: str) -> str | None:
    """'positive' when a higher value means the positive class; None for a score we do not know."""
    error_like = ERROR_LIKE.get(name)
    if error_like is None:
        return None
    worse_is_positive = task == "anomaly"
    return "positive" if error_like == worse_is_positive else "negative"


@dataclass(frozen=True)
class ScoreSpec:
    name: str
    higher_is: str  # "positive" | "negative"
    task: str

    @property
    def positive_class(self) -> str:
        return POSITIVE_CLASS[self.task]

    def orient(self, values) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        return values if self.higher_is == "positive" else -values

    def unorient(self, oriented: float) -> float:
        return float(oriented if self.higher_is == "positive" else -oriented)

    @property
    def comparison(self) -> str:
        return ">=" if self.higher_is == "positive" else "<="

    def describe(self) -> str:
        word = "higher" if self.higher_is == "positive" else "lower"
        return f"{word} {self.name} = more likely {self.positive_class}"

    def to_dict(self) -> dict:
        return {"column": self.name, "higher_is": self.higher_is, "direction": self.describe()}


def spec_for(name: str, task: str, override: str | None = None) -> ScoreSpec:
    if task not in TASKS:
        raise InputError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    higher_is = override or default_higher_is(name, task)
    if higher_is is None:
        raise InputError(
            f"facebatch does not know which way score {name!r} points; say it with --higher-is positive|negative"
        )
    if higher_is not in HIGHER_IS:
        raise InputError(f"--higher-is must be positive or negative, not {higher_is!r}")
    return ScoreSpec(name, higher_is, task)
