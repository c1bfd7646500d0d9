#!/usr/bin/env bash
# Build .whl/ in the repository root: what the lent GPU machine needs besides its own image
# (gendiff itself, and PyWavelets and lmdb for Python 3.12). The device call carries it; see the
# docstring of benchmarks/gpu.py. benchmarks/rehearse_device.sh uses the same wheels.
#
#   bash benchmarks/device_wheels.sh
set -euo pipefail
cd "$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)"
exclude=$(git rev-parse --git-path info/exclude)  # .git is a file in a worktree
mkdir -p "$(dirname "$exclude")"
grep -qx /.whl/ "$exclude" 2>/dev/null || echo /.whl/ >> "$exclude"
rm -rf .whl
python3 -m pip wheel -q --no-deps -w .whl .      # gendiff itself, pure Python: no build there
# No lightning-fabric: the image's pytorch-lightning ships the module, and a second copy would
# replace its files.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .whl PyWavelets lmdb
ls .whl
