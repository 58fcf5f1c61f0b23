"""Issue 15: a seeded, short fuzz run at the three parsers of untrusted files.

Random bytes and mutated real files (bit flips, truncation, splices, duplicated runs, a code-running pickle
payload spliced in) go to the image reader/decoder, the checkpoint sniffer + readers + builder, and the labels
reader. Every case must end in the one expected error type (an error row for images, exit 2 for the rest), or
succeed; no other exception, and the marker file a spliced payload would create never appears.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.edit.labels import parse_attribute, read_labels
from facebatch.errors import CheckpointError, InputError
from facebatch.nets.checkpoints import read_checkpoint
from facebatch.nets.stylegan2 import Generator
from facebatch.pipeline.images import UnreadableImage, load_image

SEED = 15
CASES = 40  # per target; the whole module runs in well under a minute

G_KWARGS = dict(
    z_dim=4,
    c_dim=0,
    w_dim=4,
    img_resolution=4,
    img_channels=3,
    mapping_kwargs=dict(num_layers=1),
    synthesis_kwargs=dict(channel_base=16, channel_max=4),
)


class _Touch:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def mutate(rng: random.Random, data: bytes, extra: bytes = b"") -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(["flip", "truncate", "splice", "repeat", "insert", "header"])
        if not data:
            data = bytearray(rng.randbytes(16))
        i = rng.randrange(len(data))
        if op == "flip":
            data[i] ^= 1 << rng.randrange(8)
        elif op == "header":  # the parsers' decisions live in the first bytes
            j = rng.randrange(min(len(data), 64))
            data[j] = rng.randrange(256)
        elif op == "truncate":
            del data[i:]
        elif op == "splice":
            data[i : i + rng.randint(1, 32)] = rng.randbytes(rng.randint(0, 32))
        elif op == "repeat":
            data[i:i] = data[i : i + rng.randint(1, 64)] * rng.randint(2, 8)
        else:
            data[i:i] = extra or rng.randbytes(8)
    return bytes(data)


def samples(rng: random.Random, originals: list[bytes], extra: bytes = b""):
    for n in range(CASES):
        if n % 4 == 0:
            yield rng.randbytes(rng.choice([0, 1, 8, 100, 5000]))
        else:
            yield mutate(rng, rng.choice(originals), extra)


def test_image_decoder(tmp_path):
    rng = random.Random(SEED)
    originals = []
    for fmt in ("PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF"):
        buf = io.BytesIO()
        Image.new("RGB", (24, 16), (200, 30, 90)).save(buf, format=fmt)
        originals.append(buf.getvalue())
    for n, data in enumerate(samples(rng, originals)):
        path = tmp_path / f"{n}.png"
        path.write_bytes(data)
        try:
            tensor, _ = load_image(path, 16)
        except UnreadableImage:
            continue  # an error row
        assert tuple(tensor.shape) == (3, 16, 16)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    state = Generator(**G_KWARGS).state_dict()
    native = root / "g.safetensors"
    meta = {"format": "facebatch-stylegan2", "format_version": 1, "G_init_kwargs": G_KWARGS, "D_init_kwargs": None}
    save_file(
        {f"G.{k}": v.contiguous() for k, v in state.items()}, str(native), metadata={"facebatch": json.dumps(meta)}
    )
    export = root / "g.pt"
    torch.save({"G_init_kwargs": G_KWARGS, "G_ema_state_dict": state}, export)
    legacy = root / "g_legacy.pt"
    torch.save({"G_init_kwargs": G_KWARGS, "G_ema_state_dict": state}, legacy, _use_new_zipfile_serialization=False)
    plain = pickle.dumps({"G_ema": {"kwargs": G_KWARGS, "w": list(range(10))}}, protocol=2)
    return [native.read_bytes(), export.read_bytes(), legacy.read_bytes(), plain]


def test_checkpoint_sniffer_and_readers(tmp_path, checkpoints):
    rng = random.Random(SEED + 1)
    marker = tmp_path / "MARKER"
    payload = pickle.dumps(_Touch(marker), protocol=2)[2:-1]  # the payload's opcodes, spliced into files
    for n, data in enumerate(samples(rng, checkpoints, payload)):
        path = tmp_path / f"{n}.ckpt"
        path.write_bytes(data)
        try:
            from facebatch.nets.checkpoints import build_networks

            _, raw = read_checkpoint(path)
            build_networks(path, raw)
        except CheckpointError as exc:
            assert "\n" not in str(exc)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": _Touch(marker)}, protocol=2))
    with pytest.raises(CheckpointError):
        read_checkpoint(evil)
    assert not marker.exists()


def test_labels_reader(tmp_path):
    rng = random.Random(SEED + 2)
    good = "image_id,smile,age\n" + "".join(f"{i}.png,{i % 2},{i * 1.5}\n" for i in range(30))
    originals = [good.encode(), good.replace(",", "\t").encode(), b'image_id,"a,b"\n"x.png","1"\n"y.png","0"\n']
    for n, data in enumerate(samples(rng, originals)):
        path = tmp_path / f"{n}.csv"
        path.write_bytes(data)
        try:
            df = read_labels(path)
            for column in df.columns[1:]:
                parse_attribute(df, column)
        except InputError as exc:
            assert "\n" not in str(exc)


def test_cli_exit_codes_on_fuzzed_files(tmp_path, checkpoints):
    rng = random.Random(SEED + 3)
    runner = CliRunner()
    for n in range(4):
        ckpt = tmp_path / f"{n}.pt"
        ckpt.write_bytes(mutate(rng, checkpoints[n % len(checkpoints)])[:4000])
        res = runner.invoke(app, ["sample", "-g", str(ckpt), "-o", str(tmp_path / f"o{n}"), "-n", "1"])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        labels = tmp_path / f"{n}.csv"
        labels.write_bytes(rng.randbytes(200))
        res = runner.invoke(app, ["fit-boundaries", str(labels), "-l", str(tmp_path), "-o", str(tmp_path / "b.json")])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
