"""What a pair writes under OUT/images/<app>/<pair_id>/."""

from __future__ import annotations

import io

from facebatch.pipeline.rundir import IMAGES, RunDir
from facebatch.stages.mix.pairs import safe_pair_id


def pair_dir(app: str, pair_id: str) -> str:
    return f"{IMAGES}/{app}/{pair_id}"


def save(run: RunDir, rel: str, image) -> str:
    from facebatch.pipeline.images import save_image

    save_image(image.clamp(-1, 1), run.root / rel)
    return rel


def save_inputs(run: RunDir, app: str, pair, renders: dict | None = None) -> None:
    """a.png, b.png (neutral.png) as the generator saw them (or the code's render when no image exists)."""
    folder = pair_dir(app, pair.item["image_id"])
    for name, side in pair.sides.items():
        image = side.image if side.image is not None else (renders or {}).get(name)
        if image is not None:
            save(run, f"{folder}/{name}.png", image)


def file_label(label: str) -> str:
    return safe_pair_id(label.replace(" ", "-").replace(",", "_"))


def animation(run: RunDir, folder: str, images, kind: str) -> str | None:
    """morph.gif / morph.webp: forward then back, looping; written atomically."""
    from facebatch.pipeline.atomic import atomic_write_bytes
    from facebatch.pipeline.images import tensor_to_pil

    if kind == "none":
        return None
    frames = [tensor_to_pil(img.clamp(-1, 1)) for img in images]
    frames = frames + frames[-2:0:-1]
    buf = io.BytesIO()
    frames[0].save(buf, format=kind.upper(), save_all=True, append_images=frames[1:], duration=100, loop=0)
    rel = f"{folder}/morph.{kind}"
    atomic_write_bytes(run.root / rel, buf.getvalue())
    return rel


def render_codes(state, ws, noise):
    """The generator's images of W+ codes, with the given noise maps or the preset's noise mode."""
    from facebatch.edit import mixing as mx

    return mx.render(state.G, ws, noise, noise_mode=state.projector.config.noise_mode)
