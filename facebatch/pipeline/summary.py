"""The run's outcome, merged from per-shard markers (so a resumed run reports the whole table)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from rich.table import Table


@dataclass
class ScoreStats:
    n: int
    mean: float
    std: float
    min: float
    max: float


@dataclass
class RunSummary:
    stage: str
    out_dir: Path
    table: str
    images: int = 0
    shards: int = 0
    shards_skipped: int = 0  # already finished by an earlier run
    shards_run: int = 0
    shards_failed: int = 0
    images_ok: int = 0  # whole table, this run and earlier ones
    images_error: int = 0
    images_processed: int = 0  # computed by this run
    images_skipped: int = 0
    images_todo: int = 0  # in the shards this run set out to compute (or would, with --dry-run)
    images_retried: int = 0
    wall_seconds: float = 0.0
    scores: dict[str, ScoreStats] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (shard, message)
    dry_run: bool = False
    complete: bool = False
    rows_per_item: str = "one"  # "many": an input gives several rows (mix: outputs per pair; align: faces)

    @property
    def images_per_second(self) -> float:
        return self.images_processed / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["images_per_second"] = self.images_per_second
        return d


def merge_scores(markers: Iterable[dict]) -> dict[str, ScoreStats]:
    acc: dict[str, dict] = {}
    for marker in markers:
        for name, s in (marker.get("scores") or {}).items():
            a = acc.setdefault(name, {"n": 0, "sum": 0.0, "sumsq": 0.0, "min": math.inf, "max": -math.inf})
            a["n"] += s["n"]
            a["sum"] += s["sum"]
            a["sumsq"] += s["sumsq"]
            if s["n"]:
                a["min"] = min(a["min"], s["min"])
                a["max"] = max(a["max"], s["max"])
    merged = {}
    for name, a in acc.items():
        if a["n"] == 0:
            continue
        mean = a["sum"] / a["n"]
        var = max(a["sumsq"] / a["n"] - mean * mean, 0.0)
        merged[name] = ScoreStats(a["n"], mean, math.sqrt(var), a["min"], a["max"])
    return merged


def summary_table(summary: RunSummary) -> Table:
    """Counts, then one line per score (mean ± std, range): what the user checks after a run."""
    title = f"{summary.stage}: {summary.out_dir / summary.table}"
    table = Table(title=title, show_header=True, header_style="bold", title_justify="left")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_column("", justify="left")
    many = summary.rows_per_item == "many"
    table.add_row("inputs" if many else "images", str(summary.images), f"{summary.shards} shards")
    table.add_row("ok", str(summary.images_ok), "rows (several per input)" if many else "")
    table.add_row("error", str(summary.images_error), "rows with status 'error'" if summary.images_error else "")
    table.add_row(
        "computed now",
        str(summary.images_processed),
        f"{summary.shards_run} shards" + (f", {summary.images_retried} retried rows" if summary.images_retried else ""),
    )
    if summary.shards_skipped:
        table.add_row("already done", str(summary.images_skipped), f"{summary.shards_skipped} shards skipped")
    if summary.shards_failed:
        table.add_row("failed shards", str(summary.shards_failed), "rerun the same command to retry them")
    table.add_row(
        "wall time",
        f"{summary.wall_seconds:.1f} s",
        f"{summary.images_per_second:.2f} images/s" if summary.images_processed else "",
    )
    for name, s in summary.scores.items():
        table.add_row(name, f"{s.mean:.4g} ± {s.std:.2g}", f"min {s.min:.4g}  max {s.max:.4g}  (n={s.n})")
    return table
