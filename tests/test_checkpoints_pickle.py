"""Official NVlabs pickles are read as data: tensors and init_kwargs come back, embedded code never runs.

The fake official pickle is written the way torch_utils.persistence writes one: every network
module becomes `_reconstruct_persistent_obj(meta)` with the module source in `meta["module_src"]`;
here that source would create a marker file if anything exec'd it.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from facebatch.cli.app import main
from facebatch.errors import CheckpointError
from facebatch.nets.checkpoints import load_networks
from facebatch.nets.stylegan2 import Discriminator, Generator

G_KWARGS = dict(
    z_dim=32,
    c_dim=0,
    w_dim=32,
    img_resolution=16,
    img_channels=3,
    mapping_kwargs=dict(num_layers=2),
    synthesis_kwargs=dict(channel_base=256, channel_max=32, num_fp16_res=0, conv_clamp=256),
)
D_KWARGS = dict(
    c_dim=0,
    img_resolution=16,
    img_channels=3,
    architecture="resnet",
    channel_base=256,
    channel_max=32,
    conv_clamp=256,
    epilogue_kwargs=dict(mbstd_group_size=4),
)
FAKE_MODULES = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    G, D = Generator(**G_KWARGS), Discriminator(**D_KWARGS)
    with torch.no_grad():  # non-zero noise strengths and w_avg, as after training
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1 + torch.rand(()).item())
        G.mapping.w_avg.normal_()
    return G.eval(), D.eval()


@contextlib.contextmanager
def fake_nvlabs_modules():
    """Register stand-ins for torch_utils.persistence / dnnlib.util only while a pickle is written."""
    persistence = types.ModuleType("torch_utils.persistence")
    util = types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):  # the name the official loader exposes; never called here
        raise AssertionError("the test's fake loader must not run")

    class EasyDict(dict):
        pass

    for obj, module in ((_reconstruct_persistent_obj, persistence), (EasyDict, util)):
        obj.__module__, obj.__qualname__ = module.__name__, obj.__name__  # pickled by reference, as upstream
    persistence._reconstruct_persistent_obj, util.EasyDict = _reconstruct_persistent_obj, EasyDict
    top_tu, top_dn = types.ModuleType("torch_utils"), types.ModuleType("dnnlib")
    top_tu.persistence, top_dn.util = persistence, util
    saved = {k: sys.modules.get(k) for k in FAKE_MODULES}
    sys.modules.update(dict(zip(FAKE_MODULES, (top_tu, persistence, top_dn, util))))
    try:
        yield _reconstruct_persistent_obj, EasyDict
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def write_official_pickle(path, snapshot: dict, kwargs: dict, marker, protocol=4, class_names=None):
    """Pickle `snapshot` as torch_utils.persistence would: each nn.Module -> _reconstruct_persistent_obj(meta)."""
    source = f"import os\nopen({str(marker)!r}, 'w').write('exec ran')\nos.system('touch {marker}.system')\n"
    with fake_nvlabs_modules() as (reconstruct, EasyDict):

        class Pickler(pickle.Pickler):
            def reducer_override(self, obj):
                if not isinstance(obj, nn.Module):
                    return NotImplemented
                state = dict(obj.__dict__)
                state["_init_args"] = ()
                state["_init_kwargs"] = EasyDict(kwargs.get(id(obj), {}))
                state["weight_gain_np"] = np.float64(0.125)  # numpy scalars appear in real pickles
                name = (class_names or {}).get(id(obj), type(obj).__name__)
                meta = dict(type="class", version=6, module_src=source, class_name=name, state=state)
                return reconstruct, (meta,)

        buf = io.BytesIO()
        Pickler(buf, protocol=protocol).dump({**snapshot, "training_set_kwargs": EasyDict(path="~/ffhq.zip")})
    path.write_bytes(buf.getvalue())
    return path


def official_pickle(tmp_path, G, D, **kw):
    snapshot = dict(G=G, D=D, G_ema=G, augment_pipe=None) if D is not None else dict(G_ema=G)
    kwargs = {id(G): G_KWARGS, id(D): D_KWARGS}
    return write_official_pickle(tmp_path / "network-snapshot.pkl", snapshot, kwargs, tmp_path / "MARKER", **kw)


def run_cli(args, capsys) -> tuple[int, str, str]:
    """Run the real entry point in-process (its error handling included); return (exit code, stdout, stderr)."""
    argv, sys.argv = sys.argv, ["facebatch", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_official_pickle_round_trips_without_running_its_code(tmp_path, nets, protocol):
    G, D = nets
    path = official_pickle(tmp_path, G, D, protocol=protocol)
    for name in FAKE_MODULES:
        assert name not in sys.modules

    loaded = load_networks(path)

    assert not (tmp_path / "MARKER").exists() and not (tmp_path / "MARKER.system").exists()
    assert not any(name in sys.modules for name in FAKE_MODULES)
    assert loaded.format == "nvlabs-pickle"
    assert loaded.g_kwargs == G_KWARGS and loaded.d_kwargs == D_KWARGS
    for ours, theirs in ((loaded.G, G), (loaded.D, D)):
        want, got = theirs.state_dict(), ours.state_dict()
        assert set(got) == set(want)
        assert all(torch.equal(got[k], want[k]) for k in want), "tensors must round-trip bit-exactly"
    assert not any(p.requires_grad for p in loaded.G.parameters()) and not loaded.G.training
    z = torch.randn(2, G.z_dim)
    assert torch.equal(loaded.G(z, noise_mode="const"), G(z, noise_mode="const"))


def test_pickle_without_discriminator_says_so_when_one_is_needed(tmp_path, nets):
    path = official_pickle(tmp_path, nets[0], None)
    loaded = load_networks(path)
    assert loaded.D is None
    with pytest.raises(
        CheckpointError, match=r"anomaly scoring needs a discriminator; .*network-snapshot.pkl has none"
    ):
        loaded.require_d("anomaly scoring")


class _SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _EvalCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w')",)


class _PlainModule(nn.Module):
    """A module pickled the ordinary way (copyreg + its class): code the allow-list must not import."""


@pytest.mark.parametrize(
    "payload, refused",
    [
        (_SystemCall, r"(posix|os|nt)\.system"),
        (_EvalCall, r"(__builtin__|builtins)\.eval"),
        (lambda marker: _PlainModule(), r"copyreg\._reconstructor|test_checkpoints_pickle\._PlainModule"),
    ],
)
def test_pickle_importing_anything_else_is_refused_and_nothing_runs(tmp_path, payload, refused):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": payload(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match=rf"refused to load: the pickle imports ({refused})"):
        load_networks(path)
    assert not marker.exists()


def _torch_saved(obj, *, zip_file: bool = True) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=zip_file)
    return buf.getvalue()


class _Call:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize(
    "container",
    ["torch.save zip", "torch.save legacy", "storage blob in an NVlabs pickle", "zip in an NVlabs pickle"],
)
def test_a_file_that_would_run_code_is_refused_in_one_line_without_torchs_advice(tmp_path, capsys, container):
    """torch's weights-only loader reads the torch.save files and the storage blobs an NVlabs pickle carries;
    its refusal opens with advice to load the file with weights_only=False, which would run the payload.
    Whatever carries the payload, the message says the file would run code, and never gives that advice."""
    from torch.storage import _load_from_bytes

    marker = tmp_path / "MARKER"
    payload = {"g_ema": _SystemCall(marker)}
    data = {
        "torch.save zip": lambda: _torch_saved(payload),
        "torch.save legacy": lambda: _torch_saved(payload, zip_file=False),
        "storage blob in an NVlabs pickle": lambda: pickle.dumps(
            {"G_ema": _Call(_load_from_bytes, _torch_saved(_SystemCall(marker), zip_file=False))}, protocol=2
        ),
        "zip in an NVlabs pickle": lambda: pickle.dumps(
            {"G_ema": _Call(_load_from_bytes, _torch_saved(_SystemCall(marker)))}, protocol=2
        ),
    }[container]()
    path = tmp_path / "evil.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        load_networks(path)
    message = str(info.value)
    assert "would run code" in message and "\n" not in message, message
    assert "weights_only" not in message and "Re-running" not in message, message
    code, _, err = run_cli(["models", "convert", path, tmp_path / "out.safetensors"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "would run code" in err, err
    assert not marker.exists()


def test_cli_refuses_an_os_system_pickle_with_one_line_and_exit_2(tmp_path):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "ffhq.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": _SystemCall(marker)}))
    dst = tmp_path / "out.safetensors"
    proc = subprocess.run(
        [sys.executable, "-m", "facebatch", "models", "convert", str(evil), str(dst)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "system" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not marker.exists() and not dst.exists()


def _corrupt_files(tmp_path, nets):
    good = official_pickle(tmp_path, *nets).read_bytes()
    rng = np.random.default_rng(0)
    return {
        "truncated.pkl": good[: len(good) // 2],
        "random.bin": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "empty.pkl": b"",
        "text.pt": b"this is not a checkpoint\n",
    }


def test_truncated_random_and_empty_files_exit_2_with_one_line(tmp_path, nets, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    for name, data in _corrupt_files(tmp_path, nets).items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError):
            load_networks(path)
        code, _, err = run_cli(["models", "convert", path, tmp_path / f"{name}.safetensors"], capsys)
        assert code == 2, (name, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("error:") and str(path) in err, (name, err)
        assert not (tmp_path / f"{name}.safetensors").exists()


def test_tensorflow_era_pickle_points_to_the_official_converter(tmp_path):
    # protocol 2 by hand: GLOBAL dnnlib.tflib.network.Network, EMPTY_TUPLE, NEWOBJ, STOP
    (tmp_path / "old.pkl").write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\n)\x81.")
    with pytest.raises(CheckpointError, match=r"TensorFlow-era.*legacy\.py"):
        load_networks(tmp_path / "old.pkl")


def test_conditional_and_stylegan3_pickles_are_rejected_clearly(tmp_path, nets):
    G, _ = nets
    cond = write_official_pickle(
        tmp_path / "cond.pkl", dict(G_ema=G), {id(G): {**G_KWARGS, "c_dim": 10}}, tmp_path / "M"
    )
    with pytest.raises(CheckpointError, match=r"class-conditional generator \(c_dim=10\)"):
        load_networks(cond)
    sg3 = write_official_pickle(
        tmp_path / "sg3.pkl",
        dict(G_ema=G),
        {id(G): G_KWARGS},
        tmp_path / "M",
        class_names={id(G.synthesis.b4): "SynthesisInput"},
    )
    with pytest.raises(CheckpointError, match="StyleGAN3"):
        load_networks(sg3)
    assert not (tmp_path / "M").exists()


def test_convert_pickle_to_native_gives_the_same_generator(tmp_path, nets, capsys):
    G, D = nets
    src = official_pickle(tmp_path, G, D)
    dst = tmp_path / "ffhq.safetensors"
    code, _, err = run_cli(["models", "convert", src, dst], capsys)
    assert code == 0, err
    native = load_networks(dst)
    assert native.format == "facebatch-safetensors" and native.D is not None
    z = torch.randn(3, G.z_dim)
    assert torch.equal(native.G(z, noise_mode="const"), G(z, noise_mode="const"))

    assert run_cli(["models", "convert", src, dst], capsys)[0] == 2  # exists, no --overwrite
    assert run_cli(["models", "convert", src, tmp_path / "x.pt"], capsys)[0] == 2
    code, _, err = run_cli(["models", "convert", "--no-d", "--overwrite", src, dst], capsys)
    assert code == 0, err
    assert load_networks(dst).D is None
