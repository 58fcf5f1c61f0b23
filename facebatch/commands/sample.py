"""`sample`: images and their latents from seeds, the start of label-free boundary fitting."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from facebatch import ranges
from facebatch.errors import InputError
from facebatch.pipeline import storage
from facebatch.pipeline.run_options import BatchResult, RunOptions, run_batch

# One run's seeds are planned in this process, about 340 bytes each (1,000,000: ~340 MB); more go in several runs.
MAX_SAMPLES = ranges.MAX_SELECTED


@dataclass(frozen=True)
class SampleOptions:
    seeds: Sequence[int] | str | None = None  # explicit seeds ("0-99,123" or a list); None: n from `seed`
    n: int = 16  # how many samples when `seeds` is None: seed .. seed + n - 1
    seed: int = 0
    truncation: float = 1.0  # truncation psi (1 = none)
    truncation_cutoff: int | None = None  # truncate only the first K layers
    noise_mode: str = "const"  # const | random | none
    images: bool = True  # write PNGs (off for latent-only runs of 100k+)
    batch_size: int = 16  # images rendered together
    part_size: int = 10000  # rows per Parquet part (= per shard; the unit of resume)

    def seed_list(self) -> list[int]:
        """`seeds` wins; otherwise n consecutive seeds from `seed`. Bounded before the list is made."""
        if isinstance(self.seeds, str):
            return ranges.parse_seeds(self.seeds, "--seeds", most=MAX_SAMPLES)
        if self.seeds is not None:
            seeds = list(self.seeds)
            if not 1 <= len(seeds) <= MAX_SAMPLES:
                raise InputError(f"--seeds: from 1 to {MAX_SAMPLES:,} seeds in one run, got {len(seeds):,}")
            ranges.check_seeds(seeds, "--seeds")
            return [int(s) for s in seeds]
        if not 1 <= self.n <= MAX_SAMPLES:
            raise InputError(f"-n {self.n}: from 1 to {MAX_SAMPLES:,} samples in one run")
        ranges.check_seeds([self.seed], "--seed")
        if self.seed + self.n - 1 > ranges.MAX_SEED:
            raise InputError(
                f"--seed {self.seed} -n {self.n} reaches seed {self.seed + self.n - 1}; seeds end at {ranges.MAX_SEED}"
            )
        return list(range(self.seed, self.seed + self.n))


@dataclass
class SampleResult(BatchResult):
    nets: object  # Networks


def sample(
    generator: str | Path,
    out: str | Path,
    options: SampleOptions = SampleOptions(),
    run: RunOptions = RunOptions(),
    console=None,
) -> SampleResult:
    """Sample `generator` by seed: PNGs in OUT/images, latents (z, W+) in OUT/latents/part-*.parquet.

    Seeds follow the official recipe (z = RandomState(seed).randn(z_dim)), so images match NVlabs
    gen_images.py for the same seed, truncation and noise mode. Reruns skip finished parts."""
    from facebatch.nets.checkpoints import load_networks
    from facebatch.stages.sample import build_sample_spec

    o = options
    seeds = o.seed_list()
    run.configure_storage()
    run.cluster()
    nets = load_networks(generator, device="cpu", with_d=False)  # here only for its sha256 and shapes
    spec = build_sample_spec(
        seeds=seeds,
        out_dir=storage.location(out),
        nets=nets,
        truncation_psi=o.truncation,
        truncation_cutoff=o.truncation_cutoff,
        noise_mode=o.noise_mode,
        images=o.images,
        shard_size=o.part_size,
        batch_size=o.batch_size,
    )
    return SampleResult(run_batch(spec, run.with_(retry_errors=False), console), spec, nets)
