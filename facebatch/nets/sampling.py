"""Sampling the generator by seed, the NVlabs way: z = RandomState(seed).randn(z_dim).

Using the official recipe means seed 42 here is seed 42 in `gen_images.py`, so users can
cross-check images with the official tools.
"""

from __future__ import annotations

import numpy as np
import torch


def z_from_seeds(seeds, z_dim: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.random.RandomState(int(s)).randn(z_dim) for s in seeds])).float()


@torch.no_grad()
def sample(G, seeds, truncation_psi=1.0, truncation_cutoff=None, noise_mode="const", device="cpu", images=True):
    """(z [N,z_dim], ws [N,num_ws,w_dim], images [N,3,R,R] in about [-1,1]) for the given seeds.

    `images=False` runs the mapping network only (images is None): latents cost ~1/1000 of a render.
    """
    z = z_from_seeds(seeds, G.z_dim).to(device)
    ws = G.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
    img = G.synthesis(ws, noise_mode=noise_mode).cpu() if images else None
    return z.cpu(), ws.cpu(), img
