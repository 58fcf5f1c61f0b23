"""facebatch.nets.clip: facebatch-clip files, the differentiable preprocess, template-averaged prompts, and the
one-line errors of ARCH:TAG specs offline. Everything runs on a tiny random open_clip CLIP written to tmp_path
(no network, no pretrained weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facebatch.errors import CheckpointError, InputError, ModelNotAvailable
from facebatch.nets import clip as fclip

TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
}
TEMPLATES = ["a photo of {}", "a portrait of {}", "{}"]


@pytest.fixture(autouse=True)
def _one_thread(restore_torch_threads):
    torch.set_num_threads(1)


def tiny_model(seed: int = 0):
    import open_clip

    torch.manual_seed(seed)
    return open_clip.CLIP(**TINY_CFG).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, path) of a tiny random CLIP saved as fp32 with templates and mean/std in its metadata."""
    model = tiny_model()
    path = tmp_path_factory.mktemp("clip") / "tiny.safetensors"
    fclip.write_clip(path, model, TINY_CFG, extra={"templates": TEMPLATES, "mean": [0.5] * 3, "std": [0.5] * 3})
    return model, path


def images(n: int = 3, h: int = 32, w: int = 32, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=gen) * 2 - 1


def test_round_trip_gives_the_same_embeddings(tiny):
    model, path = tiny
    clip = fclip.load_clip(str(path))
    assert clip.image_size == 32 and clip.templates == tuple(TEMPLATES)
    x = images()
    with torch.no_grad():
        ref_img = F.normalize(model.encode_image((x + 1) / 2 * 1.0 / 0.5 - 1.0), dim=-1)  # mean=std=0.5
        ref_txt = F.normalize(model.encode_text(clip.tokenizer(["a smiling person"])), dim=-1)
    assert torch.allclose(clip.encode_images(x), ref_img, atol=1e-6)
    assert torch.allclose(clip.encode_texts(["a smiling person"]), ref_txt, atol=1e-6)
    assert clip.model.logit_scale.item() == pytest.approx(model.logit_scale.item())


def test_half_file_is_smaller_and_loads_as_fp32_with_close_embeddings(tiny, tmp_path):
    model, path = tiny
    half = fclip.write_clip(tmp_path / "half.safetensors", model, TINY_CFG, extra={"templates": TEMPLATES}, half=True)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    a, b = fclip.load_clip(str(path)), fclip.load_clip(str(half))
    assert next(b.model.parameters()).dtype == torch.float32
    x = images()
    cos = (a.encode_images(x) * b.encode_images(x)).sum(-1)
    assert cos.min() > 0.98  # a random net; the trained face CLIP moves less (its card)
    assert not torch.equal(a.encode_images(x), b.encode_images(x))  # it really was stored in fp16


def test_preprocess_is_differentiable_and_matches_a_pil_resize(tiny):
    """A 80x96 image -> short side to 32 (bicubic, antialiased), centre crop, normalise: as open_clip's PIL
    transform does it (Resize(32, bicubic) + CenterCrop(32) + ToTensor + Normalize)."""
    from open_clip.transform import image_transform
    from PIL import Image

    clip = fclip.load_clip(str(tiny[1]))
    gen = torch.Generator().manual_seed(3)
    smooth = F.interpolate(torch.rand(1, 3, 10, 12, generator=gen), size=(80, 96), mode="bilinear")
    u8 = (smooth * 255).round().to(torch.uint8)
    x = (u8.float() / 127.5 - 1).requires_grad_(True)
    ours = clip.preprocess(x)
    assert ours.shape == (1, 3, 32, 32)
    pil = Image.fromarray(u8[0].permute(1, 2, 0).numpy())
    reference = image_transform(32, is_train=False, mean=(0.5,) * 3, std=(0.5,) * 3)(pil)[None]
    diff = (ours.detach() - reference).abs()
    assert diff.mean() < 0.01 and diff.max() < 0.1, (diff.mean(), diff.max())
    clip.encode_images(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # at the model's size the preprocess only normalises
    y = images()
    assert torch.allclose(clip.preprocess(y), y, atol=1e-6)  # mean = std = 0.5 maps [-1, 1] onto itself


def test_embed_prompt_is_the_normalised_mean_of_normalised_template_embeddings(tiny):
    clip = fclip.load_clip(str(tiny[1]))
    filled = [t.format("a smiling person") for t in TEMPLATES]
    each = F.normalize(clip.model.encode_text(clip.tokenizer(filled)).float(), dim=-1)
    expected = F.normalize(each.mean(0), dim=-1)
    got = clip.embed_prompt("a smiling person")
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, each[0], atol=1e-3)  # averaging did something
    assert torch.allclose(clip.embed_prompt("x", templates=["{}"]), clip.encode_texts(["x"])[0], atol=1e-6)


def one_line_error(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_arch_tag_offline_is_one_line_naming_url_and_path(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEBATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FACEBATCH_OFFLINE", "1")
    with pytest.raises(ModelNotAvailable) as info:
        fclip.resolve_clip("ViT-B-32:openai")
    message = one_line_error(info)
    dest = fclip.pretrained_cache_path("ViT-B-32", "openai")
    assert str(tmp_path / "cache") in str(dest) and str(dest) in message
    assert "https://" in message and "ViT-B-32:PATH" in message
    assert not dest.exists()


def test_arch_tag_with_downloads_on_but_no_network_is_one_line_too(tmp_path, monkeypatch):
    """Downloads allowed but the host unreachable (as on our machines): still one line naming where to put it."""
    import urllib.request

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setenv("FACEBATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FACEBATCH_OFFLINE", raising=False)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(ModelNotAvailable) as info:
        fclip.resolve_clip("ViT-B-32:openai")
    message = one_line_error(info)
    assert str(fclip.pretrained_cache_path("ViT-B-32", "openai")) in message


def test_a_cached_download_that_changed_is_a_checkpoint_error(tmp_path, monkeypatch):
    from facebatch.nets import cache

    monkeypatch.setenv("FACEBATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FACEBATCH_OFFLINE", "1")
    dest = fclip.pretrained_cache_path("ViT-B-32", "openai")
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"weights as downloaded")
    cache.sidecar_path(dest).write_text(cache.sha256_of(dest) + "\n")
    dest.write_bytes(b"weights changed since")
    with pytest.raises(CheckpointError) as info:
        fclip.resolve_clip("ViT-B-32:openai")
    assert "delete it" in one_line_error(info)


def test_a_tampered_file_is_a_checkpoint_error(tiny, tmp_path):
    path = tmp_path / "t.safetensors"
    path.write_bytes(tiny[1].read_bytes())
    ref = fclip.resolve_clip(str(path))
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one byte of the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        fclip.load_clip(ref)
    assert "sha256" in one_line_error(info)


def test_a_file_whose_weights_do_not_fit_its_config_is_a_checkpoint_error(tiny, tmp_path):
    other = dict(TINY_CFG, embed_dim=8)
    path = fclip.write_clip(tmp_path / "bad.safetensors", tiny[0], other)
    with pytest.raises(CheckpointError) as info:
        fclip.load_clip(str(path))
    one_line_error(info)


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("NoSuchArch-B-32:openai", "no architecture 'NoSuchArch-B-32'"),
        ("ViT-B-32:nosuchtag", "no pretrained tag 'nosuchtag'"),
        ("not-a-clip-at-all", "unknown CLIP"),
        ("celeba64", "is a generator"),
        ("ViT-B-32:/no/such/weights.safetensors", "no such weights file"),
    ],
)
def test_unknown_arch_tag_or_name_is_an_input_error(spec, needle, monkeypatch, tmp_path):
    monkeypatch.setenv("FACEBATCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FACEBATCH_OFFLINE", "1")
    with pytest.raises(InputError) as info:
        fclip.resolve_clip(spec)
    assert needle in one_line_error(info)


def test_a_safetensors_that_is_not_a_facebatch_clip_is_an_input_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(InputError) as info:
        fclip.resolve_clip(str(path))
    assert "ARCH:" in one_line_error(info)


@pytest.mark.parametrize(
    "arch, tag, url",
    [
        (
            "ViT-B-32",
            "openai",
            "huggingface.co/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors",
        ),
        ("ViTamin-S", "datacomp1b", "huggingface.co/jienengchen/ViTamin-S/resolve/main/pytorch_model.bin"),
    ],
)
def test_pretrained_urls_follow_open_clips_hub_entries(arch, tag, url, tmp_path, monkeypatch):
    """open_clip's hf_hub is "org/repo/" (its default file name) or "org/repo/file": both become one URL."""
    monkeypatch.setenv("FACEBATCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("FACEBATCH_OFFLINE", "1")
    with pytest.raises(ModelNotAvailable) as info:
        fclip.resolve_clip(f"{arch}:{tag}")
    assert f"https://{url} " in one_line_error(info)


def test_arch_with_local_weights_builds_that_architecture(tmp_path, monkeypatch):
    """ARCH:/path/state_dict: open_clip's own architecture with local weights (here a random RN50's); a
    tokenizer that cannot be loaded (a Hugging Face one, offline or without transformers) is one line."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("RN50")
    from safetensors.torch import save_file

    path = tmp_path / "rn50.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    clip = fclip.load_clip(f"RN50:{path}")
    assert clip.image_size == 224 and len(clip.templates) == 80
    x = images(1, 64, 64)
    with torch.no_grad():
        expected = F.normalize(model.eval().encode_image(clip.preprocess(x)), dim=-1)
    assert np.allclose(clip.encode_images(x).numpy(), expected.numpy(), atol=1e-5)

    def no_tokenizer(name):
        raise ModuleNotFoundError("No module named 'transformers'")

    monkeypatch.setattr(open_clip, "get_tokenizer", no_tokenizer)
    with pytest.raises(ModelNotAvailable) as info:
        fclip.load_clip(f"RN50:{path}")
    assert "tokenizer of RN50" in one_line_error(info) and "transformers" in str(info.value)


def test_a_clip_file_that_would_run_code_is_refused_in_one_line_without_torchs_advice(tmp_path):
    import os

    class Touch:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'MARKER'}",)

    torch.save({"state_dict": Touch()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as info:
        fclip.load_clip(f"RN50:{tmp_path / 'evil.pt'}")
    message = one_line_error(info)
    assert "would run code" in message and "weights_only" not in message and "Re-running" not in message, message
    assert not (tmp_path / "MARKER").exists()


def _with_config(tmp_path, model, **changes):
    """A file of the tiny CLIP's weights under a facebatch-clip config with `changes` applied (model_cfg__x and
    extra__x reach inside)."""
    import copy
    import json

    from safetensors.torch import save_file

    config = {
        "format": fclip.FORMAT_NAME,
        "format_version": fclip.FORMAT_VERSION,
        "model_cfg": copy.deepcopy(TINY_CFG),
        "extra": {"templates": TEMPLATES, "mean": [0.5] * 3, "std": [0.5] * 3},
    }
    for key, value in changes.items():
        where, *path = key.split("__")
        target = config
        for part in [where, *path][:-1]:
            target = target[part]
        target[([where, *path])[-1]] = value
    path = tmp_path / "c.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), {"facebatch": json.dumps(config)})
    return path


BAD_CLIP_CONFIGS = {
    "version as text": (dict(format_version="abc"), "format_version 'abc'"),
    "version too new": (dict(format_version=99), "format_version 99"),
    "version as float": (dict(format_version=1.5), "format_version 1.5"),
    "two-value mean": (dict(extra__mean=[0.5, 0.5]), "extra.mean must be 3"),
    "nan mean": (dict(extra__mean=[float("nan")] * 3), "extra.mean must be 3"),
    "zero std": (dict(extra__std=[0.5, 0.0, 0.5]), "extra.std must be 3"),
    "text std": (dict(extra__std="0.5"), "extra.std must be 3"),
    "extra a list": (dict(extra=[1, 2]), "extra must be a JSON object"),
    "templates a text": (dict(extra__templates="a photo of {}"), "extra.templates must be a list"),
    "template with two slots": (dict(extra__templates=["a {} of {}"]), "one '{}'"),
    "template with a named slot": (dict(extra__templates=["{} {name}"]), "one '{}'"),
    "template a number": (dict(extra__templates=[7]), "not a text"),
    "model_cfg a list": (dict(model_cfg=[1, 2]), "model_cfg: the stored CLIP config is a list"),
    "model_cfg missing": (dict(model_cfg=None), "model_cfg: the stored CLIP config is a NoneType"),
    "huge width": (dict(model_cfg__vision_cfg__width=2**30), "vision_cfg.width must be in"),
    "huge depth": (dict(model_cfg__text_cfg__layers=10**6), "text_cfg.layers must be in"),
    "width as text": (dict(model_cfg__embed_dim="16"), "embed_dim must be an integer"),
    "unknown setting": (dict(model_cfg__evil=1), "unknown architecture setting 'evil'"),
    "a Hugging Face text tower": (dict(model_cfg__text_cfg__hf_model_name="bert-base-uncased"), "hf_model_name"),
    "a timm image tower": (dict(model_cfg__vision_cfg__timm_model_name="vit_huge"), "timm_model_name"),
    "a vocabulary smaller than the tokenizer's": (dict(model_cfg__text_cfg__vocab_size=10), "vocab_size"),
    "resnet layers garbage": (dict(model_cfg__vision_cfg__layers=[1, "x"]), "4 stage depths"),
    "heads that do not divide the width": (dict(model_cfg__text_cfg__heads=3), "cannot build the CLIP"),
    "shapes that disagree with the weights": (dict(model_cfg__embed_dim=8), "do not fit"),
}


@pytest.mark.parametrize("case", sorted(BAD_CLIP_CONFIGS))
def test_facebatch_clip_metadata_is_checked_like_generator_metadata(tiny, tmp_path, case):
    """Whatever a facebatch-clip file's metadata holds, loading it is one CheckpointError line naming the file and
    the field, fast (nothing allocated from an unchecked setting); the client's resolve already refuses what the
    metadata alone shows."""
    import time

    changes, needle = BAD_CLIP_CONFIGS[case]
    path = _with_config(tmp_path, tiny[0], **changes)
    started = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        fclip.load_clip(str(path))
    message = one_line_error(info)
    assert str(path) in message and needle in message, message
    assert time.perf_counter() - started < 5
    if case not in ("heads that do not divide the width", "shapes that disagree with the weights"):
        with pytest.raises(CheckpointError, match="not a usable CLIP"):
            fclip.resolve_clip(str(path))


def test_facebatch_clip_metadata_that_is_sound_loads(tiny, tmp_path):
    path = _with_config(tmp_path, tiny[0], extra__templates=["{}", "a photo of {}", "plain"], extra__std=[1, 2, 3])
    clip = fclip.load_clip(str(path))
    assert clip.templates == ("{}", "a photo of {}", "plain") and clip.image_size == 32
    assert fclip.config_problem(fclip.read_clip_config(path)) is None
