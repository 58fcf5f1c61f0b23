"""Typed stage configs and runtimes: a run's `_run.json` and config hash are the JSON its record writes.

A run resumes only while its config hash is the one recorded, so each stage's record must write exactly
the dict the stage wrote before it had a record: the same keys (optional ones left out as before), the
same values, the same hash. The records are built here through the stages' own spec builders with stub
networks (no weights), and records read back from `_run.json` files written before must write themselves
out unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from facebatch.invert.presets import ProjectionConfig
from facebatch.nets.predictors import PredictorRef
from facebatch.pipeline.plan import canonical_json, config_hash
from facebatch.pipeline.records import JsonRecord, WorkerSetup, record_field

SHA = "ab" * 32
ITEMS = [{"image_id": "a.png", "path": "/x/a.png"}]


def stub_nets():
    G = SimpleNamespace(img_resolution=64, num_ws=10, w_dim=256, z_dim=256)
    return SimpleNamespace(
        name="stub",
        sha256=SHA,
        format="native",
        G=G,
        D=None,
        path="/x/stub.safetensors",
        location="/x/stub.safetensors",
    )


def same_json(record, expected: dict) -> None:
    """`record` writes `expected` (key for key, value for value) and reads itself back from it."""
    got = record.to_json()
    assert canonical_json(got) == canonical_json(expected)
    assert type(record).from_json(got) == record
    assert type(record).from_json(expected).to_json() == expected


# -- the record base ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Inner(JsonRecord):
    name: str
    size: int = 1


@dataclass(frozen=True)
class _Outer(JsonRecord):
    mode: str = record_field(json_name="from")
    shape: tuple[int, int] = record_field()
    inners: tuple[_Inner, ...] = record_field()
    nested: _Inner | None = record_field(None, omit_none=True)
    kept: str | None = None


def test_a_record_round_trips_through_json_with_renamed_and_optional_keys():
    outer = _Outer("render", (2, 3), (_Inner("a"), _Inner("b", 2)))
    assert outer.to_json() == {
        "from": "render",
        "shape": [2, 3],
        "inners": [{"name": "a", "size": 1}, {"name": "b", "size": 2}],
        "kept": None,  # None is recorded unless the field says otherwise
    }
    assert _Outer.from_json(outer.to_json()) == outer
    with_nested = _Outer("source", (1, 1), (), nested=_Inner("n"))
    assert with_nested.to_json()["nested"] == {"name": "n", "size": 1}
    assert _Outer.from_json(with_nested.to_json()) == with_nested
    with pytest.raises(ValueError, match="no field 'mode'"):
        _Outer.from_json({**outer.to_json(), "mode": "x"})  # the JSON key is "from"


def test_a_worker_setup_moves_to_the_worker_device_keeping_the_rest():
    setup = WorkerSetup(_Inner("c"), _Inner("r"), "cuda:1", 2)
    assert setup.on_device("cuda") == WorkerSetup(_Inner("c"), _Inner("r"), "cuda", 2)


# -- each stage's record, built by its spec builder, is the dict the stage wrote before ----------------------


def test_sample_records_what_sample_recorded():
    from facebatch.stages.sample import build_sample_spec

    spec = build_sample_spec(
        seeds=[1, 2], out_dir=Path("/x/s"), nets=stub_nets(), truncation_psi=0.7, truncation_cutoff=4,
        noise_mode="random", images=False, shard_size=5, batch_size=2,
    )  # fmt: skip
    facts = {
        "generator": "stub",
        "generator_sha256": SHA,
        "truncation_psi": 0.7,
        "truncation_cutoff": 4,
        "noise_mode": "random",
    }
    same_json(spec.config, {**facts, "images": False})
    same_json(spec.runtime, {"generator_path": "/x/stub.safetensors", "batch_size": 2})
    assert spec.metadata == facts
    assert config_hash("sample", "latents", spec.config.to_json()) == (
        "43da403db5b51904c617b16c8ea8139f6b1c7e73e66b162be32b6dcd519bc797"
    )


def test_align_records_what_align_recorded():
    from facebatch.stages.align import build_align_spec

    spec = build_align_spec(
        items=ITEMS, out_dir=Path("/x/a"), size=256, backend="dlib", faces="all", min_score=0.5, shard_size=4
    )
    recipe = {"name": "ffhq", "transform_oversample": 4, "pad": True}
    same_json(spec.config, {"size": 256, "backend": "dlib", "faces": "all", "min_score": 0.5, "recipe": recipe})
    same_json(spec.runtime, {})
    assert config_hash("align", "faces", spec.config.to_json()) == (
        "f23ca1b02e4e24c5492522d67148b5707f73fae47ae27963562b448f7ae78a43"
    )


@pytest.mark.parametrize("with_encoder", [False, True])
def test_project_records_what_project_recorded(with_encoder):
    from facebatch.stages.project import build_project_spec

    projection = ProjectionConfig(name="fast", steps=7, perceptual="none")
    encoder = (
        SimpleNamespace(sha256="cd" * 32, images_seen=1000, path="/x/enc.safetensors", location="/x/enc.safetensors")
        if with_encoder
        else None
    )
    options = dict(align="dlib", save_reconstructions=True, save_noise=True) if with_encoder else {}
    spec = build_project_spec(
        items=ITEMS, out_dir=Path("/x/p"), nets=stub_nets(), projection=projection, seed=3, shard_size=2,
        batch_size=4 if with_encoder else None, encoder=encoder, **options,
    )  # fmt: skip
    generator = {
        "name": "stub",
        "sha256": SHA,
        "format": "native",
        "resolution": 64,
        "num_ws": 10,
        "w_dim": 256,
        "has_discriminator": False,
    }
    expected = {
        "generator": generator,
        "projection": projection.to_dict(),
        "seed": 3,
        "align": options.get("align"),
        "save_reconstructions": with_encoder,
        "save_noise": with_encoder,
    }
    if with_encoder:  # only then: a run without one keeps the key set it always had
        expected["encoder"] = {"sha256": "cd" * 32, "images_seen": 1000}
    same_json(spec.config, expected)
    runtime = {
        "generator_path": "/x/stub.safetensors",
        "generator_sha256": SHA,
        "batch_size": 4 if with_encoder else None,
        "encoder_path": "/x/enc.safetensors" if with_encoder else None,
    }
    same_json(spec.runtime, runtime)
    assert spec.steps_per_item == 7


@pytest.mark.parametrize("clip", [False, True])
def test_label_records_what_label_recorded(clip):
    from facebatch.stages.label import LabelInput, build_label_spec

    options = {"prompts": [["smile", "a smiling face", "a serious face"]]} if clip else {}
    ref = PredictorRef(Path("/x/p.safetensors"), "p", "clip" if clip else "attribute-predictor", "ef" * 32, options)
    spec = build_label_spec(
        source=LabelInput("folder", "source", ITEMS, Path("/x/imgs")), predictor=ref, names=["Smiling", "Male"],
        out_dir=Path("/x/l"), batch_size=3,
    )  # fmt: skip
    predictor = {"name": "p", "kind": ref.kind, "sha256": "ef" * 32, **({"options": options} if clip else {})}
    expected = {
        "input": "/x/imgs",
        "input_kind": "folder",
        "from": "source",
        "predictor": predictor,
        "attributes": ["Smiling", "Male"],
    }
    same_json(spec.config, expected)
    same_json(spec.runtime, {"predictor_path": "/x/p.safetensors", "batch_size": 3})
    assert config_hash("label", "labels", spec.config.to_json()) == (
        "e6c8af71c9397f41a157fa3f2528bd55596144d673798b35226c1755d2c77700"
        if clip
        else "c763af587811c5afce8efe2e1ebe0fec32207d33bc2864782fc63782db31cf6c"
    )


@pytest.mark.parametrize(
    "app, params, recorded",
    [
        ("morph", {"frames": 3}, {"frames": 3}),
        ("crossover", {"layers": "0-3"}, {"layers": [0, 1, 2, 3], "mask": "left"}),
        ("expression", {"alpha_sweep": True}, {"alpha_sweep": True, "alpha_layers": [3, 4]}),
    ],
)
def test_mix_records_what_mix_recorded(tmp_path, app, params, recorded):
    from facebatch.stages.mix import build_mix_spec

    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b\n/x/a.png,/x/b.png\n")
    projection = ProjectionConfig(name="fast", steps=2)
    spec = build_mix_spec(
        app=app, pairs_csv=pairs, out_dir=tmp_path / "m", nets=stub_nets(), projection=projection, params=params,
        seed=5, shard_size=2, batch_size=4,
    )  # fmt: skip
    expected = {
        "app": app,
        "params": recorded,
        "projection": projection.to_dict(),
        "seed": 5,
        "pairs": str(pairs.resolve()),
        "latents": [],
        "generator": {"name": "stub", "sha256": SHA, "resolution": 64},
        "latent_shape": [10, 256],
    }
    same_json(spec.config, expected)
    same_json(spec.runtime, {"generator_path": "/x/stub.safetensors", "generator_sha256": SHA, "batch_size": 4})


# Each app's options as the command line passes them by default, and a library caller's subsets, with the
# params dict the run recorded (key order, value types) before the options became records: the dict the
# app's client check left, captured from that code.
MASK_PNG = "<a mask PNG>"  # stands for the test's file, which a check resolves to its absolute path
MIX_PARAMS_RECORDED = [
    ("morph", {"frames": 8, "animation": "gif"}, {"frames": 8, "animation": "gif"}),
    ("crossover", {"mask": None, "layers": None}, {"mask": "left", "layers": None}),
    ("inpaint", {"mask": None}, {"mask": "center"}),
    ("style", {"mask": None, "style_weight": 0.2}, {"mask": "right", "style_weight": 0.2}),
    (
        "expression",
        {"alpha_layers": None, "alpha": None, "alpha_sweep": False},
        {"alpha_layers": [3, 4], "alpha": None, "alpha_sweep": False},
    ),
    ("morph", {}, {}),
    ("morph", {"animation": "none", "frames": 3}, {"animation": "none", "frames": 3}),
    ("crossover", {"mask": None, "layers": "4"}, {"mask": "left", "layers": [0, 1, 2, 3]}),
    ("crossover", {"layers": "0-2,5"}, {"layers": [0, 1, 2, 5], "mask": "left"}),
    ("crossover", {"mask": MASK_PNG, "layers": None}, {"mask": MASK_PNG, "layers": None}),
    ("inpaint", {"mask": "mouth"}, {"mask": "mouth"}),
    ("style", {"style_weight": 1}, {"style_weight": 1, "mask": "right"}),
    (
        "expression",
        {"alpha_layers": None, "alpha": "0,0,0,1,1,0,0,0,0,0.5", "alpha_sweep": False},
        {"alpha_layers": None, "alpha": [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.5], "alpha_sweep": False},
    ),
    (
        "expression",
        {"alpha": [0, 0.25, 0, 0, 0, 0, 0, 0, 0, 1]},
        {"alpha": [0.0, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], "alpha_layers": None},
    ),
    (
        "expression",
        {"alpha_layers": "2-5", "alpha": None, "alpha_sweep": False},
        {"alpha_layers": [2, 3, 4, 5], "alpha": None, "alpha_sweep": False},
    ),
    ("expression", {"alpha_sweep": True}, {"alpha_sweep": True, "alpha_layers": [3, 4]}),
]


@pytest.mark.parametrize("app, given, recorded", MIX_PARAMS_RECORDED)
def test_mix_params_record_the_dict_the_app_check_left(tmp_path, app, given, recorded):
    """Byte for byte, key order and value types too (an int style weight stays an int): a run started before
    the options were typed must resume."""
    from PIL import Image

    from facebatch.stages.mix import build_mix_spec

    mask_png = tmp_path / "mask.png"
    Image.new("L", (8, 8), 255).save(mask_png)
    given, recorded = (
        {k: str(mask_png.resolve()) if v == MASK_PNG else v for k, v in d.items()} for d in (given, recorded)
    )
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b\n/x/a.png,/x/b.png\n")
    projection = ProjectionConfig(name="fast", steps=2)
    spec = build_mix_spec(
        app=app, pairs_csv=pairs, out_dir=tmp_path / "m", nets=stub_nets(), projection=projection,
        params=given, seed=5, shard_size=2, batch_size=4,
    )  # fmt: skip
    written = spec.config.to_json()
    assert json.dumps(written["params"]) == json.dumps(recorded)
    assert list(written) == ["app", "params", "projection", "seed", "pairs", "latents", "generator", "latent_shape"]
    same_json(spec.config, {**written, "params": recorded})


def test_mix_params_hold_only_the_options_given_and_read_the_rest_as_defaults():
    from facebatch.stages.mix.params import CrossoverParams, MorphParams

    given_none = MorphParams.from_json({})
    assert (given_none.frames, given_none.animation, given_none.to_json()) == (8, "gif", {})
    assert MorphParams(frames=3).to_json() == {"frames": 3, "animation": "gif"}  # built directly: every option
    layers = CrossoverParams.from_json({"layers": [0, 1], "mask": "left"})
    assert layers.layers == (0, 1) and layers.combines_codes_only and list(layers.to_json()) == ["layers", "mask"]
    assert not CrossoverParams.from_json({"mask": "left", "layers": None}).combines_codes_only
    for bad in ({"frame": 3}, {"recorded": ["frames"]}):
        with pytest.raises(ValueError, match="has no field"):
            MorphParams.from_json(bad)


# -- records that runs wrote before these classes existed read back and write out unchanged -----------------

CELEBA64 = "41452ee2f3b6837c9ad26736d0ffde42528d88e15340f93f3f1daeac5a2d9cda"
AUGMENT_EDITS = {
    "attributes": ["Male"],
    "boundaries": "/m/celeba64/boundaries.json",
    "boundaries_used": {"Eyeglasses": "2e59e0af7a5785db", "Male": "d35f31355f068360"},
    "conditions": ["Eyeglasses"],
    "edit_layers": [0, 1, 2, 3],
    "generator_sha256": CELEBA64,
    "latent_column": "w",
    "latent_shape": [10, 256],
    "latents": ["/r/latents/part-00000.parquet", "/r/latents/part-00001.parquet"],
    "layers_label": "0-3",
    "limit": 2,
    "mode": "absolute",
    "strengths": [-2.0, 2.0],
    "use_saved_noise": True,
}
AUGMENT_SHIFTS = {
    **AUGMENT_EDITS,
    "attributes": [],
    "boundaries": None,
    "boundaries_used": {},
    "conditions": [],
    "edit_layers": None,
    "layers_label": "boundary",
    "limit": None,
    "shifts": [{"name": "shift", "sha256": "04" * 32}],
}
LABEL_RENDER = {
    "attributes": ["Bald", "Smiling"],
    "from": "render",
    "generator_sha256": CELEBA64,
    "input": "/r/sample",
    "input_kind": "sample",
    "noise_mode": "const",
    "predictor": {"kind": "attribute-predictor", "name": "celeba-attrs", "sha256": "52" * 32},
}
LABEL_CLIP = {
    "attributes": ["smile"],
    "from": "source",
    "input": "/r/faces",
    "input_kind": "folder",
    "predictor": {
        "kind": "clip",
        "name": "celeba-clip",
        "options": {"clip": {"arch": None, "quick_gelu": False, "spec": "c"}, "prompts": [["smile", "a", "b"]]},
        "sha256": "74" * 32,
    },
}
PROJECT_ENCODER = {
    "align": None,
    "encoder": {"images_seen": 80000, "sha256": "7f" * 32},
    "generator": {
        "format": "facebatch-safetensors",
        "has_discriminator": True,
        "name": "celeba64",
        "num_ws": 10,
        "resolution": 64,
        "sha256": CELEBA64,
        "w_dim": 256,
    },
    "projection": ProjectionConfig(name="encoder", init="encoder", steps=0).to_dict(),
    "save_noise": False,
    "save_reconstructions": False,
    "seed": 0,
}
MIX_EXPRESSION = {
    "app": "expression",
    "generator": {"name": "celeba64", "resolution": 64, "sha256": CELEBA64},
    "latent_shape": [10, 256],
    "latents": ["/r/project"],
    "pairs": "/r/pairs.csv",
    "params": {"alpha": None, "alpha_layers": [3, 4], "alpha_sweep": True},
    "projection": ProjectionConfig().to_dict(),
    "seed": 0,
}


def _records():
    from facebatch.stages.augment import AugmentConfig, AugmentRuntime
    from facebatch.stages.label import LabelConfig, LabelRuntime
    from facebatch.stages.mix.config import MixConfig, MixRuntime
    from facebatch.stages.project import ProjectConfig, ProjectRuntime

    g = "/m/celeba64/celeba64.safetensors"
    return [
        (AugmentConfig, AUGMENT_EDITS),
        (AugmentConfig, AUGMENT_SHIFTS),
        (AugmentRuntime, {"batch_size": 3, "generator_path": g, "sheet_sources": ["s.png"], "shift_paths": {}}),
        (AugmentRuntime, {"batch_size": 8, "generator_path": g, "sheet_sources": [], "shift_paths": {"shift": "/s"}}),
        (LabelConfig, LABEL_RENDER),
        (LabelConfig, LABEL_CLIP),
        (LabelRuntime, {"batch_size": 32, "generator_path": g, "predictor_path": "/m/p.safetensors"}),
        (LabelRuntime, {"batch_size": 32, "predictor_path": "/m/p.safetensors"}),
        (ProjectConfig, PROJECT_ENCODER),
        (ProjectRuntime, {"batch_size": None, "encoder_path": "/e", "generator_path": g, "generator_sha256": CELEBA64}),
        (MixConfig, MIX_EXPRESSION),
        (MixRuntime, {"batch_size": 8, "generator_path": g, "generator_sha256": CELEBA64}),
    ]


def test_records_written_by_earlier_runs_read_back_and_write_out_unchanged():
    for cls, recorded in _records():
        record = cls.from_json(recorded)
        assert canonical_json(record.to_json()) == canonical_json(recorded), cls.__name__
        assert cls.from_json(record.to_json()) == record
