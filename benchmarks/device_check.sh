#!/usr/bin/env bash
# On the GPU machine: install the wheels device_pack.sh packed (packages that
# machine lacks), then run every measurement of benchmarks/device_check.py within its time budget.
#   bash benchmarks/device_check.sh PACK OUT [device_check.py options, e.g. --budget 480 --seeds 0 1 2]
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: bash benchmarks/device_check.sh PACK OUT [python -m benchmarks.device_check options]" >&2
    exit 2
fi
pack=$(realpath -m "$1") out=$(realpath -m "$2")
shift 2
cd "$(dirname "$0")/.."  # the repository root: train.py and the benchmarks package are read from there
if [ ! -f "$pack/pack.json" ]; then
    echo "$pack/pack.json not found: make the pack with benchmarks/device_pack.sh first" >&2
    exit 2
fi
if compgen -G "$pack/wheels/*.whl" >/dev/null; then
    site=$(mktemp -d)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$pack"/wheels/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m benchmarks.device_check --pack "$pack" --out "$out" "$@"
