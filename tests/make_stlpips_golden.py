"""Regenerate the ST-LPIPS golden values in test_perceptual_backends.py from the reference package.

Runs stlpips_pytorch's own LPIPS(net="vgg", variant="shift_tolerant") (the wheel's weights, no
download) on the test's input pairs and prints the distances the test compares our network with.
The package imports two modules it does not declare (IPython, torchsummary) for debugging helpers it
never calls here; they are stubbed. Run from the repository root:

    python tests/make_stlpips_golden.py
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
for name, attr in (("IPython", "embed"), ("torchsummary", "summary")):
    sys.modules.setdefault(name, types.SimpleNamespace(**{attr: lambda *a, **k: None}))

from stlpips_pytorch.stlpips import LPIPS  # noqa: E402
from test_perceptual_backends import input_pairs  # noqa: E402


@torch.no_grad()
def main() -> None:
    torch.set_num_threads(1)
    net = LPIPS(net="vgg", variant="shift_tolerant", verbose=False)
    a, b = input_pairs()
    print(net(a, b).flatten().tolist())


if __name__ == "__main__":
    main()
