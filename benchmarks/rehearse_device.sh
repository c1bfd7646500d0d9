#!/usr/bin/env bash
# Rehearse the device call of benchmarks/gpu.py on this CPU machine, before spending GPU time.
#
# The lent GPU machine runs Python 3.12 with torch 2.11.0 (CUDA build), torchvision 0.26.0,
# numpy 2.5 and pytorch-lightning 2.6.6 (which ships lightning_fabric), and has no PyWavelets,
# lmdb or gendiff. This script builds such an environment once (about 3 GB of downloads from
# PyPI, a few minutes), builds the wheels with benchmarks/device_wheels.sh (as for the device),
# copies the working tree to a scratch folder as the device tool would, installs the wheels with
# --target and runs `gpu.py --quick --device cpu` there.
#
#   bash benchmarks/rehearse_device.sh [VENV (default /tmp/gendiff-device-venv)]
#
# Needs a python3.12 on PATH or PYTHON312=/path/to/python3.12. Not run by the test suite.
set -euo pipefail
root=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
venv=${1:-/tmp/gendiff-device-venv}
py312=${PYTHON312:-$(command -v python3.12 || true)}
[ -n "$py312" ] || { echo "no python3.12 found; set PYTHON312" >&2; exit 2; }

if [ ! -x "$venv/bin/python3" ]; then
  "$py312" -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.11.0 numpy scipy matplotlib scikit-image scikit-learn tqdm \
      einops pillow hypothesis pytest pytorch-lightning==2.6.6
  "$venv/bin/pip" install -q --no-deps torchvision==0.26.0
fi

bash "$root/benchmarks/device_wheels.sh"
cd "$root"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# What the device tool sends: tracked files and untracked ones git does not ignore (that exist).
git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
  if [ -e "$f" ]; then cp --parents "$f" "$scratch"; fi
done
cp -r .whl "$scratch/"
cd "$scratch"
"$venv/bin/python3" -m pip install -q --no-index --no-deps --no-compile --target "$scratch/site" .whl/*.whl
PYTHONPATH="$scratch/site" GENDIFF_COMMIT=$(git -C "$root" rev-parse --short HEAD) PYTHONUNBUFFERED=1 \
    "$venv/bin/python3" benchmarks/gpu.py --quick --device cpu --out "$scratch/out"
grep -E "^Status|^## " "$scratch/out/report.md"
