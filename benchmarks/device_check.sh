#!/usr/bin/env bash
# One session on a GPU machine: GPU tests, then the benchmarks of the fused
# kernel.  Logs and JSON results go to $OUT (default: device-out/).
#
#   bash benchmarks/device_check.sh
#
# Python packages the machine lacks can be carried as wheels in .whl/; they
# are installed into /tmp/site first.  gridstress runs from this checkout.
set -uo pipefail
OUT=${OUT:-device-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv \
    | tee "$OUT/nvidia-smi.csv"
python3 -c "import cupy, numpy, xarray; print('cupy', cupy.__version__, 'numpy', \
numpy.__version__, 'xarray', xarray.__version__)"

echo "== GPU tests"
timeout 200 python3 -m pytest -q -p no:cacheprovider -m "gpu or not slow" \
    tests/test_gpu.py tests/test_kernels.py 2>&1 | tee "$OUT/pytest-gpu.log"

echo "== launch parameters of the fused kernel"
timeout 60 python3 benchmarks/tune_fused.py --out "$OUT/tune-fused.json"
echo "== bench: 1M cells, one haircut (no shared paths), 100 loans"
timeout 60 python3 -m gridstress bench --cells 1000000 --loans 100 \
    --engines fused,cupy-xp --out "$OUT/bench-1m-single-haircut.json"
echo "== bench: seed-dense grid, 100 loans, all three engines"
timeout 90 python3 -m gridstress bench --config configs/seed-dense.yaml --loans 100 \
    --no-compile-times --out "$OUT/bench-seed-dense.json"
echo "== bench: one chunk of 10M cells, fused"
timeout 40 python3 -m gridstress bench --cells 10000000 --loans 100 --engines fused \
    --no-compile-times --out "$OUT/bench-10m-chunk.json"
