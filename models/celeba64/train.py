"""The recipe of the built-in `celeba64` generator: a small StyleGAN2 trained on CelebA crops, on CPU or CUDA.

Why a recipe of our own: no pretrained StyleGAN2 can be downloaded on our machines, so the demo,
the tests of real-face quality and the shipped boundaries all rest on this model, and it must be
reproducible and able to go on improving from whatever state is at hand, on whatever device is lent.

The losses are StyleGAN2-ADA's (non-saturating logistic, lazy R1 every 16 D steps, style mixing
0.9, G EMA with ramp-up, Adam lr 0.0025 betas (0, 0.99) with the lazy-regularisation correction),
with x-flips and DiffAugment-style colour + translation on everything D sees (ADA's pipeline is
too costly here). No path-length regulariser (its cost is not repaid at 64 px). Images are made
exactly as `facebatch project` reads a file without --align (centre square crop, Lanczos), so a
projected CelebA photo meets the training distribution.

One recipe on every device, so a model trained partly on a CPU and partly on a GPU is one model:
the same losses, augmentation and R1 weight (`--gamma`, fixed at the official formula's value for
batch 32, whatever batch a device runs); only the batch (`--batch auto` measures on CUDA), the EMA
half-life that the official code ties to the batch (batch * 10/32 kimg), and the arithmetic (TF32
on CUDA by default) follow the device.

Resuming, in order of preference:
  1. OUT/state.pt (full state: G, D, G_ema, both Adam states, images seen): continues exactly;
  2. --init-from MODEL.safetensors (a committed model: G and G_ema from its G_ema, D from its D,
     fresh Adam states, images seen from its metadata), as the official code resumes from a
     pickle when only the snapshot survived;
  3. random init.

Writes OUT/latest.safetensors (facebatch format: G_ema + D, loadable with -g), OUT/state.pt,
OUT/grid-<kimg>.png (32 fixed seeds), OUT/log.csv; with --export DIR also a copy of the newest
snapshot cut into files of at most 15 MiB (what a GPU machine can hand back). The thread count is
re-read from OUT/threads every 50 steps, so it can be changed while it runs.

  python models/celeba64/train.py --data ../shared/data/celeba10k --out runs/celeba64 \
      --init-from models/celeba64/celeba64.safetensors --hours 2
  python models/celeba64/train.py --data .gpu/celeba64-train64.parquet --out runs/gpu \
      --device cuda --batch auto --minutes 6 --snapshot-min 2 --export $OUT
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import io
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from facebatch.nets.native_format import read_native, write_native
from facebatch.nets.stylegan2 import Discriminator, Generator

R1_EVERY = 16
EXPORT_PART_BYTES = 15 * 2**20  # a GPU machine hands back files of at most 16 MiB
# A 64-px step is bound by kernel launches on a GPU (an H200 ran ~10 steps/s whatever the batch up to 64):
# larger batches are nearly free there, so the candidates start at 64.
BATCH_CANDIDATES = (64, 128, 256)


def train_files(root: Path) -> list[Path]:
    """The `train` split of root/split.csv (all images when there is none), sorted by name."""
    files = sorted(p for p in (root / "images").rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    split_file = root / "split.csv"
    if split_file.exists():
        with open(split_file, newline="") as fh:
            train = {r["image_id"] for r in csv.DictReader(fh) if r["split"] == "train"}
        files = [p for p in files if p.name in train]
    return files


def read_pack(path: Path) -> torch.Tensor:
    """uint8 [N,3,res,res] from a pack written by pack_data.py (one encoded image per row)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["image"])
    images = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in table.column("image").to_pylist()]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def load_train_images(data: Path, res: int, cache: Path) -> torch.Tensor:
    """uint8 [N,3,res,res]: a celeba10k-style folder (cached in `cache`) or a pack file."""
    if data.suffix == ".parquet":
        images = read_pack(data)
        if images.shape[-1] != res:
            raise SystemExit(f"{data} holds {images.shape[-1]}-px images; this run trains at {res} px")
        return images
    if cache.exists():
        return torch.load(cache, weights_only=True)
    from facebatch.pipeline.images import load_image

    images = []
    files = train_files(data)
    for i, path in enumerate(files):
        x, _ = load_image(path, res)
        images.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
        if i % 2000 == 0:
            print(f"loaded {i}/{len(files)}", flush=True)
    images = torch.stack(images)
    torch.save(images, cache)
    return images


def diff_augment(x: torch.Tensor) -> torch.Tensor:
    """Colour (brightness, saturation, contrast) then translation by up to 1/8 with zero padding.

    Written out rather than taken from a library: it must be differentiable (G's gradient flows
    through it) and cheap on CPU, and torchvision's transforms are neither per-sample nor both.
    """
    b, _, res, _ = x.shape
    dev = x.device
    x = x + (torch.rand(b, 1, 1, 1, device=dev, dtype=x.dtype) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, device=dev, dtype=x.dtype) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, device=dev, dtype=x.dtype) + 0.5) + mean
    shift = res // 8
    tx = torch.randint(-shift, shift + 1, (b, 1, 1), device=dev)
    ty = torch.randint(-shift, shift + 1, (b, 1, 1), device=dev)
    gy, gx = torch.meshgrid(torch.arange(res, device=dev), torch.arange(res, device=dev), indexing="ij")
    gx = (gx.unsqueeze(0) + tx).clamp(-1, res)
    gy = (gy.unsqueeze(0) + ty).clamp(-1, res)
    padded = F.pad(x, [1, 1, 1, 1])
    index = ((gy + 1) * (res + 2) + (gx + 1)).flatten(1).unsqueeze(1).expand(-1, x.shape[1], -1)
    return padded.flatten(2).gather(2, index).view_as(x)


def save_grid(G: torch.nn.Module, z: torch.Tensor, path: Path, cols: int = 8) -> None:
    with torch.no_grad():
        img = G(z, None, noise_mode="const").clamp(-1, 1)
    img = ((img + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    n, h, w, _ = img.shape
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i in range(n):
        grid[(i // cols) * h : (i // cols + 1) * h, (i % cols) * w : (i % cols + 1) * w] = img[i]
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(grid).save(tmp)
    tmp.replace(path)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """auto: TF32 matrix units on CUDA (the convs' default there), exact fp32 on a CPU."""
    if name == "auto":
        return "tf32" if device.type == "cuda" else "fp32"
    return name


class Trainer:
    """G, D, G_ema and their optimisers, one training step at a time, on one device."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args, self.device = args, device
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
        self.G = Generator(**self.g_kwargs).to(device)
        self.D = Discriminator(**self.d_kwargs).to(device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        ratio = R1_EVERY / (R1_EVERY + 1)
        fused = device.type == "cuda"  # the same Adam maths in one kernel; the CPU keeps the reference loop
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=args.lr, betas=(0.0, 0.99), eps=1e-8, fused=fused)
        self.opt_d = torch.optim.Adam(
            self.D.parameters(), lr=args.lr * ratio, betas=(0.0, 0.99**ratio), eps=1e-8, fused=fused
        )
        self.nimg = 0
        self.step = 0
        self.set_batch(args.batch if isinstance(args.batch, int) else 32)

    def set_batch(self, batch: int) -> None:
        self.batch = batch
        self.ema_kimg = self.args.ema_kimg if self.args.ema_kimg is not None else batch * 10 / 32

    # -- state ------------------------------------------------------------------------------
    def state(self) -> dict:
        return dict(
            G=self.G.state_dict(),
            D=self.D.state_dict(),
            G_ema=self.G_ema.state_dict(),
            opt_g=self.opt_g.state_dict(),
            opt_d=self.opt_d.state_dict(),
            nimg=self.nimg,
            step=self.step,
        )

    def load(self, st: dict) -> None:
        self.G.load_state_dict(st["G"])
        self.D.load_state_dict(st["D"])
        self.G_ema.load_state_dict(st["G_ema"])
        self.opt_g.load_state_dict(st["opt_g"])
        self.opt_d.load_state_dict(st["opt_d"])
        self.nimg, self.step = st["nimg"], st["step"]

    def load_state(self, path: Path) -> None:
        # Our own training state (tensors, numbers, the args dict): not a checkpoint from elsewhere.
        self.load(torch.load(path, weights_only=False, map_location=self.device))

    def init_from_model(self, path: Path) -> None:
        raw = read_native(path)
        if raw.d_state is None:
            raise SystemExit(f"{path} holds no discriminator: it cannot seed training")
        self.G.load_state_dict(raw.g_state)
        self.G_ema.load_state_dict(raw.g_state)
        self.D.load_state_dict(raw.d_state)
        self.nimg = int(float(raw.extra.get("kimg", 0)) * 1000)
        self.step = self.nimg // self.batch

    def save(self, out: Path, grid_z: torch.Tensor) -> None:
        with torch.no_grad():
            z = torch.randn(10000, self.args.w_dim, generator=torch.Generator().manual_seed(0)).to(self.device)
            self.G_ema.mapping.w_avg.copy_(self.G_ema.mapping(z)[:, 0].mean(0))
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
        args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items()}
        state = {k: _to_cpu(v) for k, v in self.state().items()} | {"args": args | {"batch": self.batch}}
        tmp = out / "state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(out / "state.pt")
        save_grid(self.G_ema, grid_z.to(self.device), out / f"grid-{self.nimg // 1000:05d}.png")

    # -- one step ---------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.args.precision == "bf16")

    def _fakes(self, grad: bool) -> torch.Tensor:
        b, w_dim = self.batch, self.args.w_dim
        with torch.set_grad_enabled(grad), self._autocast():
            ws = self.G.mapping(torch.randn(b, w_dim, device=self.device))
            if torch.rand(()) < 0.9:  # style mixing
                cut = int(torch.randint(1, self.G.num_ws, ()))
                ws2 = self.G.mapping(torch.randn(b, w_dim, device=self.device))
                ws = torch.cat([ws[:, :cut], ws2[:, cut:]], dim=1)
            return self.G.synthesis(ws, noise_mode="random").float()

    def train_step(self, reals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One G step and one D step (R1 every 16th); the losses stay on the device (no sync)."""
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
            logits_r1 = D(diff_augment(reals)) if self.args.precision == "bf16" else logits_real
            (grad,) = torch.autograd.grad(logits_r1.sum(), reals, create_graph=True)
            loss_d = loss_d + grad.square().sum([1, 2, 3]).mean() * (self.args.gamma / 2) * R1_EVERY
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        self.nimg += self.batch
        self.step += 1
        ema_nimg = min(self.ema_kimg * 1000, self.nimg * 0.05)
        beta = 0.5 ** (self.batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            ema_params, params = list(self.G_ema.parameters()), list(G.parameters())
            torch._foreach_lerp_(ema_params, params, 1.0 - beta)  # = p.lerp(p_ema, beta), in one launch
            for b_ema, b in zip(self.G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)
        return loss_g.detach(), loss_d.detach()


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def sample_reals(data: torch.Tensor, batch: int) -> torch.Tensor:
    """A batch in [-1, 1], half of it x-flipped; drawn on `data`'s device with no host sync."""
    index = torch.randint(0, data.shape[0], (batch,), device=data.device)
    x = data[index].float() / 127.5 - 1
    flip = torch.rand(batch, 1, 1, 1, device=data.device) < 0.5
    return torch.where(flip, x.flip(-1), x)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def read_threads(path: Path, default: int = 1) -> int:
    try:
        return max(1, int(path.read_text()))
    except (OSError, ValueError):
        return default


def batch_arg(text: str) -> int | str:
    if text == "auto":
        return text
    value = int(text)
    if value < 2 or value % 2:
        raise argparse.ArgumentTypeError("--batch must be an even number >= 2 (or auto)")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data", type=Path, required=True, help="celeba10k folder (images/, split.csv) or a pack_data.py file"
    )
    ap.add_argument("--out", type=Path, required=True, help="run folder: state.pt, latest.safetensors, grids, log")
    ap.add_argument("--init-from", type=Path, help="a committed model to start from when OUT has no state.pt")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "tf32", "bf16"),
        help="auto = tf32 on CUDA, fp32 on CPU; bf16 autocasts the G and D forwards (R1 stays fp32)",
    )
    ap.add_argument("--bf16", action="store_true", help="same as --precision bf16")
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument(
        "--batch", type=batch_arg, default=32, help=f"images per step, or auto: the best of {BATCH_CANDIDATES} measured"
    )
    ap.add_argument("--gamma", type=float, default=None, help="R1 weight (default 0.0002 * res^2 / 32, as trained)")
    ap.add_argument("--ema-kimg", type=float, default=None, help="G_ema half-life (default batch * 10/32 kimg)")
    ap.add_argument("--channel-base", type=int, default=2048)
    ap.add_argument("--channel-max", type=int, default=128)
    ap.add_argument("--w-dim", type=int, default=256)
    ap.add_argument("--map-layers", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.0025)
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--minutes", type=float, default=None, help="train this long instead of --hours")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (tests, dry runs)")
    ap.add_argument("--snapshot-min", type=float, default=10.0)
    ap.add_argument("--export", type=Path, default=None, help="also copy each snapshot here, in parts of <= 15 MiB")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bench-steps", type=int, default=0, help="time N steps fp32 vs bf16 (interleaved), then exit")
    args = ap.parse_args(argv)
    if args.bf16:
        args.precision = "bf16"
    if args.gamma is None:
        args.gamma = 0.0002 * args.res**2 / 32
    return args


def bench(trainer: Trainer, data: torch.Tensor, steps: int) -> None:
    """Seconds per step, fp32 vs bf16 autocast, in interleaved rounds (machine load hits both alike)."""
    times = {"fp32": [], "bf16": []}
    for _ in range(3):
        for precision in times:
            trainer.args.precision = precision
            trainer.train_step(sample_reals(data, trainer.batch))  # warm-up
            synchronize(trainer.device)
            t0 = time.perf_counter()
            for _ in range(steps):
                trainer.train_step(sample_reals(data, trainer.batch))
            synchronize(trainer.device)
            times[precision].append((time.perf_counter() - t0) / steps)
    fp32, bf16 = min(times["fp32"]), min(times["bf16"])
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


def images_per_second(trainer: Trainer, data: torch.Tensor, batch: int, steps: int = 2 * R1_EVERY) -> float:
    """Training throughput at `batch` over `steps` steps (two R1 steps among them), after warm-up steps that
    take both paths once: the first call of each shape and of the R1 double backward tunes cuDNN, which
    must stay out of the timing (on the first H200 it made batch 32 read 113 images/s and batch 64 868)."""
    trainer.set_batch(batch)
    trainer.step = 0  # the first warm-up step takes the R1 path
    for _ in range(3):
        trainer.train_step(sample_reals(data, batch))
    synchronize(trainer.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(sample_reals(data, batch))
    synchronize(trainer.device)
    return batch * steps / (time.perf_counter() - t0)


def choose_batch(trainer: Trainer, data: torch.Tensor, candidates=BATCH_CANDIDATES) -> tuple[int, dict]:
    """The largest candidate whose images/s is at least 1.25x the next smaller one's (doubling still pays).

    Measured on throwaway steps: the state is restored afterwards, so the choice trains nothing.
    """
    saved = copy.deepcopy(trainer.state())
    rates = {}
    chosen = candidates[0]
    for b in candidates:
        rates[b] = images_per_second(trainer, data, b)
        print(f"batch {b}: {rates[b]:.0f} images/s", flush=True)
    for small, big in zip(candidates, candidates[1:]):
        if rates[big] < 1.25 * rates[small]:
            break
        chosen = big
    trainer.load(saved)
    return chosen, rates


def export_snapshot(out: Path, export: Path) -> None:
    """latest.safetensors, the newest grid and state.pt in parts of <= 15 MiB, each replaced atomically."""
    export.mkdir(parents=True, exist_ok=True)

    def put(name: str, data: bytes) -> None:
        tmp = export / f"{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, export / name)

    put("latest.safetensors", (out / "latest.safetensors").read_bytes())
    grids = sorted(out.glob("grid-*.png"))
    if grids:
        put("grid.png", grids[-1].read_bytes())
    state = (out / "state.pt").read_bytes()
    parts = [state[i : i + EXPORT_PART_BYTES] for i in range(0, len(state), EXPORT_PART_BYTES)]
    for k, part in enumerate(parts):
        put(f"state.pt.part{k}", part)
    put("state.pt.sha256", f"{hashlib.sha256(state).hexdigest()}  state.pt {len(parts)} parts\n".encode())


def join_state_parts(folder: Path, dest: Path) -> Path:
    """state.pt back from an --export folder's parts, checked against its sha256 line."""
    parts = sorted(folder.glob("state.pt.part*"), key=lambda p: int(p.name.removeprefix("state.pt.part")))
    data = b"".join(p.read_bytes() for p in parts)
    expected = (folder / "state.pt.sha256").read_text().split()[0]
    if hashlib.sha256(data).hexdigest() != expected:
        raise SystemExit(f"{folder}: the state.pt parts do not match state.pt.sha256 (incomplete export)")
    dest.write_bytes(data)
    return dest


def main(argv=None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    args.precision = resolve_precision(args.precision, device)
    args.out.mkdir(parents=True, exist_ok=True)
    threads_file = args.out / "threads"
    if not threads_file.exists():
        threads_file.write_text("1\n")
    torch.set_num_threads(read_threads(threads_file))
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        tf32 = args.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True

    t_start = time.time()
    data = load_train_images(args.data, args.res, args.out / f"data{args.res}.pt").to(device)
    print(f"data: {data.shape[0]} images of {args.res} px on {device}", flush=True)
    trainer = Trainer(args, device)
    if (args.out / "state.pt").exists():
        trainer.load_state(args.out / "state.pt")
        print(f"resumed from state.pt at {trainer.nimg / 1000:.1f} kimg", flush=True)
    elif args.init_from:
        trainer.init_from_model(args.init_from)
        print(f"initialised from {args.init_from} at {trainer.nimg / 1000:.1f} kimg (fresh optimisers)", flush=True)
    if args.bench_steps:
        bench(trainer, data, args.bench_steps)
        return
    if args.batch == "auto":
        if device.type == "cuda":
            batch, rates = choose_batch(trainer, data)
            print(f"batch auto: {batch} ({json.dumps({str(k): round(v) for k, v in rates.items()})} images/s)")
        else:
            batch = 32  # the CPU recipe: larger batches buy nothing per image there
        trainer.set_batch(batch)
    print(
        f"training: device {device}, precision {args.precision}, batch {trainer.batch}, gamma {args.gamma:g}, "
        f"G_ema half-life {trainer.ema_kimg:g} kimg",
        flush=True,
    )
    grid_z = torch.randn(32, args.w_dim, generator=torch.Generator().manual_seed(123))

    seconds = args.minutes * 60 if args.minutes is not None else args.hours * 3600
    t_end = t_start + seconds
    with open(args.out / "log.csv", "a", newline="") as log:
        writer = csv.writer(log)
        t_snap = time.time() + args.snapshot_min * 60
        t0, nimg0, steps = time.time(), trainer.nimg, 0
        while time.time() < t_end and (args.max_steps is None or steps < args.max_steps):
            loss_g, loss_d = trainer.train_step(sample_reals(data, trainer.batch))
            steps += 1
            if trainer.step % 50 == 0:
                loss_g, loss_d = loss_g.item(), loss_d.item()  # the only host sync: every 50 steps
                rate = (trainer.nimg - nimg0) / (time.time() - t0) * 3.6
                writer.writerow([trainer.step, trainer.nimg, f"{loss_g:.4f}", f"{loss_d:.4f}", f"{rate:.1f}"])
                log.flush()
                print(
                    f"step {trainer.step} kimg {trainer.nimg / 1000:.1f} G {loss_g:.3f} D {loss_d:.3f} "
                    f"{rate:.1f} kimg/h",
                    flush=True,
                )
                if not (math.isfinite(loss_g) and math.isfinite(loss_d)):
                    raise SystemExit(f"non-finite loss at step {trainer.step}: the last snapshot is kept")
                torch.set_num_threads(read_threads(threads_file))
            if time.time() > t_snap:
                trainer.save(args.out, grid_z)
                if args.export:
                    export_snapshot(args.out, args.export)
                print(f"snapshot at {trainer.nimg / 1000:.1f} kimg", flush=True)
                t_snap = time.time() + args.snapshot_min * 60
    trainer.save(args.out, grid_z)
    if args.export:
        export_snapshot(args.out, args.export)
    synchronize(device)
    rate = (trainer.nimg - nimg0) / max(time.time() - t0, 1e-9)
    print(f"snapshot at {trainer.nimg / 1000:.1f} kimg ({rate:.0f} images/s over this run)", flush=True)


if __name__ == "__main__":
    main()
