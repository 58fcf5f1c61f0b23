"""Train an image -> W+ encoder for any generator, with no data (its own samples) or with real photos too.

Per step:
- **samples**, where the true code is known: `batch` z through the frozen mapping, each with its own
  truncation psi drawn from [truncation_min, 1], style mixing (a second code from a random row on,
  probability `mixing`) and per-row jitter (gaussian, `jitter` x w's spread per dimension, probability
  `jitter_prob`), so that W+ codes off the W manifold are covered; rendered with random noise maps
  and clamped to [-1, 1] as a saved image is. Loss: the latent L2 (per dimension, in units of w's
  variance) plus, for the first `image_batch` of them, the image losses;
- **real images** (`real_batch` per step, when given): image losses only, which is what closes the
  gap between samples and photos (f-AnoGAN's samples-only encoder reconstructs real inputs poorly);
- image losses (every `image_every`-th step: on a CPU they cost ~10x the latent loss): pixel MSE +
  `perceptual_weight` x the perceptual distance between the input and G(E(x)) (G frozen, const noise);
- e4e's delta regularisation: `delta_weight` x the sum over rows k > 0 of the mean |w_k - w_0|, which
  keeps the codes near one shared W (editable, e4e's point).
Adam at `lr`, the gradient's norm clipped at `grad_clip`. Every random draw (and the initial weights) comes
from `seed`, drawn on the CPU, so a run does not depend on the device's RNG and, on a CPU with the same
thread count, a resumed run is bit for bit the uninterrupted one (snapshots: weights, Adam, the RNG state,
images seen).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from facebatch.errors import InputError, shown
from facebatch.nets.encoder import Encoder, build_encoder
from facebatch.pipeline.atomic import atomic_write_bytes
from facebatch.pipeline.snapshots import (
    SnapshotMismatch,
    check_count,
    check_history,
    check_training_state,
    claim_work_dir,
    latest_snapshot,
    resume_from,
    write_snapshot,
)
from facebatch.ranges import check_seeds, finite_number, whole_number

SETTINGS_FILE = "encoder.json"
GRIDS = "grids"
GRID_SAMPLES = 4  # fixed inputs of the snapshot grids: this many samples (seeds 0..) and as many real images


@dataclass(frozen=True)
class EncoderSettings:
    """Everything that decides an encoder run's result."""

    iters: int = 20000
    batch: int = 32
    real_batch: int = 8
    image_batch: int = 8
    image_every: int = 1
    lr: float = 5e-4
    latent_weight: float = 1.0
    mse_weight: float = 1.0
    perceptual_weight: float = 0.8  # e4e's LPIPS weight beside L2 1.0
    delta_weight: float = 2e-4  # e4e's delta_norm_lambda
    # The gradient's norm is clipped here: an early recipe without it (lr 1e-3) ran 600 steps fine and then
    # diverged within 100 (latent loss 0.66 -> 85,000) once image losses pushed codes off the manifold.
    grad_clip: float = 1.0
    truncation_min: float = 0.7
    mixing: float = 0.5
    jitter: float = 0.2
    jitter_prob: float = 0.5
    perceptual: str = "stlpips-vgg"
    widths: tuple[int, ...] | None = None
    seed: int = 0
    snapshot_every: int = 500

    def check(self) -> None:
        """Every setting's type and range, before anything is loaded (the library's callers pass Python values:
        iters="3" is refused here, not deep in the loop)."""
        for name, value, low in (
            ("--iters", self.iters, 1),
            ("--batch", self.batch, 1),
            ("--real-batch", self.real_batch, 0),
            ("--image-batch", self.image_batch, 0),
            ("--image-every", self.image_every, 1),
            ("--snapshot-every", self.snapshot_every, 1),
        ):
            whole_number(value, name, lo=low)
        if self.image_batch > self.batch:
            raise InputError(f"--image-batch ({self.image_batch}) cannot exceed --batch ({self.batch})")
        for name, value in (("--mixing", self.mixing), ("--jitter-prob", self.jitter_prob)):
            finite_number(value, name, lo=0.0, hi=1.0)  # a probability
        if finite_number(self.truncation_min, "--truncation-min", lo=0.0, hi=1.0) == 0:
            raise InputError("--truncation-min must be above 0")
        for name in ("lr", "latent_weight", "mse_weight", "perceptual_weight", "delta_weight", "jitter", "grad_clip"):
            finite_number(getattr(self, name), f"--{name.replace('_', '-')}", lo=0.0)
        if self.lr == 0:
            raise InputError("--lr must be > 0")
        if not isinstance(self.perceptual, str):
            raise InputError(f"perceptual: expected a perceptual network's name, got {shown(self.perceptual)}")
        check_seeds([self.seed], "--seed")

    def resume_key(self) -> dict:
        """What a snapshot must share to be resumed (not iters: a run may be continued further)."""
        d = asdict(self)
        d.pop("iters")
        d.pop("snapshot_every")
        return d


@dataclass
class EncoderResult:
    encoder: Encoder
    images_seen: int
    iteration: int
    resumed_from: int
    losses: list[dict] = field(default_factory=list)
    grid: Path | None = None


class EncoderTrainer:
    def __init__(self, G, settings: EncoderSettings, real: torch.Tensor | None = None, device="cpu"):
        from facebatch.invert.projector import w_stats
        from facebatch.nets.perceptual import build_perceptual

        self.settings = settings
        self.device = torch.device(device)
        self.G = G.to(self.device).eval().requires_grad_(False)
        with torch.random.fork_rng(devices=[]):  # the initial weights come from the run's seed too
            torch.manual_seed(int(settings.seed))
            widths = list(settings.widths) if settings.widths else None
            self.encoder = build_encoder(self.G, widths=widths).to(self.device)
        self.opt = torch.optim.Adam(self.encoder.parameters(), lr=settings.lr)
        self.rng = torch.Generator().manual_seed(int(settings.seed))
        w_avg, self.w_std = w_stats(self.G, 10000, 123, self.device)
        self.w_avg = w_avg.reshape(1, 1, -1)
        self.real = real  # uint8 [N, 3, R, R] on the CPU, or None
        self.real_batch = settings.real_batch if real is not None and len(real) else 0
        needs_perceptual = settings.perceptual_weight > 0 and settings.perceptual != "none"
        self.perceptual = build_perceptual(settings.perceptual, self.device) if needs_perceptual else None
        self.iteration = 0
        self.images_seen = 0
        self.losses: list[dict] = []

    # -- draws (all from the run's CPU generator) -------------------------------------------------------
    def _rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.rng)

    def _randn(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, generator=self.rng)

    @torch.no_grad()
    def sample_codes(self, n: int) -> torch.Tensor:
        """W+ codes [n, num_ws, w_dim] spread around and off the W manifold (truncation, mixing, jitter)."""
        s, G = self.settings, self.G

        def codes():
            w = G.mapping(self._randn(n, G.z_dim).to(self.device), None)
            psi = (s.truncation_min + (1 - s.truncation_min) * self._rand(n)).to(self.device).reshape(n, 1, 1)
            return self.w_avg + psi * (w - self.w_avg)

        ws = codes()
        mix = (self._rand(n) < s.mixing).to(self.device)
        cut = torch.randint(1, G.num_ws, (n,), generator=self.rng).to(self.device)
        rows = torch.arange(G.num_ws, device=self.device).reshape(1, -1, 1)
        ws = torch.where(mix.reshape(n, 1, 1) & (rows >= cut.reshape(n, 1, 1)), codes(), ws)
        jitter = (self._rand(n) < s.jitter_prob).to(self.device).reshape(n, 1, 1)
        per_dim = self.w_std / G.w_dim**0.5  # w_std is the spread of the whole vector, not of one dimension
        return ws + jitter * self._randn(n, G.num_ws, G.w_dim).to(self.device) * (s.jitter * per_dim)

    @torch.no_grad()
    def render(self, ws: torch.Tensor, random_noise: bool) -> torch.Tensor:
        if random_noise:
            noise = [self._randn(len(ws), 1, r, r).to(self.device) for r in self.G.synthesis.noise_resolutions]
            return self.G.synthesis(ws, noise=noise).clamp(-1, 1)
        return self.G.synthesis(ws, noise_mode="const").clamp(-1, 1)

    def real_images(self, n: int) -> torch.Tensor:
        index = torch.randint(0, len(self.real), (n,), generator=self.rng)
        x = self.real[index].float() / 127.5 - 1
        flip = (self._rand(n) < 0.5).reshape(n, 1, 1, 1)
        return torch.where(flip, x.flip(-1), x).to(self.device)

    # -- one step ---------------------------------------------------------------------------------------
    def image_loss(self, codes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean over images of MSE + perceptual_weight x perceptual distance between G(codes) and targets."""
        s = self.settings
        recon = self.G.synthesis(codes, noise_mode="const")
        loss = s.mse_weight * (recon - targets).square().mean(dim=[1, 2, 3])
        if self.perceptual is not None:
            loss = loss + s.perceptual_weight * self.perceptual(recon, targets)
        return loss.mean()

    def step(self) -> dict:
        s = self.settings
        self.encoder.train()
        ws = self.sample_codes(s.batch)
        samples = self.render(ws, random_noise=True)
        reals = self.real_images(self.real_batch) if self.real_batch else samples[:0]
        pred = self.encoder(torch.cat([samples, reals]))
        pred_s, pred_r = pred[: s.batch], pred[s.batch :]
        latent = (pred_s - ws).square().mean() / (self.w_std**2 / self.G.w_dim)  # w_std: the spread over all dims
        delta = (pred[:, 1:] - pred[:, :1]).norm(dim=2).mean(dim=0).sum()
        loss = s.latent_weight * latent + s.delta_weight * delta
        record = {"latent": float(latent.detach()), "delta": float(delta.detach())}
        if (self.iteration % s.image_every == 0) and (s.image_batch or self.real_batch):
            if s.image_batch:
                img_s = self.image_loss(pred_s[: s.image_batch], samples[: s.image_batch])
                loss = loss + img_s
                record["image_samples"] = float(img_s.detach())
            if self.real_batch:
                img_r = self.image_loss(pred_r, reals)
                loss = loss + img_r
                record["image_real"] = float(img_r.detach())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip > 0:
            record["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.encoder.parameters(), s.grad_clip))
        self.opt.step()
        self.iteration += 1
        self.images_seen += s.batch + self.real_batch
        record["loss"] = float(loss.detach())
        self.losses.append(record)
        return record

    # -- snapshots --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "iteration": self.iteration,
            "images_seen": self.images_seen,
            "encoder": {k: v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "rng": self.rng.get_state(),
            "losses": json.dumps(self.losses),  # a plain string: the weights-only loader reads it
        }

    def load_state_dict(self, state: dict) -> None:
        """Go on from a snapshot; each part is checked against this run before any is taken (SnapshotMismatch)."""
        iteration = check_training_state(state, "encoder", self.encoder, self.opt, self.rng, ("images_seen", "losses"))
        images_seen = check_count(state["images_seen"], "count of images seen")
        try:
            losses = json.loads(state["losses"])
        except (TypeError, ValueError):
            losses = None
        if not isinstance(losses, list) or not all(isinstance(r, dict) for r in losses):
            raise SnapshotMismatch("its loss history is not a list of records")
        check_history(len(losses), iteration, "loss history")
        self.encoder.load_state_dict(state["encoder"], strict=True)
        self.opt.load_state_dict(state["optimizer"])
        self.rng.set_state(state["rng"])
        self.iteration = iteration
        self.images_seen = images_seen
        self.losses = losses

    # -- the grid: target | reconstruction at fixed inputs --------------------------------------------
    @torch.no_grad()
    def grid_inputs(self) -> torch.Tensor:
        from facebatch.nets.sampling import z_from_seeds

        ws = self.G.mapping(z_from_seeds(range(GRID_SAMPLES), self.G.z_dim).to(self.device), None)
        inputs = [self.G.synthesis(ws, noise_mode="const").clamp(-1, 1)]
        if self.real is not None and len(self.real):
            inputs.append(self.real[:GRID_SAMPLES].float().to(self.device) / 127.5 - 1)
        return torch.cat(inputs)

    @torch.no_grad()
    def grid_png(self) -> bytes:
        from facebatch.pipeline.images import tensor_to_pil
        from facebatch.sheets import labelled_rows

        self.encoder.eval()
        x = self.grid_inputs()
        recon = self.G.synthesis(self.encoder(x), noise_mode="const").clamp(-1, 1)
        label = f"G(E(x)) after {self.iteration} steps, {self.images_seen:,} images"
        return labelled_rows(
            [
                ("inputs: G samples (seeds 0..), then real images", [tensor_to_pil(t.cpu()) for t in x]),
                (label, [tensor_to_pil(t.cpu()) for t in recon]),
            ]
        )


def prepare_work(work: Path, run_key: dict, overwrite: bool) -> None:
    """A work folder belongs to one run; --overwrite removes only what an encoder run writes there."""
    claim_work_dir(work, run_key, record=SETTINGS_FILE, owned=(f"{GRIDS}/step-*.png",), what="encoder",
                   overwrite=overwrite)  # fmt: skip


def train_encoder(
    G,
    settings: EncoderSettings,
    work: Path,
    *,
    run_key: dict,
    real: torch.Tensor | None = None,
    device="cpu",
    overwrite: bool = False,
    on_step: Callable[[int, dict], None] | None = None,
    stop_after: int | None = None,
) -> EncoderResult:
    """Train (or resume) in `work`; `stop_after` ends the loop early with a snapshot (tests, bounded slices)."""
    settings.check()
    work = Path(work)
    prepare_work(work, run_key, overwrite)
    trainer = EncoderTrainer(G, settings, real, device)
    found = latest_snapshot(work)
    resumed_from = 0
    if found is not None:
        resume_from(found, trainer.load_state_dict)
        resumed_from = trainer.iteration
        if trainer.iteration > settings.iters:
            raise InputError(f"{found} is at step {trainer.iteration}, past --iters {settings.iters}")
    end = settings.iters if stop_after is None else min(settings.iters, trainer.iteration + stop_after)
    grid = None
    while trainer.iteration < end:
        record = trainer.step()
        if on_step is not None:
            on_step(trainer.iteration, record)
        if trainer.iteration % settings.snapshot_every == 0 or trainer.iteration == end:
            write_snapshot(work, trainer.iteration, trainer.state_dict())
            grid = work / GRIDS / f"step-{trainer.iteration:07d}.png"
            atomic_write_bytes(grid, trainer.grid_png())
    trainer.encoder.eval().requires_grad_(False)
    return EncoderResult(trainer.encoder, trainer.images_seen, trainer.iteration, resumed_from, trainer.losses, grid)
