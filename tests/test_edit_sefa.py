"""SeFa: the right affine layers per W+ row, orthonormal directions equal to a brute-force eig."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.edit.boundaries_io import load_boundaries
from facebatch.edit.sefa import affine_layers, factorize, sefa_boundaries

pytestmark = pytest.mark.usefixtures("one_blas_thread")

runner = CliRunner()


def rows_read_by_each_affine(G) -> dict[str, int]:
    """Ask the generator itself: fill W+ row i with the value i and record what each affine receives."""
    seen, hooks = {}, []
    for name, module in G.named_modules():
        if name.startswith("synthesis.") and name.endswith(".affine"):
            hooks.append(
                module.register_forward_hook(
                    lambda m, inp, out, name=name: seen.__setitem__(name, int(round(inp[0][0, 0].item())))
                )
            )
    ws = torch.arange(G.num_ws, dtype=torch.float32)[None, :, None].repeat(1, 1, G.w_dim)
    with torch.no_grad():
        G.synthesis(ws, noise_mode="const")
    for h in hooks:
        h.remove()
    return {f"{name}.weight": row for name, row in seen.items()}


def test_affine_rows_match_what_the_generator_reads(nvlabs_G):
    layers, num_ws = affine_layers(nvlabs_G.state_dict())
    assert num_ws == nvlabs_G.num_ws
    assert {a.name: a.w_index for a in layers} == rows_read_by_each_affine(nvlabs_G)


def test_directions_are_orthonormal_and_match_brute_force_eig(nvlabs_G):
    reads = rows_read_by_each_affine(nvlabs_G)
    last = nvlabs_G.num_ws - 1
    # genforce/sefa "all": every conv layer, and the ToRGB only where it alone reads a row (the last one).
    chosen = [n for n, row in reads.items() if ".torgb." not in n or row == last]
    params = dict(nvlabs_G.named_parameters())
    A = np.concatenate([params[n].detach().double().numpy() for n in chosen])
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    values, vectors = np.linalg.eig(A.T @ A)  # what genforce/sefa calls
    order = np.argsort(values.real)[::-1]
    values, vectors = values.real[order], vectors.real[:, order].T

    got_values, directions, used, _ = factorize(nvlabs_G.state_dict())
    assert sorted(a.name for a in used) == sorted(chosen)
    np.testing.assert_allclose(got_values, values, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(directions @ directions.T, np.eye(len(directions)), atol=1e-10)
    top = np.abs(np.sum(directions[:10] * vectors[:10], axis=1))  # eigenvectors agree up to sign
    np.testing.assert_allclose(top, 1.0, atol=1e-8)


def test_layer_choice_and_torgb_switch(nvlabs_G):
    state = nvlabs_G.state_dict()
    _, _, used, _ = factorize(state, w_rows=[1])
    assert [a.name for a in used] == ["synthesis.b8.conv0.affine.weight"]  # b4's ToRGB shares row 1: left out
    _, _, used, _ = factorize(state, w_rows=[1], include_torgb=True)
    assert sorted(a.name for a in used) == ["synthesis.b4.torgb.affine.weight", "synthesis.b8.conv0.affine.weight"]
    bs = sefa_boundaries(state, k=3, w_rows=[2, 3, 4])
    assert [b.name for b in bs] == ["sefa_00", "sefa_01", "sefa_02"]
    assert all(b.layers == [2, 3, 4] and b.space == "w" and b.method == "sefa" for b in bs)
    assert bs[0].info["eigenvalue"] >= bs[1].info["eigenvalue"] >= bs[2].info["eigenvalue"]


def test_cli_writes_sefa_in_the_boundaries_format(tmp_path, fixture_generator_path):
    out = tmp_path / "sefa.json"
    res = runner.invoke(
        app, ["directions", "sefa", "-g", str(fixture_generator_path), "-k", "4", "--layers", "0-3", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    loaded = load_boundaries(out)
    assert list(loaded) == ["sefa_00", "sefa_01", "sefa_02", "sefa_03"]
    assert loaded["sefa_00"].layers == [0, 1, 2, 3] and len(loaded["sefa_00"].generator_sha256) == 64
    again = runner.invoke(app, ["directions", "sefa", "-g", str(fixture_generator_path), "--out", str(out)])
    assert again.exit_code == 2 and "--update" in again.output
    bad = runner.invoke(
        app, ["directions", "sefa", "-g", str(fixture_generator_path), "-k", "0", "--out", str(tmp_path / "x.json")]
    )
    assert bad.exit_code == 2 and "-k must be between 1 and 512" in bad.output
