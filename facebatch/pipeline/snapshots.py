"""Training snapshots in a work folder: one complete snapshot always exists, and it is data.

Shared by the loops that train something resumably (StyleGAN-NADA, the encoder): a snapshot is a
`torch.save` of tensors and containers only (weights, optimiser state, the run's RNG state, counters),
read back with torch's weights-only loader; a new one is published atomically before the older ones go.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import torch

from facebatch.errors import InputError, first_line, shown, weights_only_refusal
from facebatch.pipeline.atomic import atomic_output, atomic_write_json
from facebatch.pipeline.discover import not_a_folder
from facebatch.pipeline.ownership import claim_files

SNAPSHOTS = "snapshots"


def snapshot_path(work: Path, iteration: int) -> Path:
    return Path(work) / SNAPSHOTS / f"snapshot-{iteration:06d}.pt"


def latest_snapshot(work: Path) -> Path | None:
    found = sorted((Path(work) / SNAPSHOTS).glob("snapshot-*.pt"))
    return found[-1] if found else None


def read_snapshot(path: Path) -> dict:
    """A snapshot is data: torch's weights-only loader refuses anything but tensors and containers. A file
    that is not one (empty, truncated, garbage, refused) is an InputError naming it; an OSError with an errno
    (permission, a full disk) is the environment's and passes through."""
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise unusable_snapshot(path, "an empty file (0 bytes)")
            state = torch.load(fh, map_location="cpu", weights_only=True)
    except (InputError, MemoryError):
        raise
    except OSError as exc:
        if exc.errno is not None:
            raise
        raise unusable_snapshot(path, _unreadable(exc)) from None
    except Exception as exc:  # noqa: BLE001 - the weights-only loader ran nothing: any failure means a bad file
        raise unusable_snapshot(path, _unreadable(exc)) from None
    if not isinstance(state, dict):
        raise unusable_snapshot(path, f"it holds a {type(state).__name__}, not a training state")
    return state


def _unreadable(exc: BaseException) -> str:
    """Why torch.load could not read a file, in a few words: a refused import is said as such (never with
    torch's advice to load it unsafely); garbage or a cut file by the loader's own reason."""
    text = str(exc)
    if "GLOBAL " in text:
        return weights_only_refusal(exc) or "refused to load"
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    reason = found.group(1).strip() if found else first_line(exc).split(". ")[0]
    if reason != type(exc).__name__:
        reason = f"{type(exc).__name__}: {reason}"
    return f"not a readable snapshot ({reason})"


class SnapshotMismatch(ValueError):
    """A snapshot's content does not fit the run resuming it (raised by the checks below)."""


def unusable_snapshot(path: Path, why: str) -> InputError:
    return InputError(f"snapshot {path} cannot be resumed: {why}; delete it, or pass --overwrite to start over")


def resume_from(path: Path, load: Callable[[dict], None]) -> None:
    """Read the snapshot at `path` and hand it to `load`, a trainer's load_state_dict, which checks every part
    with the helpers below before it takes any. A snapshot that does not fit (a key missing, another network's
    shapes, an iteration count its histories disagree with) is one InputError naming it: a run never goes on
    from, nor claims to have finished, a state it could not read whole."""
    state = read_snapshot(path)
    try:
        load(state)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        why = str(exc) if isinstance(exc, SnapshotMismatch) else f"{type(exc).__name__}: {first_line(exc)}"
        raise unusable_snapshot(path, why) from None


def check_training_state(
    state: dict, weights: str, module: torch.nn.Module, opt: torch.optim.Optimizer, rng: torch.Generator,
    others: Sequence[str] = (),
) -> int:  # fmt: skip
    """What every trainer's snapshot holds, checked against the run: the iteration, the trained module's
    weights under `weights`, the optimizer, the RNG and the `others` keys (present; the trainer checks them).
    Returns the iteration."""
    missing = [k for k in ("iteration", weights, "optimizer", "rng", *others) if k not in state]
    if missing:
        raise SnapshotMismatch(f"it has no {', '.join(missing)}")
    iteration = check_count(state["iteration"], "iteration")
    check_weights(state[weights], module, weights)
    check_optimizer(state["optimizer"], opt)
    check_rng(state["rng"], rng)
    return iteration


def check_count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SnapshotMismatch(f"its {what} is {shown(value)}, not a count")
    return value


def check_history(length: int, iteration: int, what: str) -> None:
    """A history kept per iteration (losses, trained rows) holds one entry for each iteration done."""
    if length != iteration:
        raise SnapshotMismatch(f"it is at iteration {iteration} but its {what} has {length} entries")


def check_weights(saved, module: torch.nn.Module, what: str) -> None:
    """Saved weights fit `module` name for name, in shape and dtype, and are finite."""
    own = module.state_dict()
    if not isinstance(saved, dict) or set(saved) != set(own):
        unknown = sorted(set(saved) - set(own)) if isinstance(saved, dict) else []
        missing = sorted(set(own) - set(saved)) if isinstance(saved, dict) else []
        detail = f" (no {missing[0]})" if missing else f" ({unknown[0]} is not one)" if unknown else ""
        raise SnapshotMismatch(f"its {what} weights are not this run's network's{detail}")
    for name, mine in own.items():
        value = saved[name]
        if not isinstance(value, torch.Tensor) or value.shape != mine.shape or value.dtype != mine.dtype:
            got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise SnapshotMismatch(f"its {what} weight {name} is {got}, the network's {list(mine.shape)}")
        _check_finite(value, f"its {what} weight {name}")


def check_optimizer(saved, opt: torch.optim.Optimizer) -> None:
    """A saved optimizer state fits `opt`: as many groups and parameters, the same hyperparameters, every
    per-parameter tensor (Adam's moments) of its parameter's shape, and finite."""
    own = opt.state_dict()
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if (
        not isinstance(groups, list)
        or not isinstance(saved.get("state"), dict)
        or len(groups) != len(own["param_groups"])
    ):
        raise SnapshotMismatch("its optimizer state is not this run's optimizer's")
    for theirs, mine in zip(groups, own["param_groups"]):
        if not isinstance(theirs, dict) or not isinstance(theirs.get("params"), list):
            raise SnapshotMismatch("its optimizer state is not this run's optimizer's")
        if len(theirs["params"]) != len(mine["params"]):
            raise SnapshotMismatch(
                f"its optimizer has {len(theirs['params'])} parameters, the run's {len(mine['params'])}"
            )
        for key in ("lr", "betas", "eps", "weight_decay", "amsgrad"):
            if key in theirs and key in mine and _plain(theirs[key]) != _plain(mine[key]):
                raise SnapshotMismatch(f"its optimizer's {key} is {shown(theirs[key])}, the run's {mine[key]!r}")
    params = [p for group in opt.param_groups for p in group["params"]]
    position = {key: n for n, key in enumerate(k for group in groups for k in group["params"])}
    for key, entry in saved["state"].items():
        if key not in position or not isinstance(entry, dict):
            raise SnapshotMismatch(f"its optimizer state names a parameter {shown(key)} it does not have")
        shape = params[position[key]].shape
        for name, value in entry.items():
            if not isinstance(value, torch.Tensor) or (value.ndim and value.shape != shape):
                got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise SnapshotMismatch(
                    f"its optimizer's {name} of parameter {key} is {got}, the parameter {list(shape)}"
                )
            _check_finite(value, f"its optimizer's {name} of parameter {key}")


def check_rng(saved, generator: torch.Generator) -> None:
    """A saved RNG state is one of `generator`'s kind (torch raises a bare RuntimeError otherwise)."""
    mine = generator.get_state()
    if not isinstance(saved, torch.Tensor) or saved.dtype != mine.dtype or saved.shape != mine.shape:
        raise SnapshotMismatch("its random generator state is not a CPU torch.Generator's")


def _check_finite(value: torch.Tensor, what: str) -> None:
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise SnapshotMismatch(f"{what} is not finite (nan or inf)")


def _plain(value):
    return list(value) if isinstance(value, (tuple, list)) else value


def write_snapshot(work: Path, iteration: int, state: dict) -> Path:
    """Publish the new snapshot atomically, then drop the older ones (one complete snapshot always exists)."""
    path = snapshot_path(work, iteration)
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
    for old in (Path(work) / SNAPSHOTS).glob("snapshot-*.pt"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


def claim_work_dir(work: Path, run_key: dict, *, record: str, owned: Sequence[str], what: str, overwrite: bool) -> None:
    """A training work folder belongs to one run: `record` (a JSON file in it) holds the run's settings.

    A folder with snapshots of another run is refused, naming the settings that differ. `--overwrite` removes
    only what such a run writes there (the `owned` glob patterns, its snapshots and the record), never the
    folder or anything else in it.
    """
    work = Path(work)
    if work.exists() and not work.is_dir():
        raise not_a_folder(work, "work folder")
    run_key = json.loads(json.dumps(run_key, sort_keys=True, default=str))  # tuples as lists, as read back
    record_file = work / record
    if not overwrite and _read_record(record_file) is None:
        theirs = [p for pattern in (record, *owned) for p in sorted(work.glob(pattern))]
        if theirs:
            raise InputError(
                f"{work} holds {theirs[0].relative_to(work)}, which no facebatch {what} run recorded; pick another "
                "--work folder (--overwrite replaces such files)"
            )
    if overwrite:
        for pattern in (f"{SNAPSHOTS}/snapshot-*.pt", *owned):
            for path in work.glob(pattern):
                path.unlink(missing_ok=True)
        record_file.unlink(missing_ok=True)
    if latest_snapshot(work) is not None:
        recorded = _read_record(record_file) or {}
        if recorded.get("key") != _fingerprint(run_key):
            before = recorded.get("run", {})
            changed = sorted(k for k in set(run_key) | set(before) if run_key.get(k) != before.get(k))
            raise InputError(
                f"{work} holds snapshots of another {what} run (differs in {', '.join(changed) or 'settings'}); "
                "pass --overwrite to start over, or another --work"
            )
    atomic_write_json(record_file, {"key": _fingerprint(run_key), "run": run_key})


def claim_trained_output(out: Path, work: Path, overwrite: bool) -> None:
    """A trainer's output file may be replaced by the run that wrote it (the same work folder: a finished run
    continued to more iterations); any other file there needs --overwrite, which also starts the training over."""
    claim_files(
        [out],
        by=work,
        overwrite=overwrite,
        way_out="pick another -o or move that file away (--overwrite replaces it and starts the training over)",
    )


def _read_record(path: Path) -> dict | None:
    """The run record a trainer wrote ({"key", "run"}), or None for a missing, unreadable or foreign file."""
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and isinstance(found.get("key"), str) and "run" in found else None


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
