"""Read official NVlabs network pickles (stylegan2-ada-pytorch, stylegan3 repo) as data, never as code.

An official pickle stores each network module as `torch_utils.persistence._reconstruct_persistent_obj(meta)`
where `meta = {type, version, module_src, class_name, state}`: the official loader `exec`s `module_src`.
Here that name maps to a function that keeps only `class_name` and `state` (parameters, buffers,
submodules, `_init_kwargs`) and drops the source unread. Every other global the pickle names must
be on a short allow-list (tensor and numpy rebuilders, a few containers); anything else stops the
load with the name of the refused global, before it is called.
"""

from __future__ import annotations

import _codecs
import collections
import importlib
import io
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facebatch.errors import CheckpointError, first_line, weights_only_refusal

# The first object of a pre-1.6 (non-zip) torch.save file; such files go to torch.load(weights_only=True).
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class AttrDict(dict):
    """Stand-in for dnnlib.util.EasyDict: the data of a dict without dnnlib's code."""


@dataclass
class ModuleStub:
    """What is left of a pickled network module: its class name and stored state, no behaviour."""

    class_name: str
    state: dict


def _reconstruct_persistent_obj(meta: Any) -> ModuleStub:
    # meta["module_src"] is deliberately never looked at beyond this point.
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise CheckpointError("a persistent object in the pickle is not a stored network module")
    return ModuleStub(class_name=str(meta.get("class_name")), state=dict(meta["state"]))


def _load_storage(data: bytes):
    """torch.storage._load_from_bytes, but through torch's own weights-only unpickler."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _numpy_attr(name: str, *modules: str):
    """numpy moved `core` to `_core` in 2.0; pickles written under either name must resolve."""
    for mod in modules:
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(name)


# Allocation bounds: every rebuilder the pickle may call is checked against the bytes the file really
# holds, so a few hundred bytes cannot ask for terabytes (a tensor view larger than its storage makes
# torch grow the storage; numpy allocates whatever shape it is given).
MAX_DIRECT_ALLOC = 1 << 20  # bytes: bytearray(n) / ndarray(shape) built from a size, not from data


def _numel(shape: Any) -> int:
    if not isinstance(shape, (tuple, list, torch.Size)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise CheckpointError(f"a stored shape {shape!r} is not a tuple of non-negative integers")
    n = 1
    for d in shape:
        n *= d
    return n


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *args, **kwargs):
    numel = _numel(size)
    _numel(stride)
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise CheckpointError("a stored tensor has a negative or non-integer storage offset")
    if numel:
        extent = storage_offset + sum((d - 1) * st for d, st in zip(size, stride)) + 1
        with warnings.catch_warnings():  # TypedStorage.size() warns that TypedStorage is deprecated
            warnings.simplefilter("ignore")
            available = storage.size() if isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)) else 0
        if len(size) != len(stride) or extent > available:
            raise CheckpointError(
                f"a stored tensor of shape {list(size)} reaches past its data ({extent} > {available} elements)"
            )
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, *args, **kwargs)


def _bytearray(*args):
    if args and isinstance(args[0], int) and not isinstance(args[0], bool) and args[0] > MAX_DIRECT_ALLOC:
        raise CheckpointError(f"the pickle asks for a {args[0]}-byte buffer it does not hold")
    return bytearray(*args)


def _ndarray(shape, dtype=float, *args, **kwargs):
    if _numel(shape if isinstance(shape, (tuple, list)) else (shape,)) * np.dtype(dtype).itemsize > MAX_DIRECT_ALLOC:
        raise CheckpointError(f"the pickle asks for an array of shape {shape!r} it does not hold")
    return np.ndarray(shape, dtype, *args, **kwargs)


def _bounded_reconstruct(fn):
    def reconstruct(subtype, shape, dtype):
        if subtype is _ndarray:
            subtype = np.ndarray
        if _numel(shape if isinstance(shape, (tuple, list)) else (shape,)) > MAX_DIRECT_ALLOC:
            raise CheckpointError(f"the pickle asks for an array of shape {shape!r} it does not hold")
        return fn(subtype, shape, dtype)

    return reconstruct


def _allow_list() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): _ndarray,
        ("_codecs", "encode"): _codecs.encode,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): AttrDict,
        ("dnnlib", "EasyDict"): AttrDict,
    }
    for builtins_name in ("builtins", "__builtin__"):  # protocol-2 pickles say __builtin__
        allowed.update(
            {(builtins_name, n): obj for n, obj in (("set", set), ("frozenset", frozenset), ("bytearray", _bytearray))}
        )
    for sub, names in (("multiarray", ("scalar", "_reconstruct")), ("numeric", ("_frombuffer",))):
        for name in names:
            fn = _numpy_attr(name, f"numpy._core.{sub}", f"numpy.core.{sub}")
            fn = _bounded_reconstruct(fn) if name == "_reconstruct" else fn
            allowed[(f"numpy._core.{sub}", name)] = allowed[(f"numpy.core.{sub}", name)] = fn
    return allowed


_ALLOWED = _allow_list()


class StateOnlyUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only allow-listed globals; `find_class` is the only way code gets in."""

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith("dnnlib.tflib"):
            raise CheckpointError(
                "this is a TensorFlow-era StyleGAN pickle; convert it first with NVlabs "
                "stylegan2-ada-pytorch `legacy.py --source=OLD.pkl --dest=NEW.pkl`"
            )
        raise CheckpointError(
            f"refused to load: the pickle imports {module}.{name}, which is not on the allow-list "
            "of tensor/array rebuilders (checkpoints are data; nothing in the file was run)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError("refused to load: the pickle uses persistent ids (not an NVlabs network pickle)")


def load_pickle(path: Path) -> Any:
    """The first object of a pickle file, unpickled with the allow-list; any failure is one CheckpointError."""
    try:
        with open(path, "rb") as fh:
            return StateOnlyUnpickler(fh).load()
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - nothing foreign ran, so any error here means a bad file
        # a stored storage blob is itself a pickle, read by torch's weights-only loader: its refusal is said as ours
        why = weights_only_refusal(exc) or f"truncated or corrupt pickle ({first_line(exc)})"
        raise CheckpointError(f"{path}: {why}") from None


def plain(value: Any) -> Any:
    """EasyDicts, tuples and numpy scalars -> JSON-ready dicts, lists and Python numbers."""
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, int) else k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def class_names(stub: ModuleStub) -> set[str]:
    names = {stub.class_name}
    for child in (stub.state.get("_modules") or {}).values():
        if isinstance(child, ModuleStub):
            names |= class_names(child)
    return names


def flat_state_dict(stub: ModuleStub, prefix: str = "") -> dict[str, torch.Tensor]:
    """Walk stored `_parameters` / `_buffers` / `_modules` into the names `state_dict()` would give."""
    state = stub.state
    skip = set(state.get("_non_persistent_buffers_set") or ())
    out: dict[str, torch.Tensor] = {}
    entries = list((state.get("_parameters") or {}).items())
    entries += [(k, v) for k, v in (state.get("_buffers") or {}).items() if k not in skip]
    for name, tensor in entries:
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{prefix}{name} is a {type(tensor).__name__}, not a tensor")
        out[prefix + name] = tensor.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, ModuleStub):
            raise CheckpointError(f"submodule {prefix}{name} is a {type(child).__name__}, not a stored network module")
        out.update(flat_state_dict(child, f"{prefix}{name}."))
    return out


def init_kwargs(stub: ModuleStub) -> dict:
    if stub.state.get("_init_args"):
        raise CheckpointError(
            f"{stub.class_name} was built with positional arguments; only keyword init_kwargs are supported"
        )
    kwargs = stub.state.get("_init_kwargs")
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{stub.class_name} has no stored init_kwargs (not an NVlabs persistent network)")
    return plain(kwargs)


def networks_from_pickle(obj: Any) -> tuple[dict, dict, dict | None, dict | None]:
    """(G_kwargs, G_sd, D_kwargs | None, D_sd | None) from an unpickled snapshot; G is G_ema when present."""
    if isinstance(obj, ModuleStub):
        obj = {"G_ema": obj}
    if not isinstance(obj, dict):
        raise CheckpointError(f"the pickle holds a {type(obj).__name__}, not NVlabs networks (G, D, G_ema)")
    gen = obj.get("G_ema") if obj.get("G_ema") is not None else obj.get("G")
    if not isinstance(gen, ModuleStub):
        raise CheckpointError(f"the pickle has no generator (keys: {sorted(map(str, obj))}; expected G_ema or G)")
    if "SynthesisInput" in class_names(gen):
        raise CheckpointError("this is a StyleGAN3 (alias-free) generator; facebatch supports StyleGAN2 networks only")
    g_kwargs = init_kwargs(gen)
    if g_kwargs.get("c_dim", 0):
        raise CheckpointError(
            f"class-conditional generator (c_dim={g_kwargs['c_dim']}); only unconditional models are supported"
        )
    disc = obj.get("D")
    d_kwargs = d_sd = None
    if isinstance(disc, ModuleStub):
        d_kwargs, d_sd = init_kwargs(disc), flat_state_dict(disc)
    return g_kwargs, flat_state_dict(gen), d_kwargs, d_sd
