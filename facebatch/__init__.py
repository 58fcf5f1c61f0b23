"""facebatch: batch StyleGAN2 projection, editing and reconstruction scoring for face datasets.

Every batch command is a function named like it (`facebatch.project`, `.sample`, `.label`, `.augment`, ...),
beside the models and tables a notebook wants (`load_generator`, `read_latents`, `edit_latents`, ...);
they load on first use, so `facebatch --help` does not import torch.
"""

__version__ = "0.1.0"

__all__ = [
    "align",
    "augment",
    "edit_latents",
    "encode",
    "fit_boundaries",
    "label",
    "list_models",
    "list_presets",
    "load_boundaries",
    "load_encoder",
    "load_generator",
    "mix",
    "nada",
    "project",
    "read_latents",
    "sample",
    "score",
    "train_encoder",
]


def __getattr__(name: str):
    if name in __all__:
        from facebatch import public

        return getattr(public, name)
    raise AttributeError(f"module 'facebatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
