"""The run's bars, quiet off a terminal: images (fed from the client's as_completed loop) and, for stages
that optimise, image-steps reported while a shard runs.

Steps reach the bar through one channel whatever runs the shard: `report_steps(n)` in the stage's code
goes to the bar directly in this process, and on a Dask worker to a throttled `log_event` on the run's
topic, to which the client subscribes (a few events a second per worker, not one per step).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Units per second (rich's own speed columns are for bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = UNIT_RATE.get(task.fields.get("unit", "images"), "/s")
        return Text(f"{speed:.2f} {unit}" if speed else f"-- {unit}", style="progress.data.speed")


class UnitColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(task.fields.get("unit", "images"))


UNIT_RATE = {"images": "img/s", "image-steps": "steps/s"}
EVENT_INTERVAL_S = 0.5
_REPORTER: contextvars.ContextVar[Callable[[int], None] | None] = contextvars.ContextVar(
    "facebatch_steps", default=None
)


def report_steps(n: int) -> None:
    """`n` more image-steps done (an optimisation step of a batch of n images): to whoever shows the run."""
    reporter = _REPORTER.get()
    if reporter is not None and n > 0:
        reporter(int(n))


@contextlib.contextmanager
def reporting_steps(reporter: Callable[[int], None]) -> Iterator[None]:
    token = _REPORTER.set(reporter)
    try:
        yield
    finally:
        _REPORTER.reset(token)


def steps_topic(run_id: str) -> str:
    return f"facebatch-steps-{run_id}"


class _ThrottledEvents:
    """Sums reported steps and sends them as one worker event at most every EVENT_INTERVAL_S."""

    def __init__(self, worker, topic: str):
        self.worker, self.topic = worker, topic
        self.pending, self.sent_at = 0, time.monotonic()
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.pending += n
            if time.monotonic() - self.sent_at >= EVENT_INTERVAL_S:
                self._send()

    def flush(self) -> None:
        with self.lock:
            self._send()

    def _send(self) -> None:
        if self.pending:
            self.worker.log_event(self.topic, {"steps": self.pending})
        self.pending, self.sent_at = 0, time.monotonic()


@contextlib.contextmanager
def worker_step_reporting(run_id: str) -> Iterator[None]:
    """Around one shard: on a Dask worker, steps go to the run's topic; in this process the runner's
    reporter (the bar itself) is already in place and stays."""
    if _REPORTER.get() is not None:
        yield
        return
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not on a worker: nobody is watching
        yield
        return
    events = _ThrottledEvents(worker, steps_topic(run_id))
    try:
        with reporting_steps(events.add):
            yield
    finally:
        with contextlib.suppress(Exception):  # progress must never fail a shard
            events.flush()


def image_progress(label: str, console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        UnitColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
        transient=False,
    )
