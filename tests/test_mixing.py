"""Mixing maths with no optimisation: morphing, layer crossover, expression transfer, and region masks.

The projections (crossover, inpainting, style transfer) are in test_mixing_projections.py.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from facebatch.edit import mixing as mx
from facebatch.edit.masks import SHAPES, as_mask_batch, hole_mask, load_mask
from facebatch.errors import InputError
from facebatch.invert.presets import load_preset
from facebatch.invert.projector import Projector
from facebatch.nets.sampling import z_from_seeds

NUM_WS, W_DIM = 10, 16


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Other engineers' tests share two cores; one thread per test process keeps timings sane.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def codes(seed, batch=2, num_ws=NUM_WS):
    return torch.randn(batch, num_ws, W_DIM, generator=torch.Generator().manual_seed(seed))


# -- morph -------------------------------------------------------------------------------------------


def test_morph_endpoints_are_the_codes_and_the_middle_is_the_midpoint():
    w_a, w_b = codes(0), codes(1)
    noise_a = [torch.randn(2, 1, r, r) for r in (4, 8)]
    noise_b = [torch.randn(2, 1, r, r) for r in (4, 8)]
    frames, noise = mx.morph(w_a, w_b, [0.0, 0.5, 1.0], noise_a, noise_b)
    assert frames.shape == (2, 3, NUM_WS, W_DIM)
    assert torch.equal(frames[:, 0], w_a) and torch.equal(frames[:, 2], w_b)
    assert torch.allclose(frames[:, 1], (w_a + w_b) / 2, atol=1e-6)
    for n, a, b in zip(noise, noise_a, noise_b):  # the noise maps travel with the codes
        assert n.shape == (2, 3, *a.shape[1:])
        assert torch.equal(n[:, 0], a) and torch.equal(n[:, 2], b)
        assert torch.allclose(n[:, 1], (a + b) / 2, atol=1e-6)
    frames5, none = mx.morph(w_a, w_b, 5)
    assert none is None and torch.allclose(frames5[:, 1], 0.75 * w_a + 0.25 * w_b, atol=1e-6)
    with pytest.raises(InputError, match="both noise_a and noise_b"):
        mx.morph(w_a, w_b, 3, noise_a)
    with pytest.raises(InputError, match="same shape|both be"):
        mx.morph(w_a, codes(1, batch=3), 3)


def test_morph_renders_its_endpoints_as_the_projections(nvlabs_G):
    """Frames t=0 and t=1 of a morph between two projections (W+ and noise maps) are their reconstructions."""
    G = nvlabs_G
    with torch.no_grad():
        targets = G.synthesis(G.mapping(z_from_seeds([5, 6], G.z_dim)), noise_mode="const")
    cfg = load_preset(
        "image2stylegan++",
        {"steps": 3, "noise_steps": 2, "noise_lr": 0.1, "perceptual": "none", "mse_weight": 1.0, "w_avg_samples": 2000},
    )
    res = Projector(G, None, cfg).project(targets, [1, 2])
    frames, noise = mx.morph(
        res.ws[:1], res.ws[1:], [0.0, 0.5, 1.0], [n[:1] for n in res.noise], [n[1:] for n in res.noise]
    )
    images = mx.render(G, frames, noise)
    assert images.shape == (1, 3, 3, 64, 64)
    # Another batch shape than the projector's final render: float rounding only (measured 0 here).
    assert torch.allclose(images[0, 0], res.reconstructions[0], atol=1e-5)
    assert torch.allclose(images[0, 2], res.reconstructions[1], atol=1e-5)
    middle = images[0, 1]
    assert (middle - images[0, 0]).abs().mean() > 1e-2 and (middle - images[0, 2]).abs().mean() > 1e-2


# -- layer crossover and expression transfer ---------------------------------------------------------


def test_layer_crossover_takes_the_chosen_layers_from_a():
    w_a, w_b = codes(0), codes(1)
    out = mx.layer_crossover(w_a, w_b, 4)
    assert torch.equal(out[:, :4], w_a[:, :4]) and torch.equal(out[:, 4:], w_b[:, 4:])
    out = mx.layer_crossover(w_a, w_b, "1,6-7")
    take = [1, 6, 7]
    rest = [i for i in range(NUM_WS) if i not in take]
    assert torch.equal(out[:, take], w_a[:, take]) and torch.equal(out[:, rest], w_b[:, rest])
    with pytest.raises(InputError, match="out of range"):
        mx.layer_crossover(w_a, w_b, NUM_WS + 1)


def test_expression_transfer_changes_only_the_alpha_layers():
    w_app, w_expr = codes(0), codes(1)
    out = mx.expression_transfer(w_app, w_expr)  # default alpha: layers 3-4 from the expression code
    expr = list(mx.DEFAULT_ALPHA_LAYERS)
    rest = [i for i in range(NUM_WS) if i not in expr]
    assert torch.equal(out[:, expr], w_expr[:, expr]) and torch.equal(out[:, rest], w_app[:, rest])
    for spec, layers in (("3,4", [3, 4]), ("2-5", [2, 3, 4, 5]), ("7", [7])):
        out = mx.expression_transfer(w_app, w_expr, spec)
        changed = [i for i in range(NUM_WS) if not torch.equal(out[:, i], w_app[:, i])]
        assert changed == layers and torch.equal(out[:, layers], w_expr[:, layers])
    half = torch.full((NUM_WS,), 0.5)  # a soft alpha blends
    assert torch.allclose(mx.expression_transfer(w_app, w_expr, half), (w_app + w_expr) / 2, atol=1e-6)


def test_bad_alpha_is_a_user_error():
    w_app, w_expr = codes(0), codes(1)
    with pytest.raises(InputError, match="one value per layer: got 7 value"):
        mx.expression_transfer(w_app, w_expr, [0.0] * 7)
    with pytest.raises(InputError, match=r"in \[0, 1\]"):
        mx.expression_transfer(w_app, w_expr, [2.0] * NUM_WS)
    with pytest.raises(InputError, match="out of range"):
        mx.parse_alpha_layers("3,12", NUM_WS)
    with pytest.raises(InputError, match="bad layer selection"):
        mx.parse_alpha_layers("3:4", NUM_WS)
    assert mx.parse_alpha_layers("3-4", NUM_WS).tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0, 0]


def test_alpha_sweep_offers_single_layers_and_adjacent_pairs():
    labels, alphas = mx.alpha_sweep(NUM_WS)
    assert len(labels) == NUM_WS + NUM_WS - 1 and alphas.shape == (len(labels), NUM_WS)
    assert labels[0] == "0" and labels[NUM_WS] == "0-1" and labels[-1] == f"{NUM_WS - 2}-{NUM_WS - 1}"
    for label, alpha in zip(labels, alphas):
        assert torch.equal(alpha, mx.parse_alpha_layers(label, NUM_WS))
    w_app, w_expr = codes(0), codes(1)
    sweep = mx.expression_sweep(w_app, w_expr, alphas)
    assert sweep.shape == (2, len(labels), NUM_WS, W_DIM)
    assert torch.equal(sweep[:, 3], mx.expression_transfer(w_app, w_expr, "3"))


def test_expression_offset_adds_the_mean_neutral_to_expression_difference():
    w_target = codes(0, batch=3)
    w_expr, w_neutral = codes(1), codes(2)
    out = mx.expression_offset(w_target, w_expr[:1], w_neutral[:1])
    assert torch.allclose(out, w_target + (w_expr[:1] - w_neutral[:1]), atol=1e-6)
    out = mx.expression_offset(w_target, w_expr, w_neutral, strength=0.5)
    assert torch.allclose(out, w_target + 0.5 * (w_expr - w_neutral).mean(0, keepdim=True), atol=1e-6)


# -- masks -------------------------------------------------------------------------------------------

# The fraction of the image each built-in shape covers, from its box (edges round to whole pixels).
COVER = {"center": 0.25, "left": 0.5, "right": 0.5, "eyes": 0.22 * 0.6, "mouth": 0.2 * 0.4}


@pytest.mark.parametrize("resolution", [64, 256])
def test_built_in_shapes_cover_the_expected_fraction(resolution):
    for shape in SHAPES:
        mask = hole_mask(shape, resolution, batch=3, seeds=[0, 1, 2])
        assert mask.shape == (3, 1, resolution, resolution) and set(mask.unique().tolist()) <= {0.0, 1.0}
        cover = mask.mean(dim=(1, 2, 3))
        if shape == "random-box":  # sides in [1/4, 1/2] of the image: 1/16 to 1/4 of it
            assert ((cover > 1 / 16 - 0.01) & (cover < 1 / 4 + 0.01)).all(), cover
            assert len({tuple(m.nonzero().min(0).values.tolist()) for m in mask}) == 3  # one box per seed
        else:
            assert torch.allclose(cover, torch.tensor(COVER[shape]), atol=0.01), (shape, cover)
    assert torch.equal(
        hole_mask("left", resolution) + hole_mask("right", resolution), torch.ones(1, 1, resolution, resolution)
    )
    rows = torch.arange(resolution).float()
    eyes_y = (hole_mask("eyes", resolution)[0, 0].sum(1) * rows).sum() / hole_mask("eyes", resolution).sum()
    mouth_y = (hole_mask("mouth", resolution)[0, 0].sum(1) * rows).sum() / hole_mask("mouth", resolution).sum()
    assert eyes_y < mouth_y
    assert torch.equal(hole_mask("random-box", resolution, 1, [7]), hole_mask("random-box", resolution, 1, [7]))
    with pytest.raises(InputError, match="unknown mask shape"):
        hole_mask("nose", resolution)


def save(tmp_path, name, array, mode=None):
    path = tmp_path / name
    Image.fromarray(array, mode=mode).save(path)
    return path


def test_mask_of_another_aspect_ratio_is_refused_in_one_line(tmp_path):
    path = save(tmp_path, "wide.png", np.zeros((64, 80), np.uint8))
    with pytest.raises(InputError) as err:
        load_mask(path, 64)
    assert "aspect ratio" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="its image is 178x218"):
        load_mask(save(tmp_path, "square.png", np.zeros((100, 100), np.uint8)), 64, image_size=(178, 218))
    # A CelebA-shaped mask at half size is fine: centre square, nearest-neighbour to 64.
    tall = np.zeros((109, 89), np.uint8)
    tall[10:99, :45] = 255  # left half of the central square (rows 10-98)
    loaded = load_mask(save(tmp_path, "tall.png", tall), 64, image_size=(178, 218))
    assert loaded.resized and not loaded.thresholded and loaded.source_size == (89, 109)
    assert loaded.mask.shape == (1, 64, 64) and 0.45 < loaded.mask.mean() < 0.55


def test_mask_of_another_size_is_resized_nearest_neighbour(tmp_path):
    pattern = (np.random.RandomState(0).rand(32, 32) > 0.5).astype(np.uint8) * 255
    loaded = load_mask(save(tmp_path, "small.png", pattern), 64)
    expect = np.kron(pattern / 255.0, np.ones((2, 2)))  # each source pixel becomes a 2x2 block, no blending
    assert loaded.resized and not loaded.thresholded
    assert np.array_equal(loaded.mask[0].numpy(), expect.astype(np.float32))
    big = load_mask(save(tmp_path, "big.png", np.kron(pattern, np.ones((8, 8), np.uint8))), 64)  # 256 px
    assert set(big.mask.unique().tolist()) <= {0.0, 1.0} and not big.thresholded
    assert np.array_equal(big.mask[0].numpy(), expect.astype(np.float32))
    same = load_mask(save(tmp_path, "same.png", np.kron(pattern, np.ones((2, 2), np.uint8))), 64)
    assert not same.resized and torch.equal(same.mask, loaded.mask)


def test_non_binary_mask_is_thresholded_at_half_and_says_so(tmp_path):
    ramp = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))  # 0 .. 252 left to right
    loaded = load_mask(save(tmp_path, "ramp.png", ramp), 64)
    assert loaded.thresholded and set(loaded.mask.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(loaded.mask[0, 0], torch.from_numpy((ramp[0] / 255.0 >= 0.5).astype(np.float32)))
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, :20] = 255
    assert not load_mask(save(tmp_path, "rgb.png", rgb), 64).thresholded
    # Strokes painted on a transparent layer: the alpha channel is the mask, whatever the colour.
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[40:, :, 3] = 255
    from_alpha = load_mask(save(tmp_path, "alpha.png", rgba, mode="RGBA"), 64)
    assert from_alpha.mask[0, :40].sum() == 0 and from_alpha.mask[0, 40:].min() == 1
    with pytest.raises(InputError, match="cannot read mask"):
        load_mask(tmp_path / "absent.png", 64)


def test_masks_broadcast_over_a_batch_and_are_checked():
    m = hole_mask("center", 64)[0]
    assert as_mask_batch(m, 3, 64).shape == (3, 1, 64, 64)
    assert as_mask_batch(m[0], 3, 64).shape == (3, 1, 64, 64)
    with pytest.raises(InputError, match="mask must be"):
        as_mask_batch(torch.ones(2, 1, 64, 64), 3, 64)
    with pytest.raises(InputError, match="mask must be"):
        as_mask_batch(torch.ones(1, 1, 32, 32), 1, 64)
