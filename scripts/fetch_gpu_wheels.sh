#!/usr/bin/env bash
# Download, into .whl/, the wheels that the GPU machine's Python 3.12 lacks for scripts/gpu_benchmark.sh:
# grain, ml-collections, tensorboardX and array-record, plus their own requirements that image lacks
# (portpicker, for grain), one version each: the versions this project is developed and tested with.
# Their other requirements (absl-py, cloudpickle, etils, numpy, protobuf, psutil, PyYAML, packaging)
# are in that image already.
#
#   bash scripts/fetch_gpu_wheels.sh        # where pip can reach PyPI; .whl/ is ignored by git
#
# Then carry .whl on the device call (see docs/benchmarks.md, "On a GPU").
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WHEELS=(
  grain==0.2.18
  array-record==0.8.6
  ml-collections==1.1.0
  tensorboardX==2.6.5
  portpicker==1.6.0
)
mkdir -p "$REPO/.whl"
for wheel in "${WHEELS[@]}"; do
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$REPO/.whl" "$wheel"
done
ls -l "$REPO/.whl"
