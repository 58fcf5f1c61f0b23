"""The values a checkpoint rebuilds are untrusted data.

Root: `nets.arch_check` checks every architecture field (known name, type, bounds) and then the tensors'
shapes against a meta-device build before anything is allocated, and that every weight is finite; the
state-only unpickler bounds what its rebuilders allocate by what the file holds; `read_checkpoint` turns
any wrong type into a CheckpointError.
Each case is a small file; none may take long, allocate much, or end in anything but a CheckpointError.
"""

from __future__ import annotations

import collections
import json
import pickle
import time

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.errors import CheckpointError
from facebatch.nets.checkpoints import load_networks
from facebatch.nets.stylegan2 import Generator

G = dict(
    z_dim=8,
    c_dim=0,
    w_dim=8,
    img_resolution=8,
    img_channels=3,
    mapping_kwargs=dict(num_layers=2),
    synthesis_kwargs=dict(channel_base=32, channel_max=8),
)


@pytest.fixture(scope="module")
def g_state():
    torch.manual_seed(0)
    return Generator(**G).state_dict()


def _with(**changes):
    kwargs = json.loads(json.dumps(G))
    for key, value in changes.items():
        where = kwargs
        *path, last = key.split("__")
        for part in path:
            where = where[part]
        where[last] = value
    return kwargs


BAD_KWARGS = {
    "huge resolution": (_with(img_resolution=2**30), "img_resolution must be in"),
    "resolution not a power of two": (_with(img_resolution=48), "power of two"),
    "a million mapping layers": (_with(mapping_kwargs__num_layers=10**6), "num_layers must be in"),
    "terabyte w_dim": (_with(w_dim=2**20), "w_dim must be in"),
    "z_dim as text": (_with(z_dim="512"), "z_dim must be an integer"),
    "z_dim as float": (_with(z_dim=8.5), "z_dim must be an integer"),
    "lr multiplier zero": (_with(mapping_kwargs__lr_multiplier=0), "lr_multiplier"),
    "nan conv clamp": (_with(synthesis_kwargs__conv_clamp=float("nan")), "conv_clamp"),
    "unknown activation": (_with(mapping_kwargs__activation="rm -rf"), "activation must be one of"),
    "huge channel table": (_with(synthesis_kwargs__channels={"8": 10**7, "4": 8}), "channels"),
    "unknown setting": (_with(evil=1), "unknown architecture setting 'evil'"),
    "mapping kwargs a list": (_with(mapping_kwargs=[1, 2]), "mapping_kwargs is a list"),
    "conditional": (_with(c_dim=10), "c_dim must be in"),
    "config is a number": (7, "not a table of settings|malformed checkpoint"),
    "shapes disagree with the config": (_with(w_dim=16), "do not fit"),
}


@pytest.mark.parametrize("case", sorted(BAD_KWARGS))
def test_state_dict_export_with_a_bad_config_is_one_error(tmp_path, g_state, case):
    kwargs, message = BAD_KWARGS[case]
    path = tmp_path / "g.pt"
    torch.save({"G_init_kwargs": kwargs, "G_ema_state_dict": g_state}, path)
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=message):
        load_networks(path, with_d=False)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(
    "config",
    [
        {"format": "facebatch-stylegan2", "format_version": "x", "G_init_kwargs": G},
        ["not", "a", "dict"],
        {"format": "facebatch-stylegan2", "format_version": 1, "G_init_kwargs": _with(img_resolution=2**16)},
        {"format": "facebatch-stylegan2", "format_version": 1, "G_init_kwargs": G, "D_init_kwargs": "x"},
    ],
)
def test_safetensors_metadata_is_checked(tmp_path, g_state, config):
    path = tmp_path / "g.safetensors"
    tensors = {f"G.{k}": v.contiguous() for k, v in g_state.items()}
    tensors["D.x"] = torch.zeros(1)
    save_file(tensors, str(path), metadata={"facebatch": json.dumps(config)})
    with pytest.raises(CheckpointError):
        load_networks(path)


class _Call:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _tiny_storage():
    return torch.zeros(4).untyped_storage()


@pytest.mark.parametrize(
    "payload, message",
    [
        (_Call(bytearray, 10**12), "buffer it does not hold"),
        (
            _Call(
                torch._utils._rebuild_tensor_v2,
                torch.storage.TypedStorage(wrap_storage=_tiny_storage(), dtype=torch.float32, _internal=True),
                0,
                (10**6, 10**6),
                (10**6, 1),
                False,
                collections.OrderedDict(),
            ),
            "reaches past its data",
        ),
        (_Call(torch._utils._rebuild_tensor_v2, "storage", 0, (2,), (1,), False, {}), "reaches past its data"),
        (_Call(torch._utils._rebuild_tensor_v2, "storage", 0, "size", (1,), False, {}), "not a tuple"),
    ],
)
def test_unpickler_bounds_what_it_allocates(tmp_path, payload, message):
    path = tmp_path / "g.pkl"
    path.write_bytes(pickle.dumps({"G_ema": payload}, protocol=2))
    with pytest.raises(CheckpointError, match=message):
        load_networks(path)


def test_numpy_rebuilders_are_bounded(tmp_path):
    import numpy as np

    path = tmp_path / "g.pkl"
    from numpy._core.multiarray import _reconstruct

    path.write_bytes(pickle.dumps({"G_ema": _Call(_reconstruct, np.ndarray, (10**12,), b"b")}, protocol=2))
    with pytest.raises(CheckpointError, match="does not hold"):
        load_networks(path)
    path.write_bytes(pickle.dumps({"G_ema": _Call(np.ndarray, (10**6, 10**6))}, protocol=2))
    with pytest.raises(CheckpointError, match="does not hold"):
        load_networks(path)


def test_a_bad_config_through_the_cli_is_one_line_and_exit_2(tmp_path, g_state):
    path = tmp_path / "g.pt"
    torch.save({"G_init_kwargs": _with(img_resolution=2**30), "G_ema_state_dict": g_state}, path)
    res = CliRunner().invoke(app, ["sample", "-g", str(path), "-o", str(tmp_path / "o"), "-n", "1"])
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and "img_resolution" in res.output
    torch.save({"G_init_kwargs": 5, "G_ema_state_dict": [1]}, path)
    res = CliRunner().invoke(app, ["sample", "-g", str(path), "-o", str(tmp_path / "o"), "-n", "1"])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_wherever_a_generator_is_loaded(tmp_path, g_state, value):
    """A NaN weight would render NaN (black) images marked ok: every load refuses it, `models convert` too."""
    from facebatch.nets.native_format import write_native

    state = {k: v.clone() for k, v in g_state.items()}
    name = next(k for k in state if k.endswith("weight") and "synthesis" in k)
    state[name].view(-1)[3] = value
    paths = [tmp_path / "g.pt", tmp_path / "g.safetensors"]
    torch.save({"G_init_kwargs": G, "G_ema_state_dict": state}, paths[0])
    write_native(paths[1], G, state)
    for path in paths:
        with pytest.raises(CheckpointError, match=f"NaN or infinite values \\({name}\\)"):
            load_networks(path)
        res = CliRunner().invoke(app, ["models", "convert", str(path), str(tmp_path / "out.safetensors")])
        assert res.exit_code == 2 and res.output.count("\n") == 1 and name in res.output, res.output
        assert not (tmp_path / "out.safetensors").exists()
