"""StyleGAN-NADA: shift a generator to a text-described domain with a directional CLIP loss.

- `loss`: the text direction and the directional / global CLIP losses, summed over weighted CLIP models.
- `layers`: which synthesis layers a W+ row drives, the frozen parts, adaptive layer selection.
- `train`: the training loop with snapshots that resume bit-for-bit, grids, the output file and its metadata.
- `api`: `run_nada`, what `facebatch nada` and `facebatch.shift_generator` call (validate, load, train, write).

Nothing here imports torch at import time of this package (the CLI stays light).
"""

DEFAULT_CLIP = "celeba-clip"  # the built-in face CLIP, used when no --clip is given
