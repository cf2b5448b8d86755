#!/bin/bash
# Run here (not on the GPU machine): write .devtvm/ with TVM for the GPU machine's Python 3.12,
# in pieces a device call can carry (64 MiB each). Needs pip access to the wheels and xz.
set -e
cd "$(dirname "$0")/../.."
grep -qx "/.devtvm/" .git/info/exclude 2>/dev/null || echo "/.devtvm/" >> .git/info/exclude
W=$(mktemp -d)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$W" \
  apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 xgboost-cpu==3.2.0
mkdir -p "$W/x" .devtvm && rm -f .devtvm/*
(cd "$W/x" && unzip -q "$W"/apache_tvm-*.whl 'tvm/*')
tar -cJf .devtvm/base.tar.xz -C "$W/x" --exclude='tvm/lib/libtvm_compiler.so' --exclude='tvm/3rdparty' --exclude='__pycache__' tvm
cp "$W"/apache_tvm_ffi-*.whl "$W"/xgboost_cpu-*.whl .devtvm/
sha256sum "$W/x/tvm/lib/libtvm_compiler.so" | cut -c1-64 > .devtvm/comp.sha
xz -T0 -9e -c "$W/x/tvm/lib/libtvm_compiler.so" > "$W/c.xz"  # 259 MB -> 59 MB, about 2.5 minutes
split -n 2 -d "$W/c.xz" .devtvm/comp.xz.
rm -rf "$W"; ls -la .devtvm
