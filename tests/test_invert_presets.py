"""Presets load by name or file, overrides are typed and checked, and the nvlabs schedule is the official one."""

import math

import pytest

from facebatch.errors import InputError
from facebatch.invert.presets import PRESETS, load_preset, parse_overrides
from facebatch.invert.schedules import lr_at, w_noise_scale_at


def test_required_presets_ship_with_the_package():
    assert {"nvlabs", "image2stylegan", "image2stylegan++", "fast", "default"} <= set(PRESETS)
    for name in PRESETS:
        assert load_preset(name).name == name


def test_nvlabs_preset_is_the_official_projector():
    cfg = load_preset("nvlabs")
    assert (cfg.latent_space, cfg.steps, cfg.lr, cfg.lr_rampup, cfg.lr_rampdown) == ("w", 1000, 0.1, 0.05, 0.25)
    assert (cfg.w_noise_factor, cfg.w_noise_ramp, cfg.noise_regularize) == (0.05, 0.75, 1e5)
    assert (cfg.noise_optimization, cfg.noise_renormalize, cfg.mse_weight) == ("joint", True, 0.0)
    assert (cfg.w_avg_samples, cfg.w_avg_seed, cfg.beta1, cfg.beta2) == (10000, 123, 0.9, 0.999)
    assert cfg.perceptual == "lpips-vgg"


def test_image2stylegan_plus_plus_is_w_plus_then_noise():
    cfg = load_preset("image2stylegan++")
    assert cfg.latent_space == "w+" and cfg.lr == 0.01 and cfg.mse_weight > 0 and cfg.perceptual_weight > 0
    assert cfg.noise_optimization == "sequential" and cfg.noise_steps > 0
    assert cfg.total_steps == cfg.steps + cfg.noise_steps


# Official formulas (stylegan2-ada-pytorch projector.py), written out by hand at chosen t:
# lr = 0.1 * (0.5 - 0.5 cos(pi * min(1, (1 - t) / 0.25))) * min(1, t / 0.05)
@pytest.mark.parametrize(
    "t,expected",
    [
        (0.0, 0.0),
        (0.01, 0.1 * 0.2),  # ramp-up: t / 0.05
        (0.025, 0.05),
        (0.05, 0.1),  # plateau
        (0.5, 0.1),
        (0.75, 0.1),  # ramp-down starts
        (0.875, 0.1 * 0.5),  # cos(pi/2) = 0
        (0.9, 0.1 * (0.5 - 0.5 * math.cos(math.pi * 0.4))),
        (0.999, 0.1 * (0.5 - 0.5 * math.cos(math.pi * 0.004))),
    ],
)
def test_nvlabs_lr_schedule(t, expected):
    cfg = load_preset("nvlabs")
    assert lr_at(t, cfg.lr, cfg.lr_rampup, cfg.lr_rampdown) == pytest.approx(expected, abs=1e-12)


# w_noise_scale = w_std * 0.05 * max(0, 1 - t / 0.75)^2
@pytest.mark.parametrize("t,factor", [(0.0, 1.0), (0.375, 0.25), (0.6, 0.04), (0.75, 0.0), (0.9, 0.0)])
def test_nvlabs_w_noise_schedule(t, factor):
    cfg = load_preset("nvlabs")
    w_std = 2.5
    got = w_noise_scale_at(t, w_std, cfg.w_noise_factor, cfg.w_noise_ramp)
    assert got == pytest.approx(w_std * 0.05 * factor, abs=1e-12)


def test_zero_ramp_lengths_give_a_constant_lr():
    cfg = load_preset("image2stylegan")
    assert [lr_at(t, cfg.lr, cfg.lr_rampup, cfg.lr_rampdown) for t in (0.0, 0.5, 0.99)] == [0.01] * 3
    assert w_noise_scale_at(0.0, 3.0, cfg.w_noise_factor, cfg.w_noise_ramp) == 0.0


def test_overrides_are_typed_from_command_line_strings():
    cfg = load_preset(
        "nvlabs", parse_overrides(["steps=25", "lr=0.02", "noise_renormalize=false", "perceptual=none", "mse_weight=1"])
    )
    assert (cfg.steps, cfg.lr, cfg.noise_renormalize, cfg.perceptual, cfg.mse_weight) == (25, 0.02, False, "none", 1.0)
    assert cfg.to_dict()["steps"] == 25


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"stepz": 3}, "unknown projection setting 'stepz'"),
        ({"steps": "many"}, "steps wants an integer"),
        ({"latent_space": "z"}, "latent_space must be one of"),
        ({"perceptual": "vgg"}, "perceptual must be one of"),
        ({"steps": -1}, "steps must be >= 0"),
        ({"anomaly_lambda": 2}, "anomaly_lambda must be in [0, 1]"),
        ({"perceptual": "none", "mse_weight": 0}, "leaves no loss"),
        ({"autocast": "fp8"}, "autocast must be one of auto, none, bf16, fp16"),
    ],
)
def test_bad_settings_are_one_line_user_errors(overrides, message):
    with pytest.raises(InputError) as exc:
        load_preset("nvlabs", overrides)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_yaml_file_with_base_inherits_and_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: nvlabs\nsteps: 300\nlatent_space: w+\n")
    cfg = load_preset(str(path), {"lr": "0.05"})
    assert (cfg.name, cfg.steps, cfg.latent_space, cfg.lr, cfg.w_noise_factor) == ("mine", 300, "w+", 0.05, 0.05)


def test_unknown_preset_and_bad_yaml_are_user_errors(tmp_path):
    with pytest.raises(InputError, match="unknown preset 'nope'"):
        load_preset("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(InputError, match="must be a YAML mapping"):
        load_preset(str(bad))
    with pytest.raises(InputError, match="--set wants key=value"):
        parse_overrides(["steps"])


def test_a_preset_file_is_a_small_regular_file_naming_each_setting_once(tmp_path):
    """A preset file is read as the prompts files are: a FIFO or a device is refused without waiting on it, a
    setting given twice is refused by name (YAML would keep the last), and a sound file still loads."""
    import os

    os.mkfifo(tmp_path / "fifo.yaml")
    twice = tmp_path / "twice.yaml"
    twice.write_text("base: fast\nsteps: 30\nlr: 0.05\nsteps: 300\n")
    for path, message in (
        (tmp_path / "fifo.yaml", "is a FIFO, not a regular file"),
        ("/dev/zero", "is a character device, not a regular file"),
        (tmp_path, "is a folder, not a regular file"),
        (twice, "'steps' is given twice (lines 2 and 4)"),
    ):
        with pytest.raises(InputError) as info:
            load_preset(str(path))
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
    twice.write_text("base: fast\nsteps: 30\nlr: 0.05\n")
    assert (load_preset(str(twice)).steps, load_preset(str(twice)).lr) == (30, 0.05)


def test_default_keeps_everything_in_the_latent():
    # Chosen on real faces (see configs/presets/default.yaml): the Image2StyleGAN W+ loss with the NVlabs
    # lr schedule beat its constant lr 0.01 by 3 dB at 500 steps; w noise cost ~3 dB; no noise maps take
    # detail away from the latent.
    cfg = load_preset("default")
    assert (cfg.latent_space, cfg.noise_optimization, cfg.w_noise_factor) == ("w+", "none", 0.0)
    assert (cfg.lr, cfg.lr_rampup, cfg.lr_rampdown, cfg.perceptual) == (0.1, 0.05, 0.25, "stlpips-vgg")
    assert cfg.mse_weight > 0 and cfg.perceptual_weight > 0


def test_a_generator_without_a_preset_gets_the_registrys_choice_for_it(monkeypatch):
    from types import SimpleNamespace

    from facebatch.invert.presets import DEFAULT_PRESET, default_preset_for, projection_config
    from facebatch.nets import registry

    entry = registry.ModelEntry(
        name="g", url="", resolution=64, format="facebatch-safetensors", sha256="ab" * 32, default_preset="fast"
    )
    monkeypatch.setattr(registry, "models", lambda: {"g": entry})
    ours, other = SimpleNamespace(sha256="ab" * 32), SimpleNamespace(sha256="cd" * 32)
    assert default_preset_for(ours) == "fast" and default_preset_for(other) == DEFAULT_PRESET
    assert projection_config(None, None, None, ours).name == "fast"
    assert projection_config("nvlabs", None, None, ours).name == "nvlabs"  # a named preset always wins
    assert projection_config(None, 7, None, other).name == DEFAULT_PRESET
