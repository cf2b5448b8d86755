# Sourced by the step scripts: where TVM lives on the GPU machine, and the CUDA 13 runtime it links.
SITE=/tmp/tvmconv-site
export PYTHONPATH=$SITE:$PWD
export PYTHONUNBUFFERED=1
CUDART=$(python3 - <<'PY'
import glob, site
for d in site.getsitepackages():
    for p in glob.glob(f"{d}/nvidia/**/libcudart.so.13*", recursive=True):
        print(p.rsplit("/", 1)[0]); raise SystemExit
PY
)
export LD_LIBRARY_PATH=${CUDART}${CUDART:+:}${LD_LIBRARY_PATH:-}
# The user cache, where tuning writes its logs and records: outside the repository copy, which
# each call of the device tool re-syncs with the caller's tree (deleting what the caller lacks).
export TVMCONV_CACHE_DIR=/tmp/tvmconv-cache
OUTDIR=${OUT:-/tmp/out}  
mkdir -p "$OUTDIR"
