"""StyleGAN-NADA training: a trainable copy of G learns to move its images along a CLIP text direction.

The recipe is the reference code's (rinongal/StyleGAN-nada, ``train.py`` + ``ZSSGAN.py``):

- a frozen copy and a trainable copy of G; in the trainable one the mapping network, the affine
  (style) layers, the ToRGB layers and the constant never change (`facebatch.domain_shift.layers`);
- per step: adaptive layer selection (or the fixed ``layers``), then ``batch`` z from N(0, I)
  (with probability ``mixing`` two z and a crossover row, as rosinality's ``mixing_noise``),
  W through the frozen mapping (no truncation while training), one image from each copy with its
  own random noise maps (``randomize_noise=True`` in the reference), the weighted directional
  CLIP loss, one Adam step (lr 0.002·4/5, betas (0, 0.99^0.8): rosinality's g_reg_every = 4
  lazy-regularisation ratio, kept by NADA); layers not selected at a step get no gradient and
  Adam skips them;
- fixed-seed grids at truncation 0.7 (the reference's ``sample_truncation``).

What the reference lacks: every random draw comes from one `torch.Generator` seeded with
``seed``, drawn on the CPU, so a run does not depend on the device's RNG; a snapshot (trainable
weights, Adam state, that generator's state, the iteration, the loss history) is written every
``snapshot_every`` iterations, and a rerun resumes from the newest one: on CPU with the same
thread count the result is bit-for-bit the uninterrupted run's. Nothing depends on the total
iteration count, so a finished run can also be continued with a larger ``iters``.

Over 400 lines: the settings, the trainer, its snapshot state and the output metadata are one recipe.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from facebatch import __version__
from facebatch.domain_shift.layers import (
    candidate_rows,
    check_rows,
    default_k,
    freeze_all_but,
    select_rows,
    trainable_parameters,
)
from facebatch.domain_shift.loss import ClipLoss
from facebatch.errors import InputError, shown
from facebatch.pipeline.atomic import atomic_write_bytes
from facebatch.pipeline.snapshots import (
    SNAPSHOTS,
    SnapshotMismatch,
    check_history,
    check_training_state,
    claim_work_dir,
    latest_snapshot,
    resume_from,
    write_snapshot,
)
from facebatch.ranges import check_seeds, finite_number, whole_number

LR = 0.002 * 4 / 5  # the reference: args.lr (0.002) * g_reg_ratio (g_reg_every 4 -> 4/5)
BETAS = (0.0, 0.99 ** (4 / 5))
GRIDS = "grids"
# Each is one tensor allocation: a training batch (two generators' images and CLIP features, with gradients), the
# W codes of a selection, a grid rendered in one batch. The reference trains with 2 (train.py's 16 at most).
MAX_BATCH = 64
MAX_GRID_SEEDS = 64
# Every snapshot holds the loss and the rows of each iteration so far; the reference trains 200-400 (styles) or ~50.
MAX_ITERS = 100_000
SETTINGS_FILE = "nada.json"


@dataclass(frozen=True)
class NadaSettings:
    """Everything that decides a NADA run's result (and the grids it draws)."""

    source: str  # text describing the generator's domain now ("photo")
    target: str  # text describing the domain to move to ("pencil sketch")
    iters: int = 300  # training iterations (the README example: 301; the colab: 200-400 for styles)
    batch: int = 2  # z per step (the README example's; train.py's 16 is a rosinality leftover)
    seed: int = 2  # the reference seeds torch and numpy with 2
    lr: float = LR
    betas: tuple[float, float] = BETAS
    layers: tuple[int, ...] | None = None  # fixed W+ rows to train; None: adaptive selection every step
    auto_layer_k: int | None = None  # rows per step; None: the colab rule int(2 * num_ws / 3)
    auto_layer_iters: int = 1  # SGD steps on W+ codes per selection; 0: train every candidate row
    auto_layer_batch: int = 8  # W codes per selection
    mixing: float = 0.0  # probability of style mixing in a training batch (colab: 0.9 to improve shape)
    truncation: float = 1.0  # truncation psi of training samples (the reference trains without)
    grid_seeds: tuple[int, ...] = tuple(range(8))  # NVlabs seeds of the before/after grids
    grid_truncation: float = 0.7  # the reference's sample_truncation
    snapshot_every: int = 50  # iterations between snapshots (and grids)

    def check(self) -> None:
        """Every setting's type and range, before anything is loaded or allocated (the library's callers pass
        Python values: iters="3" is refused here, not deep in the loop)."""
        for name, text in (("--source", self.source), ("--target", self.target)):
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"{name} must be a non-empty text, got {shown(text)}")
        if self.source.strip() == self.target.strip():
            raise InputError(f"--source and --target are the same text ({self.source!r}): there is no direction")
        for name, value, lo, hi in (
            ("--iters", self.iters, 1, MAX_ITERS),
            ("--batch", self.batch, 1, MAX_BATCH),  # each batch is allocated in one piece
            ("--auto-layer-batch", self.auto_layer_batch, 1, MAX_BATCH),
            ("--snapshot-every", self.snapshot_every, 1, None),
            ("--auto-layer-iters", self.auto_layer_iters, 0, None),
        ):
            whole_number(value, name, lo=lo, hi=hi)
        if self.auto_layer_k is not None:
            whole_number(self.auto_layer_k, "--auto-layer-k", lo=1)  # its top bound is the generator's: check_for
        finite_number(self.mixing, "--mixing", lo=0.0, hi=1.0)  # a probability
        for name, value in (("truncation", self.truncation), ("grid_truncation", self.grid_truncation)):
            finite_number(value, name)
        finite_number(self.lr, "lr", lo=0.0)
        for beta in self.betas:
            finite_number(beta, "betas", lo=0.0, hi=1.0)
        check_seeds([self.seed], "--seed")
        if not self.grid_seeds:
            raise InputError("--grid-seeds selects no seed")
        if len(self.grid_seeds) > MAX_GRID_SEEDS:
            raise InputError(
                f"--grid-seeds selects {len(self.grid_seeds)} seeds; at most {MAX_GRID_SEEDS} (one grid row)"
            )
        check_seeds(self.grid_seeds, "--grid-seeds")

    def check_for(self, G: torch.nn.Module) -> None:
        """What depends on the generator: no more rows chosen per step than it has rows to train."""
        rows = len(candidate_rows(G))
        if self.layers is None and self.auto_layer_k is not None and self.auto_layer_k > rows:
            raise InputError(f"--auto-layer-k {self.auto_layer_k}: at most {rows}, the W+ rows this generator trains")

    def resume_key(self) -> dict:
        """The settings a snapshot must share to be resumed (not iters: a run may be continued further)."""
        d = asdict(self)
        for k in ("iters", "snapshot_every", "grid_seeds", "grid_truncation"):
            d.pop(k)
        return d

    def layers_label(self, num_ws: int) -> str:
        from facebatch.edit.layers import format_layers

        if self.layers is not None:
            return format_layers(self.layers)
        if self.auto_layer_iters == 0:
            return "all"
        return f"auto(k={self.auto_layer_k or default_k(num_ws)})"


@dataclass
class NadaResult:
    G: torch.nn.Module  # the trained generator (eval mode, frozen)
    losses: list[float]  # directional loss per iteration, from the first
    rows: list[list[int]]  # W+ rows trained at each iteration
    resumed_from: int  # iteration of the snapshot the run continued from (0: a fresh start)
    work_dir: Path
    grid: Path | None = None
    extra: dict = field(default_factory=dict)


class NadaTrainer:
    """The two generators, the optimizer and the RNG of one run; `step()` is one reference iteration."""

    def __init__(self, G: torch.nn.Module, loss: ClipLoss, settings: NadaSettings, device="cpu"):
        self.settings = settings
        self.device = torch.device(device)
        self.G_frozen = G.to(self.device).eval().requires_grad_(False)
        self.G_train = copy.deepcopy(self.G_frozen).eval()
        self.loss = loss
        self.num_ws = G.num_ws
        if settings.layers is not None:
            self.fixed_rows = check_rows(settings.layers, G)
        elif settings.auto_layer_iters == 0:
            self.fixed_rows = candidate_rows(G)
        else:
            self.fixed_rows = None
        self.k = settings.auto_layer_k or default_k(self.num_ws)
        self.params = trainable_parameters(self.G_train)
        self.opt = torch.optim.Adam(self.params, lr=settings.lr, betas=tuple(settings.betas))
        self.rng = torch.Generator().manual_seed(int(settings.seed))
        self.iteration = 0
        self.losses: list[float] = []
        self.rows: list[list[int]] = []

    # ------------------------------------------------------------------------------------------ draws

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.G_frozen.z_dim, generator=self.rng).to(self.device)

    def _noise(self, n: int) -> list[torch.Tensor]:
        return [
            torch.randn(n, 1, r, r, generator=self.rng).to(self.device)
            for r in self.G_frozen.synthesis.noise_resolutions
        ]

    @torch.no_grad()
    def _ws(self, n: int) -> torch.Tensor:
        """W+ codes of a training batch: one z, or two with a crossover row (probability `mixing`)."""
        mapping, psi = self.G_frozen.mapping, self.settings.truncation
        if self.settings.mixing > 0 and torch.rand(1, generator=self.rng).item() < self.settings.mixing:
            z1, z2 = self._z(n), self._z(n)
            cut = int(torch.randint(1, self.num_ws, (1,), generator=self.rng))
            ws = mapping(z1, truncation_psi=psi)
            ws[:, cut:] = mapping(z2, truncation_psi=psi)[:, cut:]
            return ws
        return mapping(self._z(n), truncation_psi=psi)

    # ------------------------------------------------------------------------------------------- step

    def choose_rows(self) -> list[int]:
        if self.fixed_rows is not None:
            return self.fixed_rows
        s = self.settings
        with torch.no_grad():
            w = self.G_frozen.mapping(self._z(s.auto_layer_batch))  # W replicated to every W+ row
        return select_rows(
            self.G_train, w, self.loss.global_, self.k, s.auto_layer_iters, lambda: self._noise(s.auto_layer_batch)
        )

    def step(self) -> float:
        rows = self.choose_rows()
        freeze_all_but(self.G_train, rows)
        ws = self._ws(self.settings.batch)
        with torch.no_grad():
            frozen = self.G_frozen.synthesis(ws, noise=self._noise(len(ws)))
        trained = self.G_train.synthesis(ws, noise=self._noise(len(ws)))
        loss = self.loss.directional(frozen, trained)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.G_train.requires_grad_(False)
        self.iteration += 1
        self.losses.append(float(loss.detach()))
        self.rows.append(list(rows))
        return self.losses[-1]

    # -------------------------------------------------------------------------------------- snapshots

    def state_dict(self) -> dict:
        return {
            "iteration": self.iteration,
            "generator": {k: v.detach().cpu().clone() for k, v in self.G_train.state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "rng": self.rng.get_state(),
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "rows": [list(r) for r in self.rows],
        }

    def load_state_dict(self, state: dict) -> None:
        """Go on from a snapshot; each part is checked against this run before any is taken (SnapshotMismatch)."""
        iteration = check_training_state(state, "generator", self.G_train, self.opt, self.rng, ("losses", "rows"))
        losses, rows = state["losses"], state["rows"]
        if not isinstance(losses, torch.Tensor) or losses.ndim != 1 or not losses.is_floating_point():
            raise SnapshotMismatch("its loss history is not a list of numbers")
        check_history(len(losses), iteration, "loss history")
        if not isinstance(rows, list) or not all(
            isinstance(r, list) and all(type(i) is int and 0 <= i < self.num_ws for i in r) for r in rows
        ):
            raise SnapshotMismatch(f"its trained rows are not lists of W+ rows 0-{self.num_ws - 1}")
        check_history(len(rows), iteration, "list of trained rows")
        self.G_train.load_state_dict(state["generator"], strict=True)
        self.opt.load_state_dict(state["optimizer"])
        self.rng.set_state(state["rng"])
        self.iteration = iteration
        self.losses = [float(x) for x in losses.tolist()]
        self.rows = [list(r) for r in rows]

    # ------------------------------------------------------------------------------------------ grids

    @torch.no_grad()
    def grid_images(self, generator: torch.nn.Module):
        from facebatch.nets.sampling import z_from_seeds
        from facebatch.pipeline.images import tensor_to_pil

        z = z_from_seeds(self.settings.grid_seeds, self.G_frozen.z_dim).to(self.device)
        ws = self.G_frozen.mapping(z, truncation_psi=self.settings.grid_truncation)
        return [tensor_to_pil(img.cpu()) for img in generator.synthesis(ws, noise_mode="const")]


# ------------------------------------------------------------------------------------------ work folder


def prepare_work(work: Path, run_key: dict, overwrite: bool) -> None:
    """A work folder belongs to one run (same generator, texts, CLIPs and settings); refuse to mix runs."""
    owned = (f"{GRIDS}/before.png", f"{GRIDS}/iter-*.png", "before_after.png")
    claim_work_dir(work, run_key, record=SETTINGS_FILE, owned=owned, what="NADA", overwrite=overwrite)


def train_nada(
    G: torch.nn.Module,
    loss: ClipLoss,
    settings: NadaSettings,
    work: Path,
    *,
    run_key: dict,
    device="cpu",
    overwrite: bool = False,
    require_snapshot: bool = False,
    on_step: Callable[[int, float, list[int]], None] | None = None,
    stop_after: int | None = None,
) -> NadaResult:
    """Train (or resume) in `work`; returns the trained G. `stop_after` ends the loop early (tests, a
    bounded slice of a long run); the snapshot of that iteration is written, so a rerun goes on from it."""
    settings.check()
    settings.check_for(G)
    work = Path(work)
    prepare_work(work, run_key, overwrite)
    trainer = NadaTrainer(G, loss, settings, device)
    found = latest_snapshot(work)
    if require_snapshot and found is None:
        raise InputError(f"--resume: no snapshot in {work / SNAPSHOTS}")
    resumed_from = 0
    if found is not None:
        resume_from(found, trainer.load_state_dict)
        resumed_from = trainer.iteration
        if trainer.iteration > settings.iters:
            raise InputError(
                f"{found} is at iteration {trainer.iteration}, past --iters {settings.iters}; "
                "pass a larger --iters or --overwrite"
            )
    grids = work / GRIDS
    before = grids / "before.png"
    if not before.exists():
        from facebatch.sheets import labelled_rows

        atomic_write_bytes(before, labelled_rows([("before (frozen G)", trainer.grid_images(trainer.G_frozen))]))
    end = settings.iters if stop_after is None else min(settings.iters, trainer.iteration + stop_after)
    while trainer.iteration < end:
        value = trainer.step()
        if on_step is not None:
            on_step(trainer.iteration, value, trainer.rows[-1])
        if trainer.iteration % settings.snapshot_every == 0 or trainer.iteration == end:
            write_snapshot(work, trainer.iteration, trainer.state_dict())
            _write_grid(trainer, grids / f"iter-{trainer.iteration:06d}.png")
    grid = None
    if trainer.iteration == settings.iters:
        grid = work / "before_after.png"
        _write_grid(trainer, grid)
    trainer.G_train.eval().requires_grad_(False)
    return NadaResult(trainer.G_train, trainer.losses, trainer.rows, resumed_from, work, grid)


def _write_grid(trainer: NadaTrainer, path: Path) -> None:
    from facebatch.sheets import labelled_rows

    s = trainer.settings
    rows = [
        (f"before: {s.source!r} (frozen G), seeds {s.grid_seeds[0]}..", trainer.grid_images(trainer.G_frozen)),
        (f"after {trainer.iteration} iterations: {s.target!r}", trainer.grid_images(trainer.G_train)),
    ]
    atomic_write_bytes(path, labelled_rows(rows))


# ------------------------------------------------------------------------------------------------ output


def nada_metadata(
    settings: NadaSettings,
    clips: Sequence[dict],
    base: dict,
    result: NadaResult,
    num_ws: int,
) -> dict:
    """The `extra` of the output file: what a reader needs to know how the generator was made."""
    losses = result.losses
    head, tail = losses[: min(10, len(losses))], losses[-min(10, len(losses)) :]
    return {
        "nada": {
            "source": settings.source,
            "target": settings.target,
            "clips": list(clips),
            "layers": settings.layers_label(num_ws),
            "layers_fixed": list(settings.layers) if settings.layers is not None else None,
            "auto_layer_k": None if settings.layers is not None else (settings.auto_layer_k or default_k(num_ws)),
            "auto_layer_iters": settings.auto_layer_iters,
            "auto_layer_batch": settings.auto_layer_batch,
            "iterations": len(losses),
            "batch": settings.batch,
            "seed": settings.seed,
            "lr": settings.lr,
            "betas": list(settings.betas),
            "mixing": settings.mixing,
            "truncation": settings.truncation,
            "loss_first10_mean": sum(head) / len(head) if head else None,
            "loss_last10_mean": sum(tail) / len(tail) if tail else None,
            "facebatch_version": __version__,
        },
        "base_generator": base,
    }


def write_nada_generator(path: Path, g_kwargs: dict, G: torch.nn.Module, extra: dict) -> Path:
    """facebatch's own safetensors: loadable anywhere a generator is (`-g`), written atomically."""
    from facebatch.nets.native_format import write_native

    return write_native(Path(path), g_kwargs, G.state_dict(), extra=extra)


def read_nada_metadata(path: Path) -> dict | None:
    """The "nada" settings a generator file records (header only, no tensors read), or None for a
    generator NADA did not make."""
    from safetensors import SafetensorError, safe_open

    from facebatch.nets.native_format import META_KEY

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            extra = json.loads((fh.metadata() or {}).get(META_KEY, "{}")).get("extra") or {}
    except (SafetensorError, OSError, ValueError, AttributeError):
        return None
    nada = extra.get("nada") if isinstance(extra, dict) else None
    return {**nada, "base_generator": extra.get("base_generator")} if isinstance(nada, dict) else None
