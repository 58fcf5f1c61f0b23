"""The recipe of the built-in `celeba64` generator: a small StyleGAN2 trained on CPU on CelebA crops.

Why a recipe of our own: no pretrained StyleGAN2 can be downloaded on our machines, so the demo,
the tests of real-face quality and the shipped boundaries all rest on this model, and it must be
reproducible and able to go on improving from whatever state is at hand.

The losses are StyleGAN2-ADA's (non-saturating logistic, lazy R1 every 16 D steps, style mixing
0.9, G EMA with ramp-up, Adam lr 0.0025 betas (0, 0.99) with the lazy-regularisation correction),
with x-flips and DiffAugment-style colour + translation on everything D sees (ADA's pipeline is
too costly here). No path-length regulariser (its cost is not repaid at 64 px). Images are made
exactly as `facebatch project` reads a file without --align (centre square crop, Lanczos), so a
projected CelebA photo meets the training distribution.

Resuming, in order of preference:
  1. OUT/state.pt (full state: G, D, G_ema, both Adam states, images seen): continues exactly;
  2. --init-from MODEL.safetensors (a committed model: G and G_ema from its G_ema, D from its D,
     fresh Adam states, images seen from its metadata), as the official code resumes from a
     pickle when only the snapshot survived;
  3. random init.

Writes OUT/latest.safetensors (facebatch format: G_ema + D, loadable with -g), OUT/state.pt,
OUT/grid-<kimg>.png (32 fixed seeds), OUT/log.csv. The thread count is re-read from OUT/threads
every 50 steps, so it can be changed while it runs.

  python models/celeba64/train.py --data ../shared/data/celeba10k --out runs/celeba64 \
      --init-from models/celeba64/celeba64.safetensors --hours 2
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from facebatch.nets.native_format import read_native, write_native
from facebatch.nets.stylegan2 import Discriminator, Generator
from facebatch.pipeline.images import load_image

R1_EVERY = 16


def load_train_images(root: Path, res: int, cache: Path) -> torch.Tensor:
    """uint8 [N,3,res,res] of the `train` split of root/split.csv (all images when there is none)."""
    if cache.exists():
        return torch.load(cache, weights_only=True)
    files = sorted(p for p in (root / "images").rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    split_file = root / "split.csv"
    if split_file.exists():
        with open(split_file, newline="") as fh:
            train = {r["image_id"] for r in csv.DictReader(fh) if r["split"] == "train"}
        files = [p for p in files if p.name in train]
    images = []
    for i, path in enumerate(files):
        x, _ = load_image(path, res)
        images.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
        if i % 2000 == 0:
            print(f"loaded {i}/{len(files)}", flush=True)
    data = torch.stack(images)
    torch.save(data, cache)
    return data


def diff_augment(x: torch.Tensor) -> torch.Tensor:
    """Colour (brightness, saturation, contrast) then translation by up to 1/8 with zero padding.

    Written out rather than taken from a library: it must be differentiable (G's gradient flows
    through it) and cheap on CPU, and torchvision's transforms are neither per-sample nor both.
    """
    b, _, res, _ = x.shape
    x = x + (torch.rand(b, 1, 1, 1) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1) + 0.5) + mean
    shift = res // 8
    tx = torch.randint(-shift, shift + 1, (b, 1, 1))
    ty = torch.randint(-shift, shift + 1, (b, 1, 1))
    gy, gx = torch.meshgrid(torch.arange(res), torch.arange(res), indexing="ij")
    gx = (gx.unsqueeze(0) + tx).clamp(-1, res)
    gy = (gy.unsqueeze(0) + ty).clamp(-1, res)
    padded = F.pad(x, [1, 1, 1, 1])
    index = ((gy + 1) * (res + 2) + (gx + 1)).flatten(1).unsqueeze(1).expand(-1, x.shape[1], -1)
    return padded.flatten(2).gather(2, index).view_as(x)


def save_grid(G: torch.nn.Module, z: torch.Tensor, path: Path, cols: int = 8) -> None:
    with torch.no_grad():
        img = G(z, None, noise_mode="const").clamp(-1, 1)
    img = ((img + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    n, h, w, _ = img.shape
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i in range(n):
        grid[(i // cols) * h : (i // cols + 1) * h, (i % cols) * w : (i % cols + 1) * w] = img[i]
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(grid).save(tmp)
    tmp.replace(path)


class Trainer:
    """G, D, G_ema and their optimisers, one training step at a time."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.g_kwargs = dict(
            z_dim=args.w_dim,
            c_dim=0,
            w_dim=args.w_dim,
            img_resolution=args.res,
            img_channels=3,
            mapping_kwargs=dict(num_layers=args.map_layers),
            synthesis_kwargs=dict(channel_base=args.channel_base, channel_max=args.channel_max),
        )
        self.d_kwargs = dict(
            c_dim=0,
            img_resolution=args.res,
            img_channels=3,
            channel_base=args.channel_base,
            channel_max=args.channel_max,
        )
        self.G, self.D = Generator(**self.g_kwargs), Discriminator(**self.d_kwargs)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        ratio = R1_EVERY / (R1_EVERY + 1)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=args.lr, betas=(0.0, 0.99), eps=1e-8)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=args.lr * ratio, betas=(0.0, 0.99**ratio), eps=1e-8)
        self.gamma = 0.0002 * args.res**2 / args.batch
        self.nimg = 0
        self.step = 0

    # -- state ------------------------------------------------------------------------------
    def load_state(self, path: Path) -> None:
        # Our own training state (tensors, numbers, the args dict): not a checkpoint from elsewhere.
        st = torch.load(path, weights_only=False)
        self.G.load_state_dict(st["G"])
        self.D.load_state_dict(st["D"])
        self.G_ema.load_state_dict(st["G_ema"])
        self.opt_g.load_state_dict(st["opt_g"])
        self.opt_d.load_state_dict(st["opt_d"])
        self.nimg, self.step = st["nimg"], st["step"]

    def init_from_model(self, path: Path) -> None:
        raw = read_native(path)
        if raw.d_state is None:
            raise SystemExit(f"{path} holds no discriminator: it cannot seed training")
        self.G.load_state_dict(raw.g_state)
        self.G_ema.load_state_dict(raw.g_state)
        self.D.load_state_dict(raw.d_state)
        self.nimg = int(float(raw.extra.get("kimg", 0)) * 1000)
        self.step = self.nimg // self.args.batch

    def save(self, out: Path, grid_z: torch.Tensor) -> None:
        with torch.no_grad():
            w = self.G_ema.mapping(torch.randn(10000, self.args.w_dim, generator=torch.Generator().manual_seed(0)))
            self.G_ema.mapping.w_avg.copy_(w[:, 0].mean(0))
        extra = dict(
            trained_on="CelebA aligned crops, train split of celeba10k/split.csv, centre square, Lanczos",
            kimg=round(self.nimg / 1000, 1),
            recipe="models/celeba64/train.py",
        )
        write_native(
            out / "latest.safetensors",
            self.g_kwargs,
            self.G_ema.state_dict(),
            self.d_kwargs,
            self.D.state_dict(),
            extra,
        )
        state = dict(
            G=self.G.state_dict(),
            D=self.D.state_dict(),
            G_ema=self.G_ema.state_dict(),
            opt_g=self.opt_g.state_dict(),
            opt_d=self.opt_d.state_dict(),
            nimg=self.nimg,
            step=self.step,
            args=vars(self.args) | {"data": str(self.args.data), "out": str(self.args.out)},
        )
        tmp = out / "state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(out / "state.pt")
        save_grid(self.G_ema, grid_z, out / f"grid-{self.nimg // 1000:05d}.png")

    # -- one step ---------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.args.bf16)

    def _fakes(self, grad: bool) -> torch.Tensor:
        b, w_dim = self.args.batch, self.args.w_dim
        with torch.set_grad_enabled(grad), self._autocast():
            ws = self.G.mapping(torch.randn(b, w_dim))
            if torch.rand(()) < 0.9:  # style mixing
                cut = int(torch.randint(1, self.G.num_ws, ()))
                ws2 = self.G.mapping(torch.randn(b, w_dim))
                ws = torch.cat([ws[:, :cut], ws2[:, cut:]], dim=1)
            return self.G.synthesis(ws, noise_mode="random").float()

    def train_step(self, reals: torch.Tensor) -> tuple[float, float]:
        G, D = self.G, self.D
        G.requires_grad_(True), D.requires_grad_(False)
        with self._autocast():
            loss_g = F.softplus(-D(diff_augment(self._fakes(True)))).float().mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()

        G.requires_grad_(False), D.requires_grad_(True)
        fake = self._fakes(False)
        do_r1 = self.step % R1_EVERY == 0
        reals = reals.detach().requires_grad_(do_r1)
        with self._autocast():
            logits_real = D(diff_augment(reals)).float()
            loss_d = F.softplus(D(diff_augment(fake)).float()).mean() + F.softplus(-logits_real).mean()
        if do_r1:
            # R1 on the double-backward path stays fp32: its small gradients are what bf16 loses first.
            logits_r1 = D(diff_augment(reals)) if self.args.bf16 else logits_real
            (grad,) = torch.autograd.grad(logits_r1.sum(), reals, create_graph=True)
            loss_d = loss_d + grad.square().sum([1, 2, 3]).mean() * (self.gamma / 2) * R1_EVERY
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        self.nimg += self.args.batch
        self.step += 1
        ema_nimg = min(10_000, self.nimg * 0.05)
        beta = 0.5 ** (self.args.batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), G.parameters()):
                p_ema.copy_(p.lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)
        return loss_g.item(), loss_d.item()


def sample_reals(data: torch.Tensor, batch: int) -> torch.Tensor:
    x = data[torch.randint(0, data.shape[0], (batch,))].float() / 127.5 - 1
    flip = torch.rand(batch) < 0.5
    x[flip] = x[flip].flip(-1)
    return x


def read_threads(path: Path, default: int = 1) -> int:
    try:
        return max(1, int(path.read_text()))
    except (OSError, ValueError):
        return default


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="celeba10k folder (images/, split.csv)")
    ap.add_argument("--out", type=Path, required=True, help="run folder: state.pt, latest.safetensors, grids, log")
    ap.add_argument("--init-from", type=Path, help="a committed model to start from when OUT has no state.pt")
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--channel-base", type=int, default=2048)
    ap.add_argument("--channel-max", type=int, default=128)
    ap.add_argument("--w-dim", type=int, default=256)
    ap.add_argument("--map-layers", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.0025)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for G and D forwards (R1 stays fp32)")
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--snapshot-min", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bench-steps", type=int, default=0, help="time N steps fp32 vs bf16 (interleaved), then exit")
    return ap.parse_args()


def bench(trainer: Trainer, data: torch.Tensor, steps: int) -> None:
    """Seconds per step, fp32 vs bf16 autocast, in interleaved rounds (machine load hits both alike)."""
    times = {False: [], True: []}
    for _ in range(3):
        for bf16 in (False, True):
            trainer.args.bf16 = bf16
            trainer.train_step(sample_reals(data, trainer.args.batch))  # warm-up
            t0 = time.perf_counter()
            for _ in range(steps):
                trainer.train_step(sample_reals(data, trainer.args.batch))
            times[bf16].append((time.perf_counter() - t0) / steps)
    fp32, bf16 = min(times[False]), min(times[True])
    print(
        json.dumps(
            {
                "s_per_step_fp32": round(fp32, 3),
                "s_per_step_bf16": round(bf16, 3),
                "speedup": round(fp32 / bf16, 2),
                "threads": torch.get_num_threads(),
            }
        )
    )


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    threads_file = args.out / "threads"
    if not threads_file.exists():
        threads_file.write_text("1\n")
    torch.set_num_threads(read_threads(threads_file))
    torch.manual_seed(args.seed)

    data = load_train_images(args.data, args.res, args.out / f"data{args.res}.pt")
    trainer = Trainer(args)
    if (args.out / "state.pt").exists():
        trainer.load_state(args.out / "state.pt")
        print(f"resumed from state.pt at {trainer.nimg / 1000:.1f} kimg", flush=True)
    elif args.init_from:
        trainer.init_from_model(args.init_from)
        print(f"initialised from {args.init_from} at {trainer.nimg / 1000:.1f} kimg (fresh optimisers)", flush=True)
    if args.bench_steps:
        bench(trainer, data, args.bench_steps)
        return
    grid_z = torch.randn(32, args.w_dim, generator=torch.Generator().manual_seed(123))

    with open(args.out / "log.csv", "a", newline="") as log:
        writer = csv.writer(log)
        t_end = time.time() + args.hours * 3600
        t_snap = time.time() + args.snapshot_min * 60
        t0, nimg0 = time.time(), trainer.nimg
        while time.time() < t_end:
            loss_g, loss_d = trainer.train_step(sample_reals(data, args.batch))
            if trainer.step % 50 == 0:
                rate = (trainer.nimg - nimg0) / (time.time() - t0) * 3.6
                writer.writerow([trainer.step, trainer.nimg, f"{loss_g:.4f}", f"{loss_d:.4f}", f"{rate:.1f}"])
                log.flush()
                print(
                    f"step {trainer.step} kimg {trainer.nimg / 1000:.1f} G {loss_g:.3f} D {loss_d:.3f} "
                    f"{rate:.1f} kimg/h",
                    flush=True,
                )
                torch.set_num_threads(read_threads(threads_file))
            if time.time() > t_snap:
                trainer.save(args.out, grid_z)
                print(f"snapshot at {trainer.nimg / 1000:.1f} kimg", flush=True)
                t_snap = time.time() + args.snapshot_min * 60
    trainer.save(args.out, grid_z)
    print(f"snapshot at {trainer.nimg / 1000:.1f} kimg", flush=True)


if __name__ == "__main__":
    main()
