"""Probe tvmconv's doors from outside, as a careless or hostile user would: each case in a process of
its own with a private cache, its outcome classified as the reliability review's table does.

    python benchmarks/reliability.py --out benchmarks/results/reliability-zen3   # .jsonl and .md

Outcomes: ``fine`` (torch's answer, state as eager leaves it), ``clear error`` (a ValueError,
TypeError or RuntimeError naming the problem, where the case allows one), ``silent wrong`` (an
answer that differs from eager's), ``lost`` (state eager keeps and tvmconv lost: statistics,
buffers, hooks' calls, the original model), ``crash`` (killed by a signal), ``hang`` (no answer
within the case's time), ``failed`` (any other exception).

A case is a snippet that ends by calling ``done(ok, lost=False, detail="")``; ``same(a, b)``
compares tensors as the tests do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRELUDE = r"""
import copy, json, os, sys, warnings
import torch, torch.nn as nn, torch.nn.functional as F
import tvmconv, tvmconv.functional as TF
from tvmconv import nn as tnn
torch.manual_seed(0)

def same(a, b, tol=1e-4):
    return a.shape == b.shape and a.dtype == b.dtype and torch.allclose(a.double(), b.double(), rtol=tol, atol=tol)

def done(ok, lost=False, detail=""):
    print("RESULT " + json.dumps({"ok": bool(ok), "lost": bool(lost), "detail": str(detail)[:300]}), flush=True)
    sys.exit(0)

class Net(nn.Module):
    def __init__(s):
        super().__init__()
        s.c, s.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        s.dw, s.pw = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 16, 1)
    def forward(s, x):
        return F.relu(s.pw(F.relu(s.dw(F.relu(s.bn(s.c(x)))))))

def bn_stats(m):
    return [(b.num_batches_tracked.item(), b.running_mean.clone()) for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
"""

_INPLACE = {
    "relu_": "y = s.c(x); torch.relu_(y); return y",
    "add_": "y = s.c(x); y.add_(1); return y",
    "relu(inplace)": "y = s.c(x); F.relu(y, inplace=True); return y",
    "input mul_": "x.mul_(2); return s.c(x)",
    "buffer add_/copy_": "y = s.c(x); s.n.add_(1); s.m.copy_(y.mean()); return y + s.n",
}


def _compile_inplace(body: str, inductor: bool) -> str:
    return f"""
class M(nn.Module):
    def __init__(s):
        super().__init__(); s.c = nn.Conv2d(8, 8, 3, padding=1)
        s.register_buffer("n", torch.zeros(())); s.register_buffer("m", torch.zeros(()))
    def forward(s, x):
        {body}
m = M().eval(); twin = copy.deepcopy(m)
x = torch.randn(1, 8, 10, 10)
fast = torch.compile(m, backend="tvmconv", options={{"inductor": {inductor}}})
with torch.no_grad():
    outs = [(fast(x.clone()), twin(x.clone())) for _ in range(2)]
done(all(same(a, b) for a, b in outs), lost=not (same(m.n, twin.n) and same(m.m, twin.m)))
"""


def cases() -> dict[str, tuple[str, float, bool]]:
    """name -> (snippet, timeout seconds, whether a clear error is an acceptable answer)."""
    out: dict[str, tuple[str, float, bool]] = {}
    for name, body in _INPLACE.items():
        for ind in (False, True):
            out[f"compile: {name}, inductor={ind}"] = (_compile_inplace(body, ind), 300, False)
    for ind in (False, True):
        out[f"compile: ResNet-18 training, inductor={ind}"] = (f"""
m = tvmconv.models.resnet18().train(); twin = copy.deepcopy(m)
fast = torch.compile(m, backend="tvmconv", options={{"inductor": {ind}}})
for i in range(2):
    x = torch.randn(4, 3, 64, 64)  # (at 2x3x32x32 BatchNorm over 2 values amplifies rounding 100-fold)
    a, b = fast(x), twin(x)
ok = same(a, b, 1e-4 * max(1.0, b.abs().max().item()))
sm, st = bn_stats(m), bn_stats(twin)
done(ok, lost=len(sm) != 20 or any(p[0] != q[0] or not same(p[1], q[1], 1e-3) for p, q in zip(sm, st)))
""", 600, False)
    out["compile: dynamic=True with BatchNorm"] = ("""
m = Net().eval()
fast = torch.compile(m, backend="tvmconv", dynamic=True, options={"inductor": False})
with torch.no_grad():
    ok = all(same(fast(x), m(x)) for x in (torch.randn(1, 3, 8, 8), torch.randn(3, 3, 11, 11), torch.randn(2, 3, 9, 9)))
done(ok)
""", 300, False)
    for dt in ("bfloat16", "float16", "float64"):
        for ind in (False, True):
            out[f"compile: {dt}, inductor={ind}"] = (f"""
m = Net().eval().to(torch.{dt}); x = torch.randn(1, 3, 8, 8, dtype=torch.{dt})
with torch.no_grad():
    got = torch.compile(m, backend="tvmconv", options={{"inductor": {ind}}})(x); want = m(x)
done(same(got, want, 2e-2 if "{dt}" != "float64" else 1e-8))
""", 300, False)
    out["compile: channels_last"] = ("""
m = Net().eval(); x = torch.randn(2, 3, 9, 9).to(memory_format=torch.channels_last)
with torch.no_grad():
    got = torch.compile(m, backend="tvmconv")(x)
done(same(got, m(x)) and got.is_contiguous(memory_format=torch.channels_last))
""", 300, False)
    # -- convert -----------------------------------------------------------------------------------
    out["convert: training model, original untouched"] = ("""
m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).train()
before = copy.deepcopy(m.state_dict()); x = torch.randn(2, 3, 8, 8)
fast = tvmconv.convert(m, (x,))
untouched = all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
starts = all(torch.equal(v, before[k]) for k, v in fast.state_dict().items() if k in before)
twin = copy.deepcopy(m)
ok = all(same(fast(x), twin(x)) for _ in range(2))
bn = fast.get_submodule("1")
done(ok, lost=not (untouched and starts and bn.num_batches_tracked.item() == twin[1].num_batches_tracked.item() == 2))
""", 300, True)
    out["convert: training model with dropout"] = ("""
m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Dropout(0.5), nn.Conv2d(8, 4, 1)).train()
x = torch.randn(2, 3, 8, 8)
fast = tvmconv.convert(m, (x,), time_layers=False)
torch.manual_seed(3); a = fast(x); torch.manual_seed(3); b = m(x)
done(same(a, b))
""", 300, True)
    for where in ("bn", "dw", "pw", "model"):
        out[f"convert: a forward hook on {where}"] = (f"""
m = Net().eval(); x = torch.randn(1, 3, 8, 8)
seen = []
target = m if "{where}" == "model" else getattr(m, "{where}")
target.register_forward_hook(lambda mod, i, o: seen.append(o.detach().clone()))
fast = tvmconv.convert(m, (x,), time_layers=False)
seen.clear()
with torch.no_grad():
    got = fast(x); theirs = list(seen); seen.clear(); want = m(x)
done(same(got, want), lost=len(theirs) != 1 or not same(theirs[0], seen[0]))
""", 300, True)
    out["convert: buffer updated in forward"] = ("""
class M(nn.Module):
    def __init__(s):
        super().__init__(); s.c = nn.Conv2d(3, 4, 3); s.register_buffer("n", torch.zeros(()))
    def forward(s, x):
        s.n.add_(1); return s.c(x) + s.n
m = M().eval(); x = torch.randn(1, 3, 8, 8)
fast = tvmconv.convert(m, (x,))
with torch.no_grad():
    ok = all(same(fast(x), m(x)) for _ in range(3))
done(ok, lost=not (hasattr(fast, "n") and fast.n.item() == m.n.item() == 3))
""", 300, True)
    out["convert: bfloat16 with BatchNorm"] = ("""
m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval().to(torch.bfloat16)
with torch.no_grad():
    m[1].running_mean.uniform_(-1, 1); m[1].running_var.uniform_(0.5, 2)
x = torch.randn(1, 3, 8, 8, dtype=torch.bfloat16)
fast = tvmconv.convert(m, (x,), time_layers=False)
with torch.no_grad():
    done(same(fast(x), m(x), 0))
""", 300, True)
    out["convert: the original's state_dict loads"] = ("""
m = Net().eval(); x = torch.randn(1, 3, 8, 8)
fast = tvmconv.convert(m, (x,), time_layers=False)
other = Net().eval()
with torch.no_grad():
    other.bn.running_mean.uniform_(-1, 1); other.bn.running_var.uniform_(0.5, 2)
fast.load_state_dict(other.state_dict())
with torch.no_grad():
    done(same(fast(x), other(x)))
""", 300, True)
    # -- fork ----------------------------------------------------------------------------------------
    for pool in ("1", "0"):
        out[f"fork: DataLoader workers, TVMCONV_SHARED_POOL={pool}"] = (f"""
os.environ["TVMCONV_SHARED_POOL"] = "{pool}"
conv = tnn.Conv2d(8, 16, 3).eval()
F.conv2d(torch.randn(1, 8, 16, 16), conv.weight)  # the parent's OpenMP pool has run
class D(torch.utils.data.Dataset):
    def __len__(s): return 4
    def __getitem__(s, i):
        g = torch.Generator().manual_seed(i); x = torch.randn(1, 8, 16, 16, generator=g)
        with torch.no_grad():
            return (conv(x) - F.conv2d(x, conv.weight, conv.bias)).abs().max()
errs = [e for b in torch.utils.data.DataLoader(D(), num_workers=2, batch_size=2) for e in b]
done(max(errs) < 1e-4)
""", 240, False)
    out["fork: child after the parent ran a kernel"] = ("""
x, w = torch.randn(1, 8, 16, 16), torch.randn(16, 8, 3, 3)
TF.conv2d(x, w); want = F.conv2d(x, w)
pid = os.fork()
if pid == 0:
    torch.set_num_threads(1)
    os._exit(0 if torch.allclose(TF.conv2d(x, w), want, atol=1e-4) else 3)
done(os.waitpid(pid, 0)[1] == 0)
""", 240, False)
    # -- the machine, the cache ------------------------------------------------------------------------
    first_call = """
x, w = torch.randn(1, 8, 12, 12), torch.randn(16, 8, 3, 3)
done(same(TF.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1)))
"""
    out["env: CC=/nonexistent"] = ("os.environ['CC'] = '/nonexistent'\n" + first_call, 240, False)
    out["env: no compiler on PATH"] = ("os.environ['PATH'] = os.path.dirname(sys.executable)\n" + first_call, 240, False)
    keys = """
from tvmconv.backends.machine import machine_of
from tvmconv.backends.target import resolve
from tvmconv.runtime import cache
key = machine_of(resolve(None)).key
root = cache.user_root()
"""
    out["cache: FIFOs at dispatch/ and machine/"] = (keys + """
for d in ("dispatch", "machine"):
    (root / d).mkdir(parents=True, exist_ok=True); os.mkfifo(root / d / f"{key}.json")
os.environ["TVMCONV_DISPATCH"] = "1"
""" + first_call, 120, False)
    out["cache: locks held by a live process"] = (keys + """
import subprocess, time
locks = [root / "machine" / f"{key}.json.lock", root / "dispatch" / f"{key}.json.lock"]
locks += [root / "machine" / (p.name + ".lock") for p in [root / "machine" / "x"]]
from tvmconv.backends import openmp
locks.append(root / "machine" / f"openmp-launch-{cache.digest({'cc': 'gcc', 'source': openmp.launch_source()})[:12]}.so.lock")
for l in locks: l.parent.mkdir(parents=True, exist_ok=True)
h = subprocess.Popen([sys.executable, "-c", "import sys,time\\nfrom filelock import FileLock\\n[FileLock(p).acquire() for p in sys.argv[1:]]\\nprint(1,flush=True)\\ntime.sleep(300)", *map(str, locks)], stdout=subprocess.PIPE)
h.stdout.readline()
t0 = time.time()
x, w = torch.randn(1, 8, 12, 12), torch.randn(16, 8, 3, 3)
ok = same(TF.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1))
h.kill()
done(ok and time.time() - t0 < 60, detail=f"{time.time() - t0:.1f} s")
""", 300, False)
    for where in ("a regular file", "/dev/null"):
        setup = "open(os.environ['TVMCONV_CACHE_DIR'] + '.f', 'w').write('x')\nos.environ['TVMCONV_CACHE_DIR'] += '.f'\n" \
            if where == "a regular file" else "os.environ['TVMCONV_CACHE_DIR'] = '/dev/null'\n"
        out[f"cache: TVMCONV_CACHE_DIR is {where}"] = (setup + first_call, 240, False)
    out["trust: launcher symlinked into a 0777 directory"] = (keys + """
import shutil, tempfile
from tvmconv.backends import openmp
made = openmp._compiled()
d = tempfile.mkdtemp(); os.chmod(d, 0o777); shutil.copy(made, d); made.unlink(); made.symlink_to(os.path.join(d, made.name))
openmp._compiled()
done(not made.is_symlink())
""", 240, False)
    out["trust: forged launch cost in a 0777 machine/"] = (keys + """
(root / "machine").mkdir(parents=True, exist_ok=True); os.chmod(root / "machine", 0o777)
(root / "machine" / f"{key}.json").write_text(json.dumps({"format": 1, "parallel_launch_s": 0.009}))
from tvmconv.backends import launch
os.environ.pop("TVMCONV_PARALLEL_LAUNCH_US", None)
done(launch.parallel_launch_s(resolve(None)) != 0.009)
""", 240, False)
    return out


def run_case(name: str, snippet: str, timeout: float, error_ok: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="tvmconv-probe-") as tmp:
        os.chmod(tmp, 0o700)
        env = {**os.environ, "TVMCONV_CACHE_DIR": str(Path(tmp) / "cache"), "PYTHONWARNINGS": "ignore"}
        t0 = time.perf_counter()
        # a session of its own: on a hang the whole group goes (a forked child would spin on)
        proc = subprocess.Popen([sys.executable, "-c", PRELUDE + snippet], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=tmp, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"case": name, "outcome": "hang", "seconds": timeout, "detail": f"no answer in {timeout:.0f} s"}
    seconds = round(time.perf_counter() - t0, 1)
    result = next((json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")), None)
    last = (stderr.strip().splitlines() or [""])[-1][:300]
    if proc.returncode < 0:
        outcome, detail = "crash", f"signal {-proc.returncode}"
    elif result is not None:
        outcome = "lost" if result["lost"] else ("fine" if result["ok"] else "silent wrong")
        detail = result["detail"]
    elif error_ok and last.split(":")[0] in ("ValueError", "TypeError", "RuntimeError"):
        outcome, detail = "clear error", last
    else:
        outcome, detail = "failed", last
    return {"case": name, "outcome": outcome, "seconds": seconds, "detail": detail}


OUTCOMES = ["crash", "hang", "silent wrong", "lost", "clear error", "failed", "fine"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="path prefix of the .jsonl and .md written")
    ap.add_argument("-k", default="", help="only cases whose name holds this text")
    args = ap.parse_args()
    rows = []
    chosen = {n: c for n, c in cases().items() if args.k in n}
    for i, (name, (snippet, timeout, error_ok)) in enumerate(chosen.items()):
        row = run_case(name, snippet, timeout, error_ok)
        rows.append(row)
        print(f"[{i + 1}/{len(chosen)}] {row['outcome']:>12}  {row['seconds']:6.1f} s  {name}  {row['detail']}",
              flush=True)
    Path(args.out + ".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = {o: sum(r["outcome"] == o for r in rows) for o in OUTCOMES}
    lines = [f"# Reliability probe: {len(rows)} cases", "",
             f"Machine: {_cpu()}, {os.cpu_count()} CPUs. Date: {time.strftime('%Y-%m-%d')}. "
             f"Command: `python benchmarks/reliability.py --out {args.out}`. Each case in its own process "
             "with a private cache.", "",
             "| cases | " + " | ".join(OUTCOMES) + " |", "|---" * (len(OUTCOMES) + 1) + "|",
             f"| {len(rows)} | " + " | ".join(str(counts[o]) for o in OUTCOMES) + " |", "",
             "| case | outcome | s | detail |", "|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['outcome']} | {r['seconds']} | {r['detail'].replace('|', '/')} |" for r in rows]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print(" ".join(f"{o}: {counts[o]}" for o in OUTCOMES))


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
