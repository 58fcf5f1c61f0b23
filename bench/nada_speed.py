"""Seconds per StyleGAN-NADA iteration: adaptive layer selection + one training step, as `facebatch nada` runs it.

One iteration = the selection (8 W codes, 1 SGD step through the trainable G with the global CLIP
loss: forward + backward of 8 images) + the step (frozen and trainable renders of the batch, the
directional loss over both, backward, Adam). Without --clip it uses a tiny random open_clip model
(embed 32, ViT 2 layers at 32 px: the tests' CLIP), which measures the generator's share; pass a
real CLIP (`--clip celeba-clip`, `--clip ViT-B-32:openai`) for the full cost.

    python bench/nada_speed.py                          # celeba64, tiny CLIP, batch 2, CPU, 1 thread
    python bench/nada_speed.py --clip celeba-clip --iters 10
    python bench/nada_speed.py --random-arch ViT-B-32 --iters 5   # ViT-B/32's cost, random weights, no download
    python bench/nada_speed.py --device cuda --threads 0
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

TINY_CLIP = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=32, layers=2, width=64, patch_size=8, head_width=32),
    text_cfg=dict(context_length=32, vocab_size=49408, width=64, heads=2, layers=2),
)


def random_clip(folder: Path, arch: str | None) -> str:
    """A facebatch-clip file with random weights: the tiny config, or open_clip's config of `arch`
    (same FLOPs as the pretrained model, so the same time, with no download)."""
    import open_clip

    from facebatch.nets.clip import write_clip

    torch.manual_seed(0)
    cfg = TINY_CLIP if arch is None else open_clip.get_model_config(arch)
    path = folder / "random-clip.safetensors"
    write_clip(path, open_clip.CLIP(**cfg), cfg, extra={"templates": ["a photo of a {}.", "a {}."]})
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-g", "--generator", default="celeba64")
    ap.add_argument("--clip", default=None, help="CLIP spec (default: a tiny random open_clip model)")
    ap.add_argument("--random-arch", default=None, help="time a random-weight open_clip ARCH instead (e.g. ViT-B-32)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20, help="timed iterations (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from facebatch.domain_shift.loss import ClipLoss
    from facebatch.domain_shift.train import NadaSettings, NadaTrainer
    from facebatch.nets.checkpoints import load_networks
    from facebatch.nets.clip import load_clip
    from facebatch.nets.device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        spec = args.clip or random_clip(Path(tmp), args.random_arch)
        clip = load_clip(spec, device=dev)
    nets = load_networks(args.generator, with_d=False)
    loss = ClipLoss.build([clip], [1.0], "photo", "pencil sketch")
    trainer = NadaTrainer(nets.G, loss, NadaSettings("photo", "pencil sketch", batch=args.batch), device=dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    select, total = [], []
    for i in range(args.warmup + args.iters):
        sync()
        t0 = time.perf_counter()
        trainer.choose_rows()  # timed alone: the same work step() repeats (it redraws its own W codes)
        sync()
        t1 = time.perf_counter()
        trainer.step()
        sync()
        t2 = time.perf_counter()
        if i >= args.warmup:
            select.append(t1 - t0)
            total.append(t2 - t1)
    mean, sd = statistics.mean(total), statistics.stdev(total) if len(total) > 1 else 0.0
    clip_name = args.clip or (f"{args.random_arch} (random weights)" if args.random_arch else "tiny random")
    print(
        f"generator {nets.name} ({nets.G.img_resolution} px, {nets.G.num_ws} W+ rows), CLIP "
        f"{clip_name}, batch {args.batch}, device {dev}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"per NADA iteration: {mean:.3f} s (sd {sd:.3f}, n={len(total)}); of which layer selection "
        f"~{statistics.mean(select):.3f} s; 300 iterations ~ {300 * mean / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
