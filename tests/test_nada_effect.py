"""NADA's effect, not only its mechanics: the shipped face CLIP shifts the shipped demo generator, and the
attribute predictor (trained on photos, independent of CLIP) sees the attribute it was told, on the same latents.

The same measurement (80 iterations, seed 2, 128 samples at psi 0.7, celeba64 + celeba-clip) is made by
models/celeba64/measure.py for every model swapped in, into models/celeba64/metrics.json; the floors below are
60 % of the changes measured there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import celeba64_measured

from facebatch import load_generator
from facebatch.domain_shift.api import run_nada
from facebatch.nets import predictors

ITERS = 80
SAMPLES = 128


@pytest.fixture(autouse=True)
def _one_thread(restore_torch_threads):
    torch.set_num_threads(1)


@torch.no_grad()
def render(G) -> torch.Tensor:
    z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in range(SAMPLES)])).float()
    ws = G.mapping(z, None, truncation_psi=0.7)
    return torch.cat([G.synthesis(ws[i : i + 32], noise_mode="const") for i in range(0, SAMPLES, 32)]).clamp(-1, 1)


@pytest.fixture(scope="module")
def base():
    nets = load_generator("celeba64")
    predictor = predictors.load(predictors.resolve_predictor("celeba-attrs"))
    return nets, predictor, predictor.probs(render(nets.G)).numpy()


MARGIN = 0.6


@pytest.mark.parametrize(
    "target, attribute", [("a smiling person", "Smiling"), ("a person with eyeglasses", "Eyeglasses")]
)
def test_nada_moves_the_named_attribute_more_than_the_others(base, tmp_path, target, attribute):
    floor = MARGIN * celeba64_measured()["nada"][attribute]["change"]
    nets, predictor, before = base
    result = run_nada(
        nets, source="a person", target=target, out=tmp_path / "G.safetensors", clips=["celeba-clip"], iters=ITERS
    )
    assert (tmp_path / "G.safetensors").is_file()
    after = predictor.probs(render(result.G)).numpy()
    change = after.mean(0) - before.mean(0)
    i = list(predictor.names).index(attribute)
    others = np.abs(np.delete(change, i))
    assert change[i] > floor, (attribute, change[i])
    assert change[i] > 1.5 * others.mean(), (attribute, change[i], others.mean())
    # the same latents, so the probability rises image by image, not only on average
    assert (after[:, i] > before[:, i]).mean() > 0.8
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10]) - 0.1
