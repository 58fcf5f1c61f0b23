"""A seeded, short fuzz run at what facebatch reads from users: files and numbers.

Files: random bytes and mutated real files (bit flips, truncation, splices, duplicated runs, a code-running
pickle payload spliced in) go to the image reader/decoder, the checkpoint sniffer + readers + builder, the
labels reader and the Parquet latents reader. Every case must end in the one expected error type (an error
row for images, exit 2 for the rest), or succeed; no other exception, and the marker file a spliced payload
would create never appears. The unmutated files must be accepted: a reader that refused everything would fail.

Numbers: non-finite and overflowing floats (nan, inf, 1e308) in every float option of every command and in
the options parsed from text (strengths, alphas, --set), huge ranges and sizes (seeds, grid seeds, frames,
batches) and misspelled devices are one line and exit 2 before any work; usable values are accepted.

Special files: a FIFO, /dev/zero, a folder or an oversized file named where a small text file belongs
(--prompts, --preset) is one line without waiting on it, as is a YAML key given twice; a sound file passes.
"""

from __future__ import annotations

import io
import json
import math
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
from facebatch.pipeline.rundir import RunDir

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
    for n, data in enumerate(originals):
        path = tmp_path / f"original{n}.png"
        path.write_bytes(data)
        assert tuple(load_image(path, 16)[0].shape) == (3, 16, 16)
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
    from facebatch.nets.checkpoints import build_networks

    for n, data in enumerate(checkpoints[:3]):  # the plain pickle holds no networks: made to be mutated
        path = tmp_path / f"original{n}.ckpt"
        path.write_bytes(data)
        G, _ = build_networks(path, read_checkpoint(path)[1])
        assert G.img_resolution == G_KWARGS["img_resolution"]
    marker = tmp_path / "MARKER"
    payload = pickle.dumps(_Touch(marker), protocol=2)[2:-1]  # the payload's opcodes, spliced into files
    for n, data in enumerate(samples(rng, checkpoints, payload)):
        path = tmp_path / f"{n}.ckpt"
        path.write_bytes(data)
        try:
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
    for n, data in enumerate(originals):
        path = tmp_path / f"original{n}.csv"
        path.write_bytes(data)
        df = read_labels(path)
        assert len(df) >= 2 and all(parse_attribute(df, c) for c in df.columns[1:])
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
        part = RunDir(tmp_path / f"run{n}").part("part-00000")
        part.parent.mkdir(parents=True)
        part.write_bytes(rng.randbytes(300))
        for args in (
            ["score", str(part.parent.parent)],
            ["augment", "-l", str(part.parent.parent), "-o", str(tmp_path / "A"), "-a", "x"],
        ):
            res = runner.invoke(app, args)
            assert res.exit_code == 2 and res.output.count("\n") == 1 and str(part) in res.output, res.output


def test_latents_reader(tmp_path):
    """A damaged part is an InputError that names it (pyarrow's own messages name no file), or is read."""
    import shutil

    import numpy as np
    from conftest import write_latents

    from facebatch.pipeline.latents import read_index, read_latent_table

    rng = random.Random(SEED + 4)
    ids = [f"{i}.png" for i in range(20)]
    write_latents(tmp_path / "good", ids, np.random.default_rng(0).standard_normal((20, 2, 4)), parts=2)
    assert len(read_latent_table(tmp_path / "good").frame) == 20 and read_index(tmp_path / "good").ok.all()
    good = RunDir(tmp_path / "good")
    for n, data in enumerate(samples(rng, [good.part("part-00000").read_bytes()])):
        run = RunDir(tmp_path / f"run{n}")
        shutil.copytree(good.root, run.root)
        run.part("part-00000").write_bytes(data)
        for read in (read_latent_table, read_index):
            try:
                read(run.root)
            except InputError as exc:
                assert "\n" not in str(exc) and str(run.table_dir) in str(exc), exc


# -- numbers ------------------------------------------------------------------------------------------------

HOSTILE_FLOATS = ["nan", "inf", "-inf", "1e308", "-1e308", "1e999", "NaN", "+inf"]


def one_line(res) -> str:
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "Traceback" not in res.output, res.output
    return res.output


def test_every_float_is_finite_and_of_a_usable_size():
    from facebatch.ranges import MAX_MAGNITUDE, finite_number, parse_numbers

    rng = random.Random(SEED + 5)
    for _ in range(CASES * 10):
        text = rng.choice(
            [
                rng.choice(HOSTILE_FLOATS),
                repr(rng.uniform(-2 * MAX_MAGNITUDE, 2 * MAX_MAGNITUDE)),
                f"{rng.uniform(-10, 10):.3g}",
                f"{rng.choice('+-')}1e{rng.randint(-320, 320)}",
            ]
        )
        value = float(text)
        if math.isfinite(value) and abs(value) <= MAX_MAGNITUDE:
            assert finite_number(text, "--x") == value
        else:
            with pytest.raises(InputError, match=r"^--x .*: must be a finite number"):
                finite_number(text, "--x")
    assert parse_numbers("-3, -1.5,1.5,3", "--s") == [-3, -1.5, 1.5, 3]
    for bad in ("1,nan", "inf", "1,2,1e308", "1,x"):
        with pytest.raises(InputError, match="--s"):
            parse_numbers(bad, "--s")


def command_functions():
    """(command path, its function) for every command of the CLI, sub-groups included."""
    from facebatch.cli import app as cli_app

    def walk(typer_app, prefix):
        for info in typer_app.registered_commands:
            yield (*prefix, info.name or info.callback.__name__), info.callback.__wrapped__
        for group in typer_app.registered_groups:
            yield from walk(group.typer_instance, (*prefix, group.name))

    return list(walk(cli_app.app, ()))


def test_every_float_option_of_every_command_refuses_non_finite_values():
    """Through the one check all commands share, so an option added later is covered too."""
    from facebatch.cli.app import _checked_options, check_options

    floats = [
        (path, fn, name, flag)
        for path, fn in command_functions()
        for name, (flag, kind) in _checked_options(fn).items()
        if kind == "float"
    ]
    assert {("nada",), ("mix", "style"), ("sample",), ("encoder", "train")} <= {p for p, *_ in floats}
    for path, fn, name, flag in floats:
        check_options(fn, {name: 0.5})
        check_options(fn, {name: [0.5, 2.0]})
        for text in HOSTILE_FLOATS:
            with pytest.raises(InputError, match=f"^{flag} "):
                check_options(fn, {name: float(text)})


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory, checkpoints):
    path = tmp_path_factory.mktemp("g") / "g.safetensors"
    path.write_bytes(checkpoints[0])
    return path


@pytest.fixture
def hostile(tmp_path, tiny_generator):
    """Arguments for commands whose required inputs exist; OUT is never created by a refused command."""
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8)).save(images / "a.png")
    (tmp_path / "pairs.csv").write_text("a,b\nimages/a.png,images/a.png\n")
    (tmp_path / "labels.csv").write_text("image_id,smile\na.png,1\n")
    return {"G": str(tiny_generator), "IN": str(images), "OUT": str(tmp_path / "OUT"), "T": tmp_path}


NADA = ["nada", "-g", "{G}", "--source", "a", "--target", "b", "-o", "{OUT}/g.safetensors"]

# Each command and a float it reads; "{}" is where the number goes (options parsed from text included).
FLOAT_CASES = [
    ["sample", "-g", "{G}", "-o", "{OUT}", "--truncation", "{}"],
    ["label", "{IN}", "-o", "{OUT}/l.csv", "--threshold", "{}"],
    [*NADA, "--clip-weight", "{}"],
    [*NADA, "--mixing", "{}"],
    ["augment", "-l", "{IN}", "-o", "{OUT}", "--attr", "x", "--strengths", "-1,{}"],
    ["mix", "style", "{T}/pairs.csv", "-o", "{OUT}", "--style-weight", "{}"],
    ["mix", "expression", "{T}/pairs.csv", "-o", "{OUT}", "-g", "{G}", "--alpha", "0,{}"],
    ["project", "{IN}", "-g", "{G}", "-o", "{OUT}", "--set", "lr={}"],
    ["fit-boundaries", "{T}/labels.csv", "-l", "{IN}", "-o", "{OUT}/b.json", "-C", "{}"],
    ["score", "{IN}", "--target-fpr", "{}"],
    ["encoder", "train", "-g", "{G}", "-o", "{OUT}/e.safetensors", "--lr", "{}"],
]


@pytest.mark.parametrize(
    "args", FLOAT_CASES, ids=[f"{a[0]}{' ' + a[1] if a[0] in ('mix', 'encoder') else ''} {a[-2]}" for a in FLOAT_CASES]
)
def test_non_finite_numbers_are_one_line_before_any_work(hostile, args):
    option = args[-2] if args[-2] != "--set" else "lr"
    for text in ("nan", "inf", "-inf", "1e308"):
        argv = [a.format(text, **hostile) for a in args]
        output = one_line(CliRunner().invoke(app, argv))
        assert option in output and "finite number" in output, output
    assert not (hostile["T"] / "OUT").exists()


def test_usable_numbers_pass_the_checks(hostile):
    from facebatch.cli.augment import parse_strengths
    from facebatch.invert.presets import load_preset

    res = CliRunner().invoke(
        app, ["sample", "-g", hostile["G"], "-o", hostile["OUT"], "-n", "2", "--trunc", "0.7", "--dry-run"]
    )
    assert res.exit_code == 0 and "2 samples" in res.output, res.output
    assert parse_strengths("-3,-1.5", ["1.5", "3"]) == [-3, -1.5, 1.5, 3]
    assert load_preset("fast", {"lr": "0.05", "noise_regularize": "1e5"}).lr == 0.05


# Ranges and sizes: each refused at once, before a list or a tensor of that size exists, with its bound.
RANGE_CASES = [
    (["sample", "-g", "{G}", "-o", "{OUT}", "--seeds", "0-100000000000"], "--seeds", "4294967295"),
    (["sample", "-g", "{G}", "-o", "{OUT}", "--seeds", "0-4294967295"], "--seeds", "1,000,000"),
    (["sample", "-g", "{G}", "-o", "{OUT}", "-n", "100000000000"], "-n", "1,000,000"),
    (["sample", "-g", "{G}", "-o", "{OUT}", "--seed", "-1"], "--seed", "4294967295"),
    (["sample", "-g", "{G}", "-o", "{OUT}", "--seed", "4294967295", "-n", "2"], "--seed", "4294967295"),
    (
        [
            *NADA,
            "--grid-seeds",
            "0-100000000000",
        ],
        "--grid-seeds",
        "4294967295",
    ),
    (
        [*NADA, "--grid-seeds", "0-1000"],
        "--grid-seeds",
        "64",
    ),
    (
        [*NADA, "--grid-seeds", "x"],
        "--grid-seeds",
        "4294967295",
    ),
    (
        [*NADA, "--batch", "100000"],
        "--batch",
        "64",
    ),
    (
        [
            *NADA,
            "--auto-layer-batch",
            "100000",
        ],
        "--auto-layer-batch",
        "64",
    ),
    (
        [*NADA, "--seed", "4294967296"],
        "--seed",
        "4294967295",
    ),
    (["mix", "morph", "{T}/pairs.csv", "-o", "{OUT}", "-g", "{G}", "--frames", "200000"], "--frames", "256"),
    (["project", "{IN}", "-g", "{G}", "-o", "{OUT}", "--set", "w_avg_samples=1e12"], "w_avg_samples", "100,000"),
]


@pytest.mark.parametrize("args, option, bound", RANGE_CASES, ids=lambda a: a if isinstance(a, str) else a[0])
def test_huge_ranges_and_sizes_are_one_line_with_their_bound(hostile, args, option, bound):
    output = one_line(CliRunner().invoke(app, [a.format(**hostile) for a in args]))
    assert option in output and bound in output and "--seeds" not in output.replace(option, ""), output
    assert not (hostile["T"] / "OUT").exists()


def test_selections_are_counted_before_they_are_expanded():
    import time

    import torch

    from facebatch.domain_shift.api import parse_rows
    from facebatch.edit.layers import parse_layers
    from facebatch.nets.stylegan2 import Generator
    from facebatch.ranges import RangeTooLarge, parse_ranges

    rng = random.Random(SEED + 6)
    start = time.perf_counter()
    for _ in range(CASES * 5):
        pieces = [
            (lo, lo + rng.choice([0, 1, 10, 10**4, 10**7, 10**12]))
            for lo in (rng.randrange(10**6) for _ in range(rng.randint(1, 4)))
        ]
        text = ",".join(f"{lo}-{hi}" for lo, hi in pieces)
        count = sum(hi - lo + 1 for lo, hi in pieces)
        if count <= 10**6:
            assert len(parse_ranges(text)) == count
        else:
            with pytest.raises(RangeTooLarge, match="1,000,000"):
                parse_ranges(text)
    assert time.perf_counter() - start < 10  # no case expanded its range
    assert parse_ranges("0-3,7", largest=7) == [0, 1, 2, 3, 7]
    with pytest.raises(InputError, match="out of range: the latents have 18 layers"):
        parse_layers("0-100000000000", 18)
    with torch.device("meta"):
        G = Generator(**G_KWARGS)
    with pytest.raises(InputError, match="^--layers '0-100000000000': out of range"):
        parse_rows("0-100000000000", G)


# Devices: every command that takes --device checks its spelling before any work.
DEVICE_CASES = {
    ("project",): ["project", "{IN}", "-g", "{G}", "-o", "{OUT}"],
    ("invert",): ["invert", "{IN}/a.png", "-g", "{G}", "-o", "{OUT}"],
    ("sample",): ["sample", "-g", "{G}", "-o", "{OUT}"],
    ("label",): ["label", "{IN}", "-o", "{OUT}/l.csv"],
    ("augment",): ["augment", "-l", "{IN}", "-o", "{OUT}", "--attr", "x"],
    ("nada",): ["nada", "-g", "{G}", "--source", "a", "--target", "b", "-o", "{OUT}/g.safetensors"],
    ("encoder", "train"): ["encoder", "train", "-g", "{G}", "-o", "{OUT}/e.safetensors"],
    **{
        ("mix", a): ["mix", a, "{T}/pairs.csv", "-o", "{OUT}"]
        for a in ("morph", "crossover", "inpaint", "style", "expression")
    },
}


def test_every_command_with_a_device_refuses_a_misspelled_one_before_any_work(hostile):
    from facebatch.cli.app import _checked_options

    with_device = {p for p, fn in command_functions() if ("--device", "device") in _checked_options(fn).values()}
    assert with_device == set(DEVICE_CASES), "a command takes --device: add it here"
    for args in DEVICE_CASES.values():
        for device in ("gpu", "cuda:x", "CPU", "cuda:-1", ""):
            output = one_line(CliRunner().invoke(app, [*(a.format(**hostile) for a in args), "--device", device]))
            assert "--device" in output and "is not a device" in output, output
    assert not (hostile["T"] / "OUT").exists()
    res = CliRunner().invoke(app, ["sample", "-g", hostile["G"], "-o", hostile["OUT"], "--device", "cpu", "--dry-run"])
    assert res.exit_code == 0, res.output


def test_the_library_checks_devices_and_numbers_like_the_commands(hostile, tiny_generator):
    import numpy as np

    import facebatch as fb
    from facebatch.edit.boundary import Boundary
    from facebatch.nets.device import check_device

    for device in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert check_device(device) == device
    with pytest.raises(InputError, match="--device 'gpu'"):
        fb.project([hostile["IN"] + "/a.png"], str(tiny_generator), device="gpu")
    with pytest.raises(InputError, match="--device 'gpu'"):
        fb.mix("morph", hostile["T"] / "pairs.csv", hostile["OUT"], str(tiny_generator), device="gpu")
    with pytest.raises(InputError, match="--device 'gpu'"):
        fb.nada(str(tiny_generator), "a", "b", hostile["T"] / "g.safetensors", device="gpu")
    nada = {"clips": ["ViT-B-32:/nowhere"], "device": "cpu"}
    for settings, option in (
        ({"mixing": math.nan}, "--mixing"),
        ({"clip_weights": [math.inf]}, "--clip-weight"),
        ({"grid_seeds": [2**32]}, "--grid-seeds"),
        ({"grid_seeds": "0-100000000000"}, "--grid-seeds"),
        ({"batch": 10**5}, "--batch"),
        ({"seed": -1}, "--seed"),
    ):
        with pytest.raises(InputError, match=f"^{option} "):
            fb.nada(str(tiny_generator), "a", "b", hostile["T"] / "g.safetensors", **nada, **settings)
    with pytest.raises(InputError, match="--style-weight"):
        fb.mix("style", hostile["T"] / "pairs.csv", hostile["OUT"], str(tiny_generator), style_weight=math.nan)
    boundary = Boundary("d", "w", [0, 1], 2, np.array([1.0, 0, 0, 0]), 0.0, None)
    ws = np.zeros((2, 2, 4), np.float32)
    assert fb.edit_latents(ws, boundary, [1.0, -2.0])[1, 0, 0] == -2.0
    for strength in (math.nan, math.inf, 1e308, [1.0, math.nan]):
        with pytest.raises(InputError, match="strength"):
            fb.edit_latents(ws, boundary, strength)
    assert not (hostile["T"] / "OUT").exists() and not (hostile["T"] / "g.safetensors").exists()


# Special files: an option that names a small text file (label --prompts, project --preset) reads a regular file of
# bounded size only, without waiting on a FIFO; a key given twice is refused by name; a sound file is accepted.
TEXT_FILE_OPTIONS = {
    "label --prompts": (
        ["label", "{IN}", "-o", "{OUT}/l.csv", "--clip", "celeba-clip", "--prompts", "{}"],
        "Smiling: [a smiling person, a person]\nMale: [a man, a woman]\n",
        "Smiling: [a smiling person, a person]\nSmiling: [a man, a woman]\n",
    ),
    "project --preset": (
        ["project", "{IN}", "-g", "{G}", "-o", "{OUT}", "--preset", "{}"],
        "base: fast\nsteps: 2\n",
        "base: fast\nsteps: 2\nsteps: 3\n",
    ),
}


def _special_files(folder):
    os.mkfifo(folder / "fifo.yaml")
    with open(folder / "big.yaml", "wb") as fh:
        fh.truncate((1 << 20) + 1)  # sparse
    (folder / "folder.yaml").mkdir()
    return {
        folder / "fifo.yaml": "is a FIFO, not a regular file",
        "/dev/zero": "is a character device, not a regular file",
        folder / "folder.yaml": "is a folder, not a regular file",
        folder / "big.yaml": "larger than 1024 KiB",
    }


@pytest.mark.parametrize("option", sorted(TEXT_FILE_OPTIONS))
def test_text_file_options_refuse_special_files_and_repeated_keys_and_accept_a_sound_file(hostile, option):
    from test_pipeline_textfiles import deadline

    template, good, repeated = TEXT_FILE_OPTIONS[option]

    def run(path, code):
        args = [a.format(path) if a == "{}" else a.format(**hostile) for a in template]
        with deadline(120):
            res = CliRunner().invoke(app, [*args, "--dry-run"])
        assert res.exit_code == code, (option, path, res.output)
        return res

    for path, message in _special_files(hostile["T"]).items():
        line = one_line(run(path, 2))
        assert str(path) in line and message in line, (option, line)
    (hostile["T"] / "repeated.yaml").write_text(repeated)
    assert "is given twice" in one_line(run(hostile["T"] / "repeated.yaml", 2))
    assert not os.path.exists(hostile["OUT"])
    (hostile["T"] / "good.yaml").write_text(good)
    run(hostile["T"] / "good.yaml", 0)


def test_prompts_reader(tmp_path):
    """Fuzzed prompts files: read as prompts or refused in one InputError line, never another exception."""
    from facebatch.nets.predictors import read_prompts_file

    rng = random.Random(SEED)
    originals = [
        b"Smiling: [a smiling person, a person]\nMale: [a man, a woman]\n",
        b'{"Young": ["a young person", "an old person"], Bald: [a bald person, a person]}\n',
        b"base: &b [a, b]\nHat: *b\n",
    ]
    for n, data in enumerate(originals):
        (tmp_path / f"original{n}.yaml").write_bytes(data)
        assert read_prompts_file(tmp_path / f"original{n}.yaml")
    for n, data in enumerate(samples(rng, originals, extra=b"\nSmiling: [x, y]\n")):
        path = tmp_path / f"{n}.yaml"
        path.write_bytes(data)
        try:
            prompts = read_prompts_file(path)
        except InputError as exc:
            assert "\n" not in str(exc), str(exc)
            continue
        names = [p[0] for p in prompts]
        assert len(set(names)) == len(names) and all(n and n[0] not in "=+-@\t\r" for n in names)
