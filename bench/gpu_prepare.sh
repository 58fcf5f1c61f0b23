#!/usr/bin/env bash
# Make .gpu/ (git-ignored), what bench/gpu_day.sh needs to travel to a lent GPU machine beside the checkout:
#   .gpu/wheels/                   the packages the machine's image lacks (its list: the device tool's KINDS.md),
#                                  at the versions this checkout's .venv has, for CPython 3.12 on x86-64;
#   .gpu/celeba64-train64.parquet  the training split at 64 px (models/celeba64/pack_data.py), 12.5 MiB.
# The device tool carries at most 64 MiB with the repository: this prints what would travel.
#
#   make install && bench/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
# Not on the machine: dask's cluster, open_clip and the perceptual/SSIM packages facebatch imports; typer at our
# version, which wants pydantic (and pydantic a newer typing_extensions than the image may have).
PACKAGES="dask distributed partd locket tblib zict tornado open_clip_torch ftfy wcwidth lpips pytorch-msssim
typer pydantic pydantic_core annotated-types typing-inspection typing_extensions"
mkdir -p .gpu/wheels
pins=()
for p in $PACKAGES; do
    v=$("$PY" -m pip show "$p" 2>/dev/null | awk '/^Version:/ {print $2}')
    [ -n "$v" ] || { echo "$p is not installed in $PY's environment: run make install first" >&2; exit 2; }
    pins+=("$p==$v")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d .gpu/wheels "${pins[@]}"
if [ ! -f .gpu/celeba64-train64.parquet ]; then
    "$PY" models/celeba64/pack_data.py ../shared/data/celeba10k .gpu/celeba64-train64.parquet
fi
tracked=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carried=$(du -sb .gpu | cut -f1)
echo "travels: $(( (tracked + carried) / 1048576 )) MiB of 64 (repository $(( tracked / 1048576 )), .gpu $(( carried / 1048576 )))"
