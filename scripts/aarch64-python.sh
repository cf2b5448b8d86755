#!/usr/bin/env bash
# An emulated aarch64 (arm64) Python 3.11 with TVM's runtime, so an x86_64 machine can load and run
# aarch64 TVM libraries (tvmconv export) under qemu user-mode emulation -- and serve as an RPC
# "device" for arm64-linux tuning.
#
#   bash scripts/aarch64-python.sh [ROOT]     ROOT defaults to $TVMCONV_CACHE_DIR/aarch64-python
#   ROOT/python -c "import tvm; print(tvm.__version__)"
#
# How: Debian arm64 packages (python3.11 and the libraries it and TVM need) are fetched with a
# private apt configuration (own state, cache and sources; the system's dpkg state is untouched)
# and unpacked with `dpkg -x` into ROOT; TVM and numpy come from PyPI's manylinux aarch64 wheels,
# installed with `pip --target ROOT/site`. No root, no binfmt: ROOT/python calls
# `qemu-aarch64-static -L ROOT` explicitly. Idempotent: exits at once when ROOT/.ready exists and
# the interpreter imports tvm. Needs: qemu-aarch64-static (scripts/cross-tools.sh), apt-get,
# dpkg, and a host Python with pip ($PYTHON, default python3).
set -euo pipefail

if ! command -v qemu-aarch64-static >/dev/null; then
  echo "error: qemu-aarch64-static not found; install it with: bash scripts/cross-tools.sh" >&2
  exit 1
fi

ROOT="${1:-${TVMCONV_CACHE_DIR:-$HOME/.cache/tvmconv}/aarch64-python}"
mkdir -p "$ROOT"
ROOT="$(cd "$ROOT" && pwd)"
PYTHON="${PYTHON:-python3}"
# Pins: apache-tvm's aarch64 wheel is tagged manylinux_2_28 only; apache-tvm-ffi 0.1.15 segfaults.
TVM_PKGS=(apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 numpy psutil cloudpickle)
# Debian arm64 packages: the interpreter and its stdlib's shared-library dependencies (bookworm's
# python3.11 bundles mpdecimal: no libmpdec3), the C++ runtime TVM links against, and libgomp1 for
# kernels built with OpenMP (TVM's own libraries and tvmconv's exports do not need it).
DEB_PKGS=(
  python3.11 python3.11-minimal libpython3.11-stdlib libpython3.11-minimal
  libc6 libcrypt1 libstdc++6 libgcc-s1 libgomp1 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0
  liblzma5 libsqlite3-0 libncursesw6 libtinfo6 libreadline8 libuuid1 libdb5.3 libnsl2
  libtirpc3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1
)

check() { "$ROOT/python" -c "import tvm, numpy" >/dev/null 2>&1; }
if [ -f "$ROOT/.ready" ] && check; then
  exit 0
fi
rm -f "$ROOT/.ready"

# --- Debian arm64 packages, via a private apt configuration --------------------------------------
APT="$ROOT/.apt"
mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/parts" "$APT/debs"
touch "$APT/status"
# The system's own Debian suite (bookworm here); elsewhere (Ubuntu, ...) bookworm, or $DEBIAN_SUITE.
SUITE="$(. /etc/os-release 2>/dev/null; [ "${ID:-}" != debian ] || echo "${VERSION_CODENAME:-}")"
SUITE="${DEBIAN_SUITE:-${SUITE:-bookworm}}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
OPTS="arch=arm64"
if [ -f "$KEYRING" ]; then OPTS="$OPTS signed-by=$KEYRING"; fi
cat >"$APT/sources.list" <<EOF
deb [$OPTS] $MIRROR $SUITE main
deb [$OPTS] $MIRROR $SUITE-updates main
deb [$OPTS] $SECURITY $SUITE-security main
EOF
cat >"$APT/apt.conf" <<EOF
APT::Architecture "arm64";
APT::Architectures "arm64";
APT::Sandbox::User "root";
Dir::State "$APT";
Dir::State::lists "$APT/lists";
Dir::State::status "$APT/status";
Dir::Cache "$APT";
Dir::Cache::archives "$APT/archives";
Dir::Etc::SourceList "$APT/sources.list";
Dir::Etc::SourceParts "$APT/parts";
EOF
if [ "$(id -u)" != "0" ]; then sed -i '/Sandbox::User/d' "$APT/apt.conf"; fi
echo "aarch64-python: fetching Debian arm64 packages into $ROOT" >&2
apt-get -c "$APT/apt.conf" -qq update
(cd "$APT/debs" && apt-get -c "$APT/apt.conf" -qq download "${DEB_PKGS[@]}")
for deb in "$APT/debs"/*.deb; do
  dpkg -x "$deb" "$ROOT"
done

# --- TVM, numpy and friends: manylinux aarch64 wheels --------------------------------------------
echo "aarch64-python: installing ${TVM_PKGS[*]}" >&2
"$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore \
  --upgrade --target "$ROOT/site" --only-binary=:all: --platform manylinux_2_28_aarch64 \
  --python-version 3.11 --implementation cp "${TVM_PKGS[@]}"

# --- the wrapper and sys.executable --------------------------------------------------------------
# ROOT/python runs the emulated interpreter; TVM_USE_RUNTIME_LIB=1 loads libtvm_runtime only (the
# compiler library is not needed to run kernels). Caller's PYTHONPATH goes after ROOT/site.
cat >"$ROOT/python" <<'EOF'
#!/usr/bin/env bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export TVM_USE_RUNTIME_LIB=1
case ":${PYTHONPATH:-}:" in
  *":$ROOT/site:"*) ;;
  *) export PYTHONPATH="$ROOT/site${PYTHONPATH:+:$PYTHONPATH}" ;;
esac
exec qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/python3.11" "$@"
EOF
chmod +x "$ROOT/python"
# TVM's RPC server (popen workers) and multiprocessing re-launch sys.executable: make that the
# wrapper, not the bare aarch64 binary the host cannot exec. Shadows Debian's own sitecustomize.
cat >"$ROOT/site/sitecustomize.py" <<EOF
import sys
sys.executable = "$ROOT/python"
EOF

if ! check; then
  echo "error: $ROOT/python cannot import tvm; try: $ROOT/python -c 'import tvm'" >&2
  exit 1
fi
rm -rf "$APT/debs" "$APT/archives" "$APT/lists"   # downloaded .debs and indexes: no longer needed
touch "$ROOT/.ready"
echo "aarch64-python: ready: $ROOT/python" >&2
