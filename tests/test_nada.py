"""StyleGAN-NADA mechanics on a tiny random generator and a tiny random open_clip model (no trained weights).

What frozen means, which layers a step may change, that the directional loss falls, that a resumed
run equals an uninterrupted one bit for bit, that the output file carries its settings and loads
like any generator, and that user errors are one line with exit 2.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.domain_shift.layers import candidate_rows, row_layers
from facebatch.domain_shift.loss import ClipLoss
from facebatch.domain_shift.train import NadaSettings, NadaTrainer, latest_snapshot, read_nada_metadata, train_nada
from facebatch.errors import InputError
from facebatch.nets.cache import sha256_of
from facebatch.nets.checkpoints import load_networks
from facebatch.nets.native_format import write_native
from facebatch.nets.stylegan2 import Generator

runner = CliRunner()

# 16 px: W+ rows 0 (b4.conv1), 1-2 (b8), 3-4 (b16), 5 (read only by the last ToRGB).
G_KWARGS = dict(
    z_dim=16,
    c_dim=0,
    w_dim=16,
    img_resolution=16,
    img_channels=3,
    mapping_kwargs=dict(num_layers=2),
    synthesis_kwargs=dict(channel_base=256, channel_max=32),
)
CLIP_CFG = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=32, layers=2, width=64, patch_size=8, head_width=32),
    text_cfg=dict(context_length=32, vocab_size=49408, width=64, heads=2, layers=2),
)
TEMPLATES = ["a photo of a {}.", "a rendering of a {}.", "a {}."]
SOURCE, TARGET = "photo", "pencil sketch"


@pytest.fixture(scope="module")
def files(tmp_path_factory, one_torch_thread):
    """A tiny generator file (noise strengths non-zero) and a tiny facebatch-clip file."""
    import open_clip

    from facebatch.nets.clip import write_clip

    tmp = tmp_path_factory.mktemp("nada")
    torch.manual_seed(0)
    G = Generator(**G_KWARGS)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
    g_path = write_native(tmp / "G.safetensors", G_KWARGS, G.state_dict())
    clip_path = tmp / "tiny-clip.safetensors"
    write_clip(clip_path, open_clip.CLIP(**CLIP_CFG), CLIP_CFG, extra={"templates": TEMPLATES})
    return tmp, g_path, clip_path


@pytest.fixture(scope="module")
def parts(files):
    from facebatch.nets.clip import load_clip

    _, g_path, clip_path = files
    nets = load_networks(g_path, with_d=False)
    clip = load_clip(str(clip_path))
    return nets, ClipLoss.build([clip], [1.0], SOURCE, TARGET)


def frozen_names(G) -> set[str]:
    """Parameter names NADA must never change: mapping, affines, ToRGBs, the constant."""
    return {n for n, _ in G.named_parameters() if n.startswith("mapping.") or ".affine." in n or ".torgb." in n} | {
        n for n, _ in G.named_parameters() if n.endswith(".const")
    }


def row_param_names(G, rows) -> set[str]:
    ids = {id(p) for r in rows for layer in row_layers(G)[r] for n, p in layer.named_parameters() if "affine" not in n}
    return {n for n, p in G.named_parameters() if id(p) in ids}


def changed(before: dict, after: dict) -> set[str]:
    return {n for n in before if not torch.equal(before[n], after[n])}


def params(G) -> dict:
    return {n: p.detach().clone() for n, p in G.named_parameters()}


def test_row_layers_follow_the_w_plus_layout(parts):
    nets, _ = parts
    G = nets.G
    table = row_layers(G)
    assert len(table) == G.num_ws == 6
    assert [len(t) for t in table] == [1, 1, 1, 1, 1, 0]
    assert table[0][0] is G.synthesis.b4.conv1 and table[3][0] is G.synthesis.b16.conv0
    assert candidate_rows(G) == [0, 1, 2, 3, 4]


def test_each_step_changes_only_its_selected_rows_and_never_the_frozen_parts(parts):
    nets, loss = parts
    trainer = NadaTrainer(nets.G, loss, NadaSettings(SOURCE, TARGET, batch=2, auto_layer_k=2, auto_layer_batch=4))
    base = params(trainer.G_frozen)
    frozen = frozen_names(trainer.G_train)
    assert len(frozen) > 0
    seen = set()
    for _ in range(6):
        before = params(trainer.G_train)
        trainer.step()
        rows = trainer.rows[-1]
        assert len(rows) == 2 and set(rows) <= set(candidate_rows(trainer.G_train))
        moved = changed(before, params(trainer.G_train))
        allowed = row_param_names(trainer.G_train, rows)
        assert moved <= allowed, f"step changed {sorted(moved - allowed)} outside rows {rows}"
        assert moved & {n for n in allowed if n.endswith(".weight")}, f"rows {rows} did not train"
        seen |= set(rows)
    after = params(trainer.G_train)
    assert not changed({n: base[n] for n in frozen}, after), "a frozen parameter changed"
    never = set(candidate_rows(trainer.G_train)) - seen
    assert not changed({n: base[n] for n in row_param_names(trainer.G_train, never)}, after)
    assert not changed(base, params(trainer.G_frozen)), "the frozen copy changed"
    buffers = dict(trainer.G_train.named_buffers())
    for n, b in trainer.G_frozen.named_buffers():
        assert torch.equal(b, buffers[n])


def test_fixed_layers_train_exactly_those_rows(parts):
    nets, loss = parts
    trainer = NadaTrainer(nets.G, loss, NadaSettings(SOURCE, TARGET, layers=(1, 3)))
    base = params(trainer.G_frozen)
    for _ in range(3):
        trainer.step()
    moved = changed(base, params(trainer.G_train))
    assert moved == {n for n in row_param_names(trainer.G_train, [1, 3])}
    assert trainer.rows == [[1, 3]] * 3


@torch.no_grad()
def eval_loss(trainer: NadaTrainer, loss: ClipLoss) -> float:
    """The directional loss on fixed latents and fixed (independent) noise for each copy."""
    g = torch.Generator().manual_seed(123)
    G = trainer.G_frozen
    ws = G.mapping(torch.randn(16, G.z_dim, generator=g))
    noise = lambda: [torch.randn(16, 1, r, r, generator=g) for r in G.synthesis.noise_resolutions]  # noqa: E731
    return float(loss.directional(G.synthesis(ws, noise=noise()), trainer.G_train.synthesis(ws, noise=noise())))


def test_directional_loss_falls(parts):
    nets, loss = parts
    trainer = NadaTrainer(nets.G, loss, NadaSettings(SOURCE, TARGET, batch=2, auto_layer_batch=4, seed=0))
    start = eval_loss(trainer, loss)
    for _ in range(30):
        trainer.step()
    end = eval_loss(trainer, loss)
    assert end < start - 0.2, (start, end)
    first, last = trainer.losses[:5], trainer.losses[-5:]
    assert sum(last) / 5 < sum(first) / 5 - 0.1, trainer.losses


def test_the_loss_is_the_weighted_sum_of_each_clips_one_minus_cosine(parts, tmp_path):
    """ΔT from the templates, ΔI from the two renders, 1 - cos averaged over the batch, weighted per CLIP."""
    import open_clip
    import torch.nn.functional as F

    from facebatch.nets.clip import load_clip, write_clip

    nets, one = parts
    clip_a = one.clips[0]
    torch.manual_seed(1)
    other = tmp_path / "other-clip.safetensors"
    write_clip(other, open_clip.CLIP(**CLIP_CFG), CLIP_CFG, extra={"templates": ["{}"]})
    clip_b = load_clip(str(other))
    frozen, trained = torch.rand(3, 3, 16, 16) * 2 - 1, torch.rand(3, 3, 16, 16) * 2 - 1

    def by_hand(clip) -> torch.Tensor:
        fill = lambda text: [t.format(text) for t in clip.templates]  # noqa: E731
        dt = F.normalize(clip.encode_texts(fill(TARGET)).mean(0) - clip.encode_texts(fill(SOURCE)).mean(0), dim=0)
        di = F.normalize(clip.encode_images(trained) - clip.encode_images(frozen), dim=-1)
        return (1 - di @ dt).mean()

    both = ClipLoss.build([clip_a, clip_b], [0.25, 2.0], SOURCE, TARGET)
    expected = 0.25 * by_hand(clip_a) + 2.0 * by_hand(clip_b)
    assert torch.allclose(both.directional(frozen, trained), expected, atol=1e-6)
    muted = ClipLoss.build([clip_a, clip_b], [1.0, 0.0], SOURCE, TARGET)  # weight 0: that CLIP is not even run
    assert torch.allclose(muted.directional(frozen, trained), by_hand(clip_a), atol=1e-6)
    assert not torch.allclose(by_hand(clip_a), by_hand(clip_b), atol=1e-3)  # two different CLIPs really


def test_resume_from_a_snapshot_equals_an_uninterrupted_run(parts, tmp_path):
    nets, loss = parts
    settings = NadaSettings(SOURCE, TARGET, iters=7, snapshot_every=3, auto_layer_batch=4, grid_seeds=(0, 1))
    key = {"test": 1}
    whole = train_nada(nets.G, loss, settings, tmp_path / "whole", run_key=key)

    class Killed(Exception):
        pass

    def kill_at_5(i, value, rows):
        if i == 5:
            raise Killed

    with pytest.raises(Killed):  # dies after iteration 5; the newest snapshot is iteration 3's
        train_nada(nets.G, loss, settings, tmp_path / "cut", run_key=key, on_step=kill_at_5)
    assert latest_snapshot(tmp_path / "cut").name == "snapshot-000003.pt"
    resumed = train_nada(nets.G, loss, settings, tmp_path / "cut", run_key=key)
    assert resumed.resumed_from == 3
    assert resumed.losses == whole.losses and resumed.rows == whole.rows
    a, b = whole.G.state_dict(), resumed.G.state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert (tmp_path / "cut" / "before_after.png").exists() and (tmp_path / "cut" / "grids" / "before.png").exists()


def damaged_snapshots(path, weights: str) -> list[tuple[str, bytes]]:
    """(what, bytes) of the snapshot at `path` broken in each way a resuming trainer must refuse: damaged
    files, and well-formed ones whose content does not fit the run (`weights`: the trained module's key)."""
    import copy
    import os
    import pickle

    class RunsCode:
        def __reduce__(self):
            return (os.system, ("true",))

    state = torch.load(path, weights_only=True)

    def edited(change) -> bytes:
        s = copy.deepcopy(state)
        change(s)
        return _saved(s)

    name = next(k for k, v in state[weights].items() if v.is_floating_point() and v.numel() > 1)
    moments = state["optimizer"]["state"]
    data = path.read_bytes()
    return [
        ("empty", b""),
        ("truncated", data[: len(data) // 2]),
        ("garbage", bytes(range(256)) * 8),
        ("a list", _saved([1, 2, 3])),
        ("code", pickle.dumps({"iteration": RunsCode()}, protocol=2)),
        ("no rng", edited(lambda s: s.pop("rng"))),
        ("no weights", edited(lambda s: s.pop(weights))),
        ("a weight of another shape", edited(lambda s: s[weights].update({name: torch.zeros(3, 3)}))),
        ("a weight too few", edited(lambda s: s[weights].pop(name))),
        ("a nan weight", edited(lambda s: s[weights][name].fill_(float("nan")))),
        (
            "a moment of another shape",
            edited(lambda s: s["optimizer"]["state"][next(iter(moments))].update(exp_avg=torch.zeros(7, 7, 7))),
        ),  # fmt: skip
        ("another lr", edited(lambda s: s["optimizer"]["param_groups"][0].update(lr=1.0))),
        ("an rng of another kind", edited(lambda s: s.update(rng=torch.zeros(3, dtype=torch.uint8)))),
        ("an iteration its history lacks", edited(lambda s: s.update(iteration=s["iteration"] + 2))),
        ("an iteration as text", edited(lambda s: s.update(iteration=str(s["iteration"])))),
    ]


def test_a_damaged_snapshot_is_one_line_naming_it_never_a_resume_or_a_false_success(parts, tmp_path):
    import shutil

    nets, loss = parts
    settings = NadaSettings(SOURCE, TARGET, iters=4, snapshot_every=2, auto_layer_batch=2, grid_seeds=(0,))
    key = {"test": 1}
    train_nada(nets.G, loss, settings, tmp_path / "good", run_key=key, stop_after=2)
    snapshot = latest_snapshot(tmp_path / "good")
    cases = damaged_snapshots(snapshot, "generator")
    state = torch.load(snapshot, weights_only=True)
    for what, change in (("a row out of range", [[99]] * 2), ("rows too few", [[0]])):
        cases.append((what, _saved({**state, "rows": change})))
    cases.append(("losses as text", _saved({**state, "losses": "0.5,0.4"})))
    for n, (what, data) in enumerate(cases):
        work = tmp_path / f"w{n}"
        shutil.copytree(tmp_path / "good", work)
        (work / "snapshots" / snapshot.name).write_bytes(data)
        with pytest.raises(InputError) as info:
            train_nada(nets.G, loss, settings, work, run_key=key)
        message = str(info.value)
        assert "\n" not in message and str(work / "snapshots" / snapshot.name) in message, (what, message)
        assert "cannot be resumed" in message and "--overwrite" in message, (what, message)
        assert not (work / "before_after.png").exists(), what
        if what == "code":
            assert "would run code" in message and "weights_only" not in message, message
    assert train_nada(nets.G, loss, settings, tmp_path / "good", run_key=key).resumed_from == 2


def test_the_command_never_claims_an_unwritten_generator_and_says_how_ctrl_c_resumes(files, tmp_path, monkeypatch):
    out, work = tmp_path / "o.safetensors", tmp_path / "o.nada"
    common = ["--source", SOURCE, "--target", TARGET, "-o", out, "--snapshot-every", 2, "--grid-seeds", "0"]
    step = NadaTrainer.step

    def interrupted_at_3(self):
        if self.iteration == 2:
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(NadaTrainer, "step", interrupted_at_3)
    res = nada_cli(files, *common, "--iters", 4)
    assert res.exit_code == 130 and res.output.count("\n") == 1, res.output
    assert "interrupted at iteration 2 of 4" in res.output and "rerunning the same command resumes" in res.output
    assert "snapshot-000002.pt" in res.output and not out.exists()
    monkeypatch.setattr(NadaTrainer, "step", step)
    snapshot = latest_snapshot(work)
    good = snapshot.read_bytes()
    state = torch.load(snapshot, weights_only=True)
    snapshot.write_bytes(_saved({**state, "iteration": 4}))  # claims the run is done; its history says 2
    res = nada_cli(files, *common, "--iters", 4)
    assert res.exit_code == 2 and res.output.count("\n") == 1 and str(snapshot) in res.output, res.output
    assert "shifted generator" not in res.output and not out.exists()
    snapshot.write_bytes(good)
    res = nada_cli(files, *common, "--iters", 4)
    assert res.exit_code == 0 and "resumed at iteration 2" in res.output and out.exists(), res.output


def _saved(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def nada_cli(files, *args):
    tmp, g_path, clip_path = files
    base = ["nada", "-g", str(g_path), "--clip", str(clip_path), "--auto-layer-batch", "4", "--grid-seeds", "0-3"]
    return runner.invoke(app, [*base, *map(str, args)])


def test_output_metadata_round_trips_and_loads_as_a_generator(files, tmp_path):
    tmp, g_path, clip_path = files
    out = tmp_path / "G_sketch.safetensors"
    res = nada_cli(files, "--source", SOURCE, "--target", TARGET, "-o", out, "--iters", 3, "--batch", 1, "--seed", 5)
    assert res.exit_code == 0, res.output
    meta = read_nada_metadata(out)
    assert meta["source"] == SOURCE and meta["target"] == TARGET
    assert meta["clips"] == [{"spec": str(clip_path), "sha256": sha256_of(clip_path), "weight": 1.0}]
    assert meta["iterations"] == 3 and meta["batch"] == 1 and meta["seed"] == 5
    assert meta["lr"] == pytest.approx(0.0016) and meta["betas"] == pytest.approx([0.0, 0.99**0.8])
    assert meta["layers"] == "auto(k=4)" and meta["auto_layer_k"] == 4 and meta["auto_layer_iters"] == 1
    assert meta["base_generator"]["sha256"] == sha256_of(g_path)
    assert meta["facebatch_version"]
    assert read_nada_metadata(g_path) is None  # a generator NADA did not make
    # The output is an ordinary generator for every command: same architecture, shifted synthesis weights.
    shifted, base = load_networks(out, with_d=False), load_networks(g_path, with_d=False)
    assert shifted.g_kwargs == base.g_kwargs
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(shifted.G.mapping(z), base.G.mapping(z))
    assert not torch.equal(shifted.G(z), base.G(z))
    res = runner.invoke(app, ["sample", "-g", str(out), "-o", str(tmp_path / "S"), "-n", "2", "-q"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "G_sketch.nada" / "before_after.png").exists()
    # The same command again finds its run finished and leaves the output as it was; the same work folder
    # with another target is refused.
    before = out.read_bytes()
    again = nada_cli(files, "--source", SOURCE, "--target", TARGET, "-o", out, "--iters", 3, "--batch", 1, "--seed", 5)
    assert again.exit_code == 0 and out.read_bytes() == before, again.output
    work = tmp_path / "G_sketch.nada"
    other = nada_cli(files, "--source", SOURCE, "--target", "cartoon", "-o", tmp_path / "x.safetensors", "--work", work)
    assert other.exit_code == 2 and "target" in other.output and "--overwrite" in other.output
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "photo", "--target", "photo"], "same text"),
        (["--source", "photo", "--target", "sketch", "--layers", "0,x"], "--layers"),
        (["--source", "photo", "--target", "sketch", "--layers", "7"], "out of range"),
        (["--source", "photo", "--target", "sketch", "--layers", "5"], "ToRGB"),
        (["--source", "photo", "--target", "sketch", "--clip-weight", "1", "--clip-weight", "2"], "--clip-weight"),
        (["--source", "photo", "--target", "sketch", "--iters", "0"], "--iters"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(files, tmp_path, args, message):
    out = tmp_path / "o.safetensors"
    res = nada_cli(files, *args, "-o", out)
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and res.output.startswith("error:") and message in res.output, res.output
    assert not out.exists()


def test_sizes_are_bounded_before_training_with_the_bound_in_the_message(files, tmp_path):
    out = tmp_path / "o.safetensors"
    for args, option, bound in (
        (["--iters", "1000000000000"], "--iters", "100,000"),
        (["--iters", "100001"], "--iters", "100,000"),
        (["--batch", "100000"], "--batch", "64"),
        (["--auto-layer-batch", "65"], "--auto-layer-batch", "64"),
        (["--auto-layer-k", "1000000000"], "--auto-layer-k", "at most 5"),  # 6 W+ rows, the last one ToRGB's
        (["--auto-layer-k", "0"], "--auto-layer-k", "at least 1"),
        (["--grid-seeds", "0-100"], "--grid-seeds", "64"),
        (["--grid-seeds", "0-5000000000"], "--grid-seeds", "4294967295"),
        (["--grid-seeds", "x"], "--grid-seeds", "4294967295"),
    ):
        res = nada_cli(files, "--source", "photo", "--target", "sketch", "-o", out, *args)
        assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
        assert option in res.output and bound in res.output, res.output
        assert "--seeds" not in res.output.replace("--grid-seeds", ""), res.output
    assert not out.exists() and not (tmp_path / "o.nada" / "snapshots").exists()
    res = nada_cli(files, "--source", "photo", "--target", "sketch", "-o", out, "--iters", 1, "--auto-layer-k", 5)
    assert res.exit_code == 0 and out.exists(), res.output


def test_unknown_clip_and_missing_generator_are_one_line_and_exit_2(files, tmp_path, monkeypatch):
    tmp, g_path, clip_path = files
    out = tmp_path / "o.safetensors"
    common = ["nada", "--source", "photo", "--target", "sketch", "-o", str(out)]
    res = runner.invoke(app, [*common, "-g", str(g_path), "--clip", "no-such-clip"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "unknown CLIP" in res.output, res.output
    res = runner.invoke(app, [*common, "-g", str(tmp_path / "missing.pkl"), "--clip", str(clip_path)])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "missing.pkl" in res.output, res.output
    monkeypatch.setenv("FACEBATCH_OFFLINE", "1")
    monkeypatch.setenv("FACEBATCH_CACHE_DIR", str(tmp_path / "cache"))
    res = runner.invoke(app, [*common, "-g", str(g_path), "--clip", "ViT-B-32:openai"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "ViT-B-32:openai" in res.output, res.output
    from facebatch.nets import registry

    # an install without the built-in face CLIP: no --clip is a clear error, not a traceback
    without = {name: e for name, e in registry.models().items() if name != "celeba-clip"}
    monkeypatch.setattr(registry, "models", lambda: without)
    res = runner.invoke(app, [*common, "-g", str(g_path)])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "--clip" in res.output, res.output
    assert not out.exists()


def test_resume_flag_needs_a_snapshot(files, tmp_path):
    res = nada_cli(files, "--source", "photo", "--target", "sketch", "-o", tmp_path / "o.safetensors", "--resume")
    assert res.exit_code == 2 and "no snapshot" in res.output, res.output
    settings = json.loads((tmp_path / "o.nada" / "nada.json").read_text())
    assert settings["run"]["target"] == "sketch"


def test_the_notebook_function_is_the_command(files, tmp_path):
    import facebatch

    tmp, g_path, clip_path = files
    out = tmp_path / "G.safetensors"
    result = facebatch.nada(
        str(g_path), SOURCE, TARGET, out, clips=[str(clip_path)], iters=2, auto_layer_batch=2, grid_seeds=(0,)
    )
    assert len(result.losses) == 2 and result.grid.exists()
    assert read_nada_metadata(out)["iterations"] == 2
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"a user's file")
    with pytest.raises(Exception, match="--overwrite"):
        facebatch.nada(str(g_path), SOURCE, TARGET, mine, clips=[str(clip_path)], iters=2)
    assert mine.read_bytes() == b"a user's file"


def test_a_killed_nada_process_resumes_to_the_uninterrupted_result(files, tmp_path):
    """SIGKILL mid-run (the snapshot writes must be atomic), then the same command again: same generator."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    tmp, g_path, clip_path = files
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def command(out):
        args = ["nada", "-g", g_path, "--clip", clip_path, "--auto-layer-batch", "4", "--grid-seeds", "0-1"]
        args += ["--source", SOURCE, "--target", TARGET, "--iters", 60, "--snapshot-every", 5, "-q", "-o", out]
        return [sys.executable, "-m", "facebatch", *map(str, args)]

    whole, cut = tmp_path / "whole.safetensors", tmp_path / "cut.safetensors"
    subprocess.run(command(whole), env=env, check=True, timeout=300)
    proc = subprocess.Popen(command(cut), env=env)
    deadline = time.monotonic() + 120
    while latest_snapshot(tmp_path / "cut.nada") is None or latest_snapshot(tmp_path / "cut.nada").name < (
        "snapshot-000010.pt"
    ):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its second snapshot"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not cut.exists()  # no half-written output
    done = subprocess.run(command(cut), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    a, b = load_file(str(whole)), load_file(str(cut))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_nada_metadata(cut)["iterations"] == 60


def test_a_work_folder_holding_files_no_run_recorded_is_refused(files, tmp_path):
    """--work ~ must not replace a user's nada.json or before_after.png; --overwrite removes only NADA's names."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("nada.json", "before_after.png"):
        (work / name).write_text("mine")
        res = nada_cli(files, "--source", SOURCE, "--target", TARGET, "-o", tmp_path / "o.safetensors", "--work", work)
        assert res.exit_code == 2 and res.output.count("\n") == 1 and "no facebatch NADA run" in res.output, res.output
        assert (work / name).read_text() == "mine"
        (work / name).unlink()
    (work / "notes.txt").write_text("keep")
    res = nada_cli(files, "--source", SOURCE, "--target", TARGET, "-o", tmp_path / "o.safetensors", "--work", work,
                   "--iters", 1, "--overwrite")  # fmt: skip
    assert res.exit_code == 0 and (work / "notes.txt").read_text() == "keep", res.output


def test_a_second_run_on_a_busy_work_folder_is_refused(files, tmp_path):
    from facebatch.pipeline.rundir import folder_lock

    out = tmp_path / "o.safetensors"
    with folder_lock(tmp_path / "o.nada"):
        res = nada_cli(files, "--source", SOURCE, "--target", TARGET, "-o", out, "--iters", 1)
    assert res.exit_code == 2 and "in use by another facebatch run" in res.output, res.output
    assert not out.exists()


def test_a_finished_run_continues_to_more_iterations_without_overwrite(files, tmp_path):
    out = tmp_path / "o.safetensors"
    common = ["--source", SOURCE, "--target", TARGET, "-o", out, "--snapshot-every", 2]
    assert nada_cli(files, *common, "--iters", 2).exit_code == 0
    res = nada_cli(files, *common, "--iters", 4)
    assert res.exit_code == 0 and "resumed at iteration 2" in res.output, res.output
    assert read_nada_metadata(out)["iterations"] == 4
    assert len(list((tmp_path / "o.nada" / "grids").glob("iter-*.png"))) == 2  # the earlier grids were kept
