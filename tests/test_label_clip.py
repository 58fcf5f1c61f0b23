"""`facebatch label --clip`: zero-shot labels from prompt pairs, written exactly like the predictor's labels.

Mechanics run on a tiny random open_clip CLIP written to tmp_path; the effect runs on the shipped face CLIP
(`celeba-clip`) against the real CelebA val labels in ../shared, and on the shipped demo generator.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import DATA, require
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.errors import InputError
from facebatch.nets import clip as fclip
from facebatch.nets import predictors
from facebatch.pipeline.rundir import IMAGES, RunDir

runner = CliRunner()

TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
}
SMILE = "Smiling=a photo of a smiling person|a photo of a person"
MALE = "Male=a man|a woman"


@pytest.fixture(autouse=True)
def _one_thread(restore_torch_threads):
    torch.set_num_threads(1)


def invoke(*args, code: int = 0):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CFG).eval()
    path = tmp_path_factory.mktemp("clip") / "tiny.safetensors"
    return fclip.write_clip(path, model, TINY_CFG, extra={"templates": ["a photo of {}", "{}"]})


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """A folder of 3 celeba64 samples as PNGs and one broken file, plus the sample run itself."""
    tmp = tmp_path_factory.mktemp("faces")
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        res = runner.invoke(app, ["sample", "-g", "celeba64", "-n", "3", "--seed", "3", "-o", str(tmp / "S"), "-q"])
    assert res.exit_code == 0, res.output
    folder = tmp / "faces"
    folder.mkdir()
    for png in sorted(RunDir(tmp / "S").folder(IMAGES).glob("*.png")):
        (folder / png.name).write_bytes(png.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder, tmp / "S"


def test_clip_labels_are_written_like_predictor_labels(tmp_path, faces, tiny_clip):
    folder, _ = faces
    invoke("label", folder, "-o", tmp_path / "p.csv", "--attrs", "Smiling,Male", "-q")
    res = invoke("label", folder, "-o", tmp_path / "c.csv", "--clip", tiny_clip, "--prompt", SMILE, "--prompt", MALE)
    assert "2 attributes" in res.output and "1 of 4 images could not be labelled" in res.output
    p = pd.read_csv(tmp_path / "p.csv", dtype=str, keep_default_na=False)
    c = pd.read_csv(tmp_path / "c.csv", dtype=str, keep_default_na=False)
    assert list(c.columns) == list(p.columns) == ["image_id", "Smiling", "Male"]
    assert list(c.image_id) == list(p.image_id)
    assert (c.set_index("image_id").loc["broken.png"] == "").all()
    values = c[c.image_id != "broken.png"][["Smiling", "Male"]].astype(float).to_numpy()
    assert ((values > 0) & (values < 1)).all()

    # the numbers are CLIP's two-way softmax over the template-averaged prompt pair, on the file read at 32 px
    from facebatch.pipeline.images import load_image

    clip = fclip.load_clip(str(tiny_clip))
    name = c.image_id.iloc[-1]
    img, _ = load_image(folder / name, clip.image_size)
    feat = clip.encode_images(img[None])[0]
    pos, neg = clip.embed_prompt("a photo of a smiling person"), clip.embed_prompt("a photo of a person")
    scale = clip.model.logit_scale.exp().item()
    expected = torch.softmax(scale * torch.stack([feat @ pos, feat @ neg]), 0)[0].item()
    assert float(c.set_index("image_id").loc[name, "Smiling"]) == pytest.approx(expected, abs=1e-5)

    # --binary and --attrs shape the CLIP labels as they shape the predictor's
    invoke("label", folder, "-o", tmp_path / "b.csv", "--clip", tiny_clip, "--prompt", SMILE, "--prompt", MALE,
           "--binary", "--attrs", "Male", "-q")  # fmt: skip
    b = pd.read_csv(tmp_path / "b.csv", dtype=str, keep_default_na=False)
    assert list(b.columns) == ["image_id", "Male"] and set(b.Male) <= {"0", "1", ""}


def test_clip_labels_of_a_sample_run_render_its_latents_and_prompts_file_is_the_same(tmp_path, faces, tiny_clip):
    _, run = faces
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("Smiling: [a photo of a smiling person, a photo of a person]\nMale: [a man, a woman]\n")
    invoke("label", run, "-o", tmp_path / "a.csv", "--clip", tiny_clip, "--prompts", prompts, "-q")
    invoke("label", run, "-o", tmp_path / "b.csv", "--clip", tiny_clip, "--prompt", SMILE, "--prompt", MALE, "-q")
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert len(a) == 3 and a.equals(b)
    # other prompts are other work: the run folder does not silently reuse the first prompts' parts
    res = invoke("label", run, "-o", tmp_path / "a.csv", "--clip", tiny_clip, "--prompt", MALE, "-q", code=2)
    assert "--overwrite" in res.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "Smiling=a smiling person"], "expected NAME='POSITIVE|NEGATIVE'"),
        (["--prompt", "Smiling"], "expected NAME='POSITIVE|NEGATIVE'"),
        (["--prompt", "Smiling=a|b|c"], "expected NAME='POSITIVE|NEGATIVE'"),
        (["--prompt", "=a smiling person|a person"], "needs a name"),
        (["--prompt", "image_id=a|b"], "cannot be an attribute name"),
        (["--prompt", "S=a|b", "--prompt", "S=c|d"], "given twice"),
        (["--prompt", "S={} smiling|a person"], "without '{}'"),
        ([], "needs prompts"),
    ],
)
def test_bad_prompts_exit_2_with_one_line(tmp_path, faces, tiny_clip, args, message):
    res = invoke("label", faces[0], "-o", tmp_path / "l.csv", "--clip", tiny_clip, *args, code=2)
    assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output


@pytest.mark.parametrize(
    "text, message",
    [
        ("Smiling: [a smiling person]\n", "expected [POSITIVE, NEGATIVE]"),
        ("- Smiling\n", "expected a mapping"),
        ("Smiling: [a, b\n", "not valid YAML"),
        ("Smiling: [a, b]\nMale: [c, d]\nSmiling: [e, f]\n", "'Smiling' is given twice (lines 1 and 3)"),
        ("yes: [a smiling person, a person]\n", "is not text; quote it"),
    ],
)
def test_bad_prompts_file_exits_2_with_one_line(tmp_path, faces, tiny_clip, text, message):
    prompts = tmp_path / "p.yaml"
    prompts.write_text(text)
    res = invoke("label", faces[0], "-o", tmp_path / "l.csv", "--clip", tiny_clip, "--prompts", prompts, code=2)
    assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output


FORMULA_NAMES = ["@SUM(1+1)*cmd|calc", "=HYPERLINK(x)", "+1", "-2+3", "\tx", "\rx", " @x"]


def test_prompt_names_a_spreadsheet_would_run_as_a_formula_are_refused(tmp_path, faces, tiny_clip):
    """A labels CSV header cell that starts with = + - @ (or a tab or CR) is a formula to a spreadsheet: such a
    prompt name is refused where names are parsed, by --prompt, in a --prompts file and from the library."""
    import json

    prompts = tmp_path / "p.yaml"
    for name in FORMULA_NAMES:
        # --prompt splits at the first '=', so a name cannot start with one there: refused as nameless
        res = invoke(
            "label", faces[0], "-o", tmp_path / "l.csv", "--clip", tiny_clip, "--prompt", f"{name}=a|b", code=2
        )
        assert len(res.output.strip().splitlines()) == 1, (name, res.output)
        assert ("needs a name" if name.startswith("=") else "formula") in res.output, (name, res.output)
        prompts.write_text(f"{json.dumps(name)}: [a, b]\n")  # JSON is YAML, and escapes the tab and CR
        res = invoke("label", faces[0], "-o", tmp_path / "l.csv", "--clip", tiny_clip, "--prompts", prompts, code=2)
        assert "formula" in res.output and len(res.output.strip().splitlines()) == 1, (name, res.output)
        with pytest.raises(InputError, match="formula"):
            predictors.resolve_clip_predictor(str(tiny_clip), [(name, "a", "b")])
    assert not (tmp_path / "l.csv").exists()
    ref = predictors.resolve_clip_predictor(str(tiny_clip), [("Smiling", "a", "b"), ("Top-hat", "c", "d")])
    assert [p[0] for p in ref.options["prompts"]] == ["Smiling", "Top-hat"]  # a '-' inside a name is plain text
    for bad in ["Smiling=a|b", ("Smiling", "a"), ("Smiling", "a", 3)]:
        with pytest.raises(InputError, match="three texts"):
            predictors.resolve_clip_predictor(str(tiny_clip), [bad])


def test_a_prompts_file_must_be_a_small_regular_file(tmp_path, faces, tiny_clip):
    """--prompts on a FIFO waited for a writer forever and on /dev/zero ran out of memory: anything but a regular
    file of at most 1 MiB is one line naming the file (and the bound), before anything is read."""
    import os

    from test_pipeline_textfiles import deadline

    os.mkfifo(tmp_path / "fifo.yaml")
    big = tmp_path / "big.yaml"
    with open(big, "wb") as fh:
        fh.truncate((1 << 20) + 1)
    for path, message in (
        (tmp_path / "fifo.yaml", "is a FIFO, not a regular file"),
        ("/dev/zero", "is a character device, not a regular file"),
        (tmp_path, "is a folder, not a regular file"),
        (big, "larger than 1024 KiB"),
    ):
        with deadline(60):
            res = invoke("label", faces[0], "-o", tmp_path / "l.csv", "--clip", tiny_clip, "--prompts", path, code=2)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and f"--prompts {path}" in lines[0] and message in lines[0], res.output


def test_clip_option_errors_exit_2_with_one_line(tmp_path, faces, tiny_clip, monkeypatch):
    monkeypatch.setenv("FACEBATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FACEBATCH_OFFLINE", "1")
    folder, out = faces[0], tmp_path / "l.csv"
    garbage = tmp_path / "weights.bin"
    garbage.write_bytes(b"\x80\x02 not a state dict" * 40)
    wrong = tmp_path / "wrong.safetensors"
    from safetensors.torch import save_file

    save_file({"visual.proj": torch.zeros(2, 2)}, str(wrong))
    cases = [
        (["--clip", f"RN50:{garbage}", "--prompt", SMILE], "not usable weights for RN50"),  # before any shard
        (["--clip", f"RN50:{wrong}", "--prompt", SMILE], "not usable weights for RN50"),
        (["--clip", tiny_clip, "--predictor", "celeba-attrs", "--prompt", SMILE], "give one of them"),
        (["--prompt", SMILE], "need --clip"),
        (["--clip", "no-such-clip", "--prompt", SMILE], "unknown CLIP"),
        (["--clip", "NoArch:openai", "--prompt", SMILE], "no architecture"),
        (["--clip", "ViT-B-32:openai", "--prompt", SMILE], str(fclip.pretrained_cache_path("ViT-B-32", "openai"))),
        (["--predictor", tiny_clip], "is a CLIP: use --clip"),
    ]
    cases.append((["--predictor", "celeba-clip"], "is a CLIP: use --clip celeba-clip"))
    for args, message in cases:
        res = invoke("label", folder, "-o", out, *args, code=2)
        assert message in res.output and len(res.output.strip().splitlines()) == 1, (args, res.output)
    assert not out.exists()


def test_a_clip_that_cannot_load_fails_once_before_any_shard(tmp_path, faces, tiny_clip, monkeypatch):
    """Every CLIP is loaded once on the CPU in the client: a file no worker could load is one line and exit 2
    before any shard runs (it was a failed shard per worker, "rerun to retry", forever). The members: a
    facebatch-clip file whose weights do not fit its config, one with NaN weights, a cached ARCH:TAG download
    that is damaged (with or without the hash recorded at download), and ARCH:/path weights of another model."""
    import open_clip
    from safetensors.torch import save_file

    from facebatch.nets import cache

    monkeypatch.setenv("FACEBATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FACEBATCH_OFFLINE", "1")
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CFG).eval()
    misfit = fclip.write_clip(tmp_path / "misfit.safetensors", model, dict(TINY_CFG, embed_dim=8))
    with torch.no_grad():
        model.visual.proj.fill_(float("nan"))
    nan = fclip.write_clip(tmp_path / "nan.safetensors", model, TINY_CFG)
    cached = fclip.pretrained_cache_path("RN50", "openai")
    cached.parent.mkdir(parents=True)
    save_file({"visual.proj": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    cases = [
        ([misfit], str(misfit), "do not fit"),
        ([nan], str(nan), "NaN"),
        (["RN50:openai"], str(cached), "not usable weights for RN50"),
        (["RN50:openai", "recorded"], str(cached), "not usable weights for RN50"),
        ([f"RN50:{tmp_path / 'other.safetensors'}"], "other.safetensors", "not usable weights for RN50"),
    ]
    for k, (spec, where, needle) in enumerate(cases):
        cached.write_bytes(b"\x80\x02 a download cut short" * 40)
        cache.sidecar_path(cached).unlink(missing_ok=True)
        if spec[1:] == ["recorded"]:
            cache.sidecar_path(cached).write_text(f"{cache.sha256_of(cached, reuse=False)}  {cached.name}\n")
        out = tmp_path / f"l{k}.csv"
        res = invoke("label", faces[0], "-o", out, "--clip", spec[0], "--prompt", SMILE, code=2)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and where in lines[0] and needle in lines[0], (spec, res.output)
        assert "rerun" not in res.output and not out.exists(), res.output
        assert not list(tmp_path.glob(f"l{k}_run/**/*.parquet")), "a shard ran"
    res = invoke("label", faces[0], "-o", tmp_path / "ok.csv", "--clip", tiny_clip, "--prompt", SMILE, "-q")
    assert (tmp_path / "ok.csv").is_file()  # a sound CLIP passes the same check


def test_an_open_clip_architecture_with_local_weights_labels_through_the_same_predictor(tmp_path, monkeypatch):
    """ARCH:/path (what ARCH:TAG resolves to once downloaded): the ref carries the architecture to the worker,
    which builds open_clip's model with the ImageNet templates (2 of the 80 here: RN50's text tower on 1
    thread takes ~15 s for 160 texts); probabilities as CLIP's two-way softmax."""
    import open_clip
    from safetensors.torch import save_file

    monkeypatch.setattr(fclip, "imagenet_templates", lambda: ("a photo of {}.", "a bad photo of a {}."))
    torch.manual_seed(0)
    model = open_clip.create_model("RN50").eval()
    path = tmp_path / "rn50.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    ref = predictors.resolve_clip_predictor(f"RN50:{path}", [("Smiling", "a smiling person", "a person")])
    assert ref.kind == "clip" and ref.name == f"RN50:{path}" and predictors.preflight(ref) == ("Smiling",)
    pred = predictors.load(ref)
    assert pred.resolution == 224 and len(pred.clip.templates) == 2
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        feat = torch.nn.functional.normalize(model.encode_image(pred.clip.preprocess(x)), dim=-1)[0]
    pos, neg = pred.clip.embed_prompt("a smiling person"), pred.clip.embed_prompt("a person")
    expected = torch.softmax(model.logit_scale.exp() * torch.stack([feat @ pos, feat @ neg]), 0)[0]
    assert pred.probs(x)[0, 0].item() == pytest.approx(expected.item(), abs=1e-5)


def test_parse_prompt_keeps_texts_with_equals_and_commas():
    assert predictors.parse_prompt("Hat=a person, wearing a hat = yes|a person") == (
        "Hat",
        "a person, wearing a hat = yes",
        "a person",
    )
    with pytest.raises(InputError):
        predictors.parse_prompt("Hat=|a person")


# --- the shipped face CLIP ------------------------------------------------------------------------------------

# Zero-shot AUROC of celeba-clip on the first 300 val images (split.csv order) with these prompts, measured
# by models/celeba-clip/evaluate.py (metrics.json: zero_shot.val_first300_auroc); floor = measured - margin.
VAL_PROMPTS = {"Smiling": ("a smiling person", "a person"), "Male": ("a man", "a woman")}
VAL_FLOORS = {"Smiling": 0.93, "Male": 0.96}  # measured 0.964 and 0.987


@pytest.fixture(scope="module")
def face_clip():
    return fclip.load_clip("celeba-clip")  # built in: a missing entry fails here, it is not skipped


def first_val_images(n: int):
    """The first `n` val images (split.csv order) read as facebatch reads files at 64 px, and their attributes."""
    from facebatch.pipeline.images import load_image

    root = require(DATA / "celeba10k")
    split = pd.read_csv(root / "split.csv")
    attrs = pd.read_csv(root / "attributes.csv").set_index("image_id")
    ids = split[split.split == "val"].image_id.tolist()[:n]
    images = torch.stack([load_image(root / "images" / i, 64)[0] for i in ids])
    return images, attrs.loc[ids]


def test_face_clip_zero_shot_labels_reach_the_measured_auroc_on_val(face_clip):
    from sklearn.metrics import roc_auc_score

    images, attrs = first_val_images(300)
    pred = predictors.ClipPromptPredictor(face_clip, [(n, p, q) for n, (p, q) in VAL_PROMPTS.items()])
    probs = torch.cat([pred.probs(images[i : i + 100]) for i in range(0, len(images), 100)]).numpy()
    for j, (name, floor) in enumerate(VAL_FLOORS.items()):
        auroc = roc_auc_score(attrs[name].to_numpy() > 0, probs[:, j])
        assert auroc >= floor, (name, auroc)
    # the same numbers through the CLI on files would need 300 copies; the predictor is what `label` calls


def test_boundaries_fitted_from_clip_labels_move_the_attribute_predictor(tmp_path, face_clip):
    """Words -> labels -> boundary -> edit: 1000 celeba64 samples labelled by two CLIP prompt pairs only, one
    InterFaceGAN boundary each; moving 64 other samples along it must raise celeba-attrs' probability of
    that attribute (and moving them back must lower it).

    Measured (14 s): mean change of p at +3 / -3: Smiling +0.27 / -0.29, Male +0.39 / -0.15; p(+3) > p(-3)
    for 98% of the 64 samples on each. Floors: 0.08 each way (about half the smallest) and 85%."""
    from facebatch.edit.apply import edit_latents
    from facebatch.edit.boundaries_io import load_boundaries
    from facebatch.nets.attributes import load_predictor
    from facebatch.nets.checkpoints import load_networks
    from facebatch.nets.registry import get
    from facebatch.nets.sampling import z_from_seeds

    S, L, B = tmp_path / "S", tmp_path / "labels.csv", tmp_path / "B.json"
    invoke("sample", "-g", "celeba64", "-n", "1000", "--seed", "0", "--no-images", "-o", S, "-q")
    prompts = [f"{n}={p}|{q}" for n, (p, q) in VAL_PROMPTS.items()]
    invoke("label", S, "-o", L, "--clip", "celeba-clip", *sum((["--prompt", p] for p in prompts), []), "-q")
    invoke("fit-boundaries", L, "--latents", S, "--chosen-ratio", "0.25", "--out", B)
    bounds = load_boundaries(B)
    G = load_networks("celeba64", with_d=False).G.eval()
    attrs = load_predictor(get("celeba-attrs").fetch())
    with torch.no_grad():
        ws = G.mapping(z_from_seeds(range(3_000_000, 3_000_064), G.z_dim)).numpy()
        for name in VAL_PROMPTS:
            j = attrs.index(name)
            p = {}
            for s in (-3.0, 0.0, 3.0):
                edited = torch.from_numpy(edit_latents(ws, bounds[name], np.full(len(ws), s)))
                p[s] = attrs(G.synthesis(edited, noise_mode="const"))[:, j]
            up, down = float((p[3.0] - p[0.0]).mean()), float((p[-3.0] - p[0.0]).mean())
            assert up > 0.08 and down < -0.08, (name, up, down)
            assert float((p[3.0] > p[-3.0]).float().mean()) >= 0.85, name
