#!/usr/bin/env bash
# One session on a GPU machine: the GPU tests, then the benchmarks of the
# fused kernels, model v2 (the market step) and v1's settings (a deep market:
# the loan-outer kernel).  Logs and JSON results go to $OUT (default:
# device-out/).  Every step has its own time limit; together they stay
# within 9 minutes, so one call fits the device tool's 10-minute command.
#
#   bash benchmarks/device_check.sh          # everything
#   bash benchmarks/device_check.sh bench    # the benchmarks only (a rerun)
#
# Python packages the machine lacks can be carried as wheels in .whl/; they
# are installed into /tmp/site first.  gridstress runs from this checkout.
set -uo pipefail
OUT=${OUT:-device-out}
WHAT=${1:-all}
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
bench() { timeout "$1" python3 -m gridstress bench "${@:2}"; }

if [ "$WHAT" != bench ]; then
    echo "== GPU tests, and the kernel tests on the CPU"
    timeout 180 python3 -m pytest -q -p no:cacheprovider -m "gpu or not slow" \
        tests/test_gpu.py tests/test_kernels.py 2>&1 | tee "$OUT/pytest-gpu.log"
fi

echo "== bench: 1M cells, one haircut, 100 loans: market step (v2), then a deep market (v1)"
bench 50 --cells 1000000 --loans 100 --model v2 --engines fused,cupy-xp \
    --out "$OUT/bench-1m-single-haircut-v2.json"
bench 30 --cells 1000000 --loans 100 --model v1 --engines fused --no-compile-times \
    --out "$OUT/bench-1m-single-haircut-v1.json"
echo "== bench: seed-dense grid, 100 loans, all three engines (v2)"
bench 100 --config configs/seed-dense.yaml --loans 100 --model v2 --no-compile-times \
    --out "$OUT/bench-seed-dense-v2.json"
echo "== bench: one chunk of 10M cells, fused (v2)"
bench 40 --cells 10000000 --loans 100 --model v2 --engines fused --no-compile-times \
    --out "$OUT/bench-10m-chunk-v2.json"
echo "== gridstress run end to end against kernel time: seed-dense and 10M cells"
timeout 90 python3 benchmarks/gpu_end_to_end.py --out "$OUT/gpu-end-to-end.json"
echo "== launch parameters of the fused kernels"
timeout 60 python3 benchmarks/tune_fused.py --out "$OUT/tune-fused.json"
