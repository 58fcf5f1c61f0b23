"""Edits: a strength moves the signed distance by exactly that much; conditions are held fixed.

"Exactly" is float32 latents exactly: the step is computed in float64, the edited code is stored
as float32, so distances agree to ~1e-6 of the latents' magnitude; the tests allow 1e-4.
"""

import numpy as np
import pytest

from facebatch.edit.apply import edit_latents
from facebatch.edit.boundary import Boundary
from facebatch.edit.conditional import conditional_normal, edit_step, project_out
from facebatch.errors import InputError

pytestmark = pytest.mark.usefixtures("one_blas_thread")


NUM_WS, W_DIM = 8, 32


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def boundary(name, space, layers, seed):
    rng = np.random.default_rng(seed)
    if space == "w":
        normal, intercept = unit(rng.standard_normal(W_DIM)), rng.standard_normal()
    elif space == "wplus":
        normal, intercept = unit(rng.standard_normal((len(layers), W_DIM))), rng.standard_normal()
    else:
        normal = rng.standard_normal((len(layers), W_DIM))
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        intercept = rng.standard_normal(len(layers))
    return Boundary(name, space, layers, NUM_WS, normal, intercept)


@pytest.fixture
def ws():
    return (np.random.default_rng(9).standard_normal((5, NUM_WS, W_DIM)) * 2 + 1).astype(np.float32)


@pytest.mark.parametrize("space", ["w", "wplus", "layer"])
@pytest.mark.parametrize("edit_layers", [None, [0, 1, 2]])
@pytest.mark.parametrize("n_conditions", [0, 1, 2, 4])
def test_edit_moves_distance_by_exactly_the_strength(ws, space, edit_layers, n_conditions):
    layers = [0, 1, 2, 3, 5] if space != "w" else list(range(NUM_WS))
    b = boundary("a", space, layers, 1)
    conds = [boundary(f"c{i}", "w", list(range(NUM_WS)), 10 + i) for i in range(n_conditions)]
    for s in (-3.0, -1.5, 0.7, 3.0):
        edited = edit_latents(ws, b, s, conditions=conds, layers=edit_layers)
        np.testing.assert_allclose(b.distance(edited) - b.distance(ws), s, atol=1e-4)
        for c in conds:  # every condition's distance stays where it was
            np.testing.assert_allclose(c.distance(edited), c.distance(ws), atol=1e-4)
        if edit_layers is not None:  # rows outside --layers are untouched
            untouched = [i for i in range(NUM_WS) if i not in edit_layers]
            np.testing.assert_array_equal(edited[:, untouched], ws[:, untouched])


@pytest.mark.parametrize("space", ["w", "wplus", "layer"])
def test_absolute_mode_sets_the_distance(ws, space):
    b = boundary("a", space, [1, 2, 6], 2)
    for target in (-2.0, 0.0, 2.5):
        np.testing.assert_allclose(b.distance(edit_latents(ws, b, target, mode="absolute")), target, atol=1e-4)


@pytest.mark.parametrize("mode", ["relative", "absolute"])
def test_one_strength_per_row_equals_each_row_edited_alone(ws, mode):
    """augment edits a shard's rows of one attribute in one call, each at its own strength."""
    b = boundary("a", "wplus", [0, 2, 4], 3)
    strengths = np.array([-3.0, 1.5, 3.0, -1.5, 0.0])
    together = edit_latents(ws, b, strengths, mode=mode)
    alone = np.concatenate([edit_latents(ws[i : i + 1], b, float(s), mode=mode) for i, s in enumerate(strengths)])
    np.testing.assert_array_equal(together, alone)
    expected = strengths if mode == "absolute" else b.distance(ws) + strengths
    np.testing.assert_allclose(b.distance(together), expected, atol=1e-4)


def test_conditional_direction_is_orthogonal_to_every_condition():
    rng = np.random.default_rng(3)
    primal = unit(rng.standard_normal(512))
    conds = [unit(rng.standard_normal(512) + 0.5 * primal) for _ in range(6)]  # correlated with the primal
    for k in (1, 2, 3, 6):
        d = conditional_normal(primal, conds[:k])
        assert np.linalg.norm(d) == pytest.approx(1.0)
        assert max(abs(d @ c) for c in conds[:k]) < 1e-10
        assert d @ primal > 0


def test_one_and_many_conditions_match_interfacegan_formulas():
    rng = np.random.default_rng(4)
    n1, c1 = unit(rng.standard_normal(64)), unit(rng.standard_normal(64))
    # One condition: n - (n.c) c, normalised (InterFaceGAN project_boundary).
    np.testing.assert_allclose(conditional_normal(n1, [c1]), unit(n1 - (n1 @ c1) * c1), atol=1e-12)
    # More: solve (C C^T) x = C n and take n - x^T C (InterFaceGAN HEAD for > 2 conditions).
    C = np.stack([unit(rng.standard_normal(64)) for _ in range(5)])
    x = np.linalg.solve(C @ C.T, C @ n1)
    np.testing.assert_allclose(conditional_normal(n1, list(C)), unit(n1 - x @ C), atol=1e-10)
    # Repeated conditions (rank-deficient C) still work: least squares, not a singular solve.
    np.testing.assert_allclose(project_out(n1, np.stack([c1, c1])), n1 - (n1 @ c1) * c1, atol=1e-12)


def test_step_with_conditions_is_orthogonal_to_their_normals():
    b = boundary("a", "w", list(range(NUM_WS)), 5)
    conds = [boundary(f"c{i}", "w", list(range(NUM_WS)), 20 + i) for i in range(3)]
    step = edit_step(b, conds)
    for row in step:
        assert max(abs(row @ c.normal) for c in conds) < 1e-12
    # For a w boundary the per-layer step is InterFaceGAN's conditional direction, scaled.
    d = conditional_normal(b.normal, [c.normal for c in conds])
    np.testing.assert_allclose(unit(step[0]), d, atol=1e-12)


def test_primal_inside_the_conditions_is_refused():
    b = boundary("a", "w", list(range(NUM_WS)), 6)
    same = Boundary("same", "w", list(range(NUM_WS)), NUM_WS, b.normal, 0.0)
    with pytest.raises(InputError, match="span"):
        edit_step(b, [same])
    with pytest.raises(InputError, match="do not touch"):
        edit_step(boundary("p", "wplus", [0, 1], 7), layers=[5])
