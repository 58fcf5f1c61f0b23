"""facebatch: batch StyleGAN2 projection, editing and reconstruction scoring for face datasets.

The functions a notebook wants are importable from here (`from facebatch import project_images`);
they load on first use, so `facebatch --help` does not import torch.
"""

__version__ = "0.1.0"

__all__ = [
    "edit_latents",
    "encode",
    "fit_boundaries",
    "load_boundaries",
    "load_encoder",
    "load_generator",
    "mix",
    "project_images",
    "read_latents",
    "shift_generator",
    "train_encoder",
]


def __getattr__(name: str):
    if name in __all__:
        from facebatch import public

        return getattr(public, name)
    raise AttributeError(f"module 'facebatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
