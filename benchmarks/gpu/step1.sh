#!/bin/bash
# Machine facts; unpack TVM (all but the compiler library's second half) to $SITE.
cd "$(dirname "$0")/../.." && source benchmarks/gpu/env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(), torch.cuda.get_device_capability())"
python3 -c "import cuda.bindings; print('cuda-bindings', cuda.bindings.__version__)" || true
echo "cudart: $CUDART"; nproc; free -g | head -2
set -e
rm -rf "$SITE" && mkdir -p "$SITE"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .devtvm/*.whl
tar -xJf .devtvm/base.tar.xz -C "$SITE"
cp .devtvm/comp.xz.00 /tmp/comp.xz.00
ls "$SITE" && du -sh "$SITE"
