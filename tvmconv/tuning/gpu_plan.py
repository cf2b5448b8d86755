"""The GPU plan: what one short lease of a GPU is spent on (benchmarks/gpu/plan.sh runs it there).

Every candidate of every workload -- each knob setting of its CUDA template
(``backends.cuda_templates.candidates``) and the default schedule -- is compiled on all the
machine's cores at once, CUDA binaries included (into the binary cache, ahead of TVM's runtime,
which would otherwise compile each library's source when it is loaded, one at a time). Then,
workload by workload, each candidate's output is checked against cuDNN's and the correct ones are timed
interleaved with cuDNN (TF32 off, ``cudnn.benchmark`` on: its best case) with CUDA events; the
fastest becomes the workload's schedule record, with the dispatch choice those same rounds
measured. Everything lands in ``out`` as it is measured, so a lease that ends early keeps what
was done: ``schedules/<profile>/`` (records), ``plan.jsonl`` (per workload, the bench fields),
``candidates.jsonl`` (per candidate), ``summary.md`` and ``plan.log``; the compiled candidates
(``kernels/``) go to ``work``, their binaries to the user cache.

Rehearsal (``timer="stub"``): the same run on a machine without a GPU -- enumeration, parallel
compilation, binaries, records, results, the time budget -- with made-up times and no kernel run.

    python -m tvmconv.tuning.gpu_plan --target cuda-sm90 --suite all --out $OUT --budget 540
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import logging
import math
import multiprocessing
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..backends.target import TargetInfo, resolve
from ..spec import Spec, spec_from_dict

log = logging.getLogger("tvmconv.gpu_plan")

ROUNDS = 5  # interleaved rounds per workload: its candidates and cuDNN, median of each
MIN_ROUND_S = 0.01  # GPU time per round and callable (enough back-to-back calls to fill it)
MAX_REL_ERR = 1e-3  # a candidate further than this from cuDNN (relative to the output's scale) is dropped


@dataclass
class Job:
    """One candidate to compile: ``knobs`` of the template, or None for the default schedule."""

    workload: int  # index into the plan's specs
    spec: dict
    knobs: dict | None


@dataclass
class Built:
    """A compiled candidate (``library`` None and ``error`` set where it did not compile)."""

    workload: int
    knobs: dict | None
    plan: dict = field(default_factory=dict)
    trace: list = field(default_factory=list)
    library: str | None = None
    error: str | None = None
    shared_bytes: int = 0
    compile_s: float = 0.0

    @property
    def label(self) -> str:
        from ..backends.cuda_templates import Knobs

        return "default" if self.knobs is None else Knobs.from_dict(self.knobs).label()


# -- compiling (in worker processes) ---------------------------------------------------------------
def jobs_for(specs: list[Spec], per_workload: int) -> list[Job]:
    """The default schedule and up to ``per_workload`` template settings of each spec."""
    from ..backends.cuda_templates import candidates

    return [Job(i, s.to_dict(), k) for i, s in enumerate(specs)
            for k in [None, *(kn.to_dict() for kn in candidates(s, per_workload))]]


def build(job: Job, profile: str, out: str, binaries: bool) -> Built:
    """Schedule, compile and export one candidate into ``out/kernels``; with ``binaries``, its CUDA
    binary too (into the binary cache, which answers the load)."""
    from ..backends import cuda
    from ..backends.cuda_templates import Knobs, plan, schedule
    from ..backends.llvm_schedules import trace_json
    from ..variants.compute import plan_to_dict

    import tvm

    t0 = time.perf_counter()
    target = resolve(profile)
    spec = spec_from_dict(job.spec)
    done = Built(job.workload, job.knobs)
    try:
        if job.knobs is None:
            sch, used = target.backend.default_schedule(spec)
        else:
            sch, used = schedule(spec, Knobs.from_dict(job.knobs)), plan(spec)
        done.plan, done.trace = plan_to_dict(used), trace_json(sch)
        ex = tvm.compile(sch.mod, target=target.tvm())
        source = ex.mod.imports[0].inspect_source()
        done.shared_bytes = shared_bytes(source)
        over = over_limits(source)
        if over:  # (TVM compiles such a kernel; it would fail at launch)
            raise ValueError(over)
        if binaries:  # (where this fails, loading it fails too: the candidate is reported)
            cuda.prebuild_binary(source, target)
        name = hashlib.sha256(json.dumps([job.spec, job.knobs], sort_keys=True).encode()).hexdigest()[:16]
        lib = Path(out) / "kernels" / f"{name}.so"
        lib.parent.mkdir(parents=True, exist_ok=True)
        ex.export_library(str(lib))
        done.library = str(lib)
    except Exception as e:  # noqa: BLE001 - a candidate that does not compile is reported, not fatal
        done.error = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
    done.compile_s = time.perf_counter() - t0
    return done


def over_limits(cuda_source: str) -> str | None:
    """What in a CUDA source no CUDA block can take (shared memory, threads), or None."""
    from ..backends.cuda_templates import MAX_THREADS, SHARED_BYTES

    threads = max((int(n) for n in re.findall(r"__launch_bounds__\((\d+)\)", cuda_source)), default=0)
    if threads > MAX_THREADS:
        return f"{threads} threads per block, over {MAX_THREADS}"
    if shared_bytes(cuda_source) > SHARED_BYTES:
        return f"{shared_bytes(cuda_source)} bytes of shared memory per block, over {SHARED_BYTES}"
    return None


def shared_bytes(cuda_source: str) -> int:
    """Static shared memory a CUDA source's largest kernel declares (float32 arrays)."""
    per_kernel = [sum(int(n) * 4 for n in re.findall(r"__shared__[^;\[]*\[(\d+)\]", k))
                  for k in cuda_source.split("__global__")[1:]]
    return max(per_kernel, default=0)


def compile_all(jobs: list[Job], profile: str, out: Path, *, workers: int, deadline: float, binaries: bool,
                progress=None) -> list[Built]:
    """``build`` every job on ``workers`` processes; what has not finished by ``deadline`` (a
    ``time.time()``) is dropped."""
    ctx = multiprocessing.get_context("spawn")  # (no fork of a process that holds TVM's or CUDA's threads)
    done: list[Built] = []
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        futures = [pool.submit(build, j, profile, str(out), binaries) for j in jobs]
        try:
            for f in cf.as_completed(futures, timeout=max(1.0, deadline - time.time())):
                done.append(f.result())
                if progress:
                    progress(len(done), len(jobs))
        except cf.TimeoutError:
            log.warning("compiling: %d of %d candidates built when the compile budget ended", len(done), len(jobs))
    finally:
        for p in list(getattr(pool, "_processes", {}).values()):  # a worker still in nvcc: stop it now
            p.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
    return done


# -- measuring (in this process, on the GPU) --------------------------------------------------------
@dataclass
class Prepared:
    """A workload's tensors on the GPU: the kernel-shaped ``views`` of its inputs and its ``out``,
    cuDNN's answer ``want``, and ``vendor``, the cuDNN call to time."""

    views: list
    out: object
    want: object
    vendor: object


class GPUTimer:
    """Runs candidates on the GPU against cuDNN (the vendor path of ``tools.bench``)."""

    stub = False

    def __init__(self, target: TargetInfo):
        from ..backends.timing import measure_roofline

        self.target = target
        self.roofline = measure_roofline(0, target=target)
        self.machine = target.backend.machine()

    def prepare(self, spec: Spec) -> Prepared:
        import torch

        from ..suites.cases import case_for, on_device

        case = on_device(case_for(spec), self.target)
        views = [a.reshape(shape) for a, (_, shape) in zip(case.args, spec.kernel_arg_shapes)]
        with torch.no_grad(), self.target.backend.vendor_mode():
            want = case.reference(*case.args, **case.kwargs)
        return Prepared(views, torch.empty(spec.kernel_out_shape, device="cuda"), want,
                        lambda: case.reference(*case.args, **case.kwargs))

    def load(self, built: Built, prepared: Prepared):
        import tvm

        f = tvm.runtime.load_module(built.library)["main"]
        return lambda: f(*prepared.views, prepared.out)

    def error(self, fn, prepared: Prepared) -> float:
        """The candidate's largest error against cuDNN, relative to the output's scale (NaN where
        it left an output element unwritten)."""
        import torch

        out, want = prepared.out, prepared.want
        out.fill_(float("nan"))
        fn()
        torch.cuda.synchronize()
        return ((out.reshape(want.shape) - want).abs().max() / want.abs().max().clamp(min=1)).item()

    def time(self, fns, prepared: Prepared) -> list[list[float]]:
        import torch

        from ..backends import timing

        with torch.no_grad(), self.target.backend.vendor_mode():
            return timing.interleaved_cuda(fns, rounds=ROUNDS, min_round_s=MIN_ROUND_S)


class StubTimer:
    """The rehearsal's stand-in: loads nothing, runs nothing; made-up times, seeded, so every step
    after measuring (choice, records, results) runs as on the GPU."""

    stub = True

    def __init__(self, target: TargetInfo, seed: int = 0):
        from ..backends.timing import Roofline

        self.target = target
        self.roofline = Roofline(1e12, 1e11, 0)  # made up, as the times are
        self.machine = "stub timer (a rehearsal: no GPU, no kernel run)"
        self.rng = random.Random(seed)

    def prepare(self, spec: Spec) -> Prepared:
        return Prepared([], None, None, lambda: None)

    def load(self, built: Built, prepared):
        if not Path(built.library).is_file():
            raise FileNotFoundError(built.library)
        return lambda: None

    def error(self, fn, prepared) -> float:
        return 0.0

    def time(self, fns, prepared) -> list[list[float]]:
        return [[self.rng.uniform(1e-5, 1e-3)] * ROUNDS for _ in fns]


# -- the plan ---------------------------------------------------------------------------------------
def run(specs: list[Spec], target: TargetInfo, out: Path, *, timer=None, workers: int | None = None,
        budget_s: float = 540.0, per_workload: int = 12, binaries: bool = True, progress: bool = True,
        work: Path | None = None) -> list[dict]:
    """Compile, check and time every candidate of ``specs`` on ``target``'s GPU (``timer``: a
    ``GPUTimer`` by default, ``StubTimer`` to rehearse), within ``budget_s`` seconds in all;
    write records and results into ``out``, the compiled candidates into ``work`` (default:
    ``out``). Returns the per-workload results."""
    t0 = time.time()
    out = Path(out)
    work = Path(work) if work is not None else out
    out.mkdir(parents=True, exist_ok=True)
    _log_to(out / "plan.log")
    timer = timer or GPUTimer(target)
    workers = workers or os.cpu_count() or 1
    jobs = jobs_for(specs, per_workload)
    log.info("%d workloads, %d candidates, %d workers, budget %.0f s, target %s, %s", len(specs), len(jobs),
             workers, budget_s, target.profile, timer.machine)
    with _bar(progress) as bar:
        task = bar.add_task("compiling", total=len(jobs)) if bar else None
        built = compile_all(jobs, target.profile, work, workers=workers, binaries=binaries,
                            deadline=t0 + 0.6 * budget_s,
                            progress=(lambda n, total: bar.update(task, completed=n)) if bar else None)
        log.info("compiled %d of %d candidates in %.0f s (%d failed)", sum(b.library is not None for b in built),
                 len(jobs), time.time() - t0, sum(b.error is not None for b in built))
        results = _measure_all(specs, built, target, out, timer, t0 + budget_s, bar)
    _write_summary(out, results, target, timer, time.time() - t0, len(jobs))
    for lock in (out / "schedules").glob("*/*.lock"):  # (save_record's: the records are final)
        lock.unlink()
    return results


def _measure_all(specs, built, target, out: Path, timer, deadline: float, bar) -> list[dict]:
    from ..backends import cuda

    by_workload: dict[int, list[Built]] = {}
    for b in built:
        by_workload.setdefault(b.workload, []).append(b)
    task = bar.add_task("measuring", total=len(specs)) if bar else None
    results, longest = [], 5.0  # (seconds the longest workload took: none is started that would overrun)
    cuda.use_binary_cache()
    before = dict(cuda.binary_stats)
    for i, spec in enumerate(specs):
        if time.time() + 1.5 * longest > deadline:
            log.warning("budget spent: %d of %d workloads measured", i, len(specs))
            break
        started = time.time()
        row = measure_workload(spec, by_workload.get(i, []), target, out, timer)
        longest = max(longest, time.time() - started)
        if row is not None:
            results.append(row)
        if bar:
            bar.update(task, completed=i + 1, description=f"measuring {spec.name[:40]}")
    log.info("CUDA binaries at load: %d from the cache, %d compiled then",
             cuda.binary_stats["read"] - before["read"], cuda.binary_stats["compiled"] - before["compiled"])
    return results


def measure_workload(spec: Spec, built: list[Built], target: TargetInfo, out: Path, timer) -> dict | None:
    """Check and time ``built`` (one workload's candidates) against cuDNN; save the fastest as a
    record under ``out``; append every candidate to ``candidates.jsonl``; returns the workload's
    result row (None where no candidate compiled)."""
    from ..backends import timing

    prepared = timer.prepare(spec)
    runnable, rows = [], []
    for b in built:
        row = {"workload": spec.name, "candidate": b.label, "knobs": b.knobs, "compile_s": round(b.compile_s, 3),
               "shared_bytes": b.shared_bytes, "error": b.error}
        if b.library is not None:
            try:
                fn = timer.load(b, prepared)
                row["max_rel_err"] = err = timer.error(fn, prepared)
                if not err <= MAX_REL_ERR:  # (NaN too)
                    row["error"] = f"wrong: {err:.2e} from cuDNN"
                else:
                    runnable.append((b, fn, row))
            except Exception as e:  # noqa: BLE001 - a kernel that does not load or run is reported
                row["error"] = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
        rows.append(row)
    if runnable:
        times = timer.time([prepared.vendor] + [fn for _, fn, _ in runnable], prepared)
        vendor = times[0]
        for (b, _, row), t in zip(runnable, times[1:]):
            row["median_s"], row["spread"] = timing.median(t), timing.spread(t)
    _append_jsonl(out / "candidates.jsonl", rows)
    if not runnable:
        log.warning("%s: no candidate compiled and ran correctly", spec.name)
        return None
    best = min(runnable, key=lambda r: r[2]["median_s"])
    default = [r for b, _, r in runnable if b.knobs is None]
    path = _save(spec, target, out, best[0], best[2], timing.median(vendor), default, timer)
    result = _result_row(spec, target, best, vendor, default, timer, path, len(built), len(runnable))
    _append_jsonl(out / "plan.jsonl", [result])
    log.info("%s: %s %.1f us, cuDNN %.1f us (%.2fx), %d of %d candidates ran", spec.name, best[0].label,
             best[2]["median_s"] * 1e6, result["vendor_s"] * 1e6, result["speedup"], len(runnable), len(built))
    return result


def _save(spec, target, out: Path, b: Built, row: dict, vendor_s: float, default: list, timer) -> Path:
    from ..backends.machine import machine_of
    from ..runtime import cache
    from ..runtime.cache import new_record
    from ..runtime.record import Dispatch

    here = machine_of(target)
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t = row["median_s"]
    choice = Dispatch(choice="vendor" if vendor_s < t else "tvmconv", tvmconv_s=t, vendor_s=vendor_s,
                      vendor="cuDNN", measured_at=now, machine=here.key, machine_description=here.description,
                      extra={"how": f"gpu plan, interleaved, median of {ROUNDS} rounds"} if not timer.stub
                      else {"how": "rehearsal: stub timer, made-up times"})
    rec = new_record(spec, target, plan=b.plan, trace=b.trace, run_secs=t,
                     source="default" if b.knobs is None else "gpu-plan",
                     gflops=spec.flops / t / 1e9, default_secs=default[0]["median_s"] if default else None,
                     tuned_at=now, dispatch=choice, extra={"template": b.knobs} if b.knobs else {})
    return cache.save_record(rec, spec, target, root=out)


def _result_row(spec, target, best, vendor, default, timer, path, n_built: int, n_ran: int) -> dict:
    """The workload's row, in ``tvmconv bench``'s fields (its report and plots read it)."""
    from ..backends import timing
    from ..suites.cases import family_of

    b, _, row = best
    t, v = row["median_s"], timing.median(vendor)
    family, kind = family_of(spec)
    roof = timer.roofline
    return {"workload": spec.name, "variant": spec.variant, "family": family, "kind": kind, "count": 1,
            "flops": spec.flops, "bytes": spec.bytes_moved, "tvmconv_s": t, "tvmconv_spread": row["spread"],
            "vendor_s": v, "vendor_spread": timing.spread(vendor), "ratio": t / v, "speedup": v / t,
            "gflops": spec.flops / t / 1e9, "roofline_fraction": roof.min_seconds(spec.flops, spec.bytes_moved) / t,
            "vendor": "cuDNN", "schedule": b.label, "default_s": default[0]["median_s"] if default else None,
            "dispatch": "vendor" if v < t else "tvmconv", "candidates": n_built, "ran": n_ran,
            "max_rel_err": row["max_rel_err"], "record": str(path), "target": target.profile,
            "target_kind": target.kind, "stub": timer.stub}


def _write_summary(out: Path, results: list[dict], target, timer, seconds: float, n_jobs: int) -> None:
    """``summary.md``: per family, the geometric-mean speed-up over cuDNN, the best roofline
    fraction and how many workloads meet the CUDA goal."""
    from ..backends.cuda import CUDABackend

    lines = [f"# GPU plan: {target.profile}", "", f"Machine: {timer.machine}. {len(results)} workloads, "
             f"{n_jobs} candidates, {seconds:.0f} s.", "",
             "| family | workloads | speed-up over cuDNN (geomean) | best roofline fraction | goal met |",
             "|---|---|---|---|---|"]
    for fam in sorted({r["family"] for r in results}):
        rs = [r for r in results if r["family"] == fam]
        lo, _ = CUDABackend.bench_goal(fam, rs[0]["kind"])
        gm = math.exp(sum(math.log(r["speedup"]) for r in rs) / len(rs))
        lines.append(f"| {fam} | {len(rs)} | {gm:.2f}x | {max(r['roofline_fraction'] for r in rs):.1%} | "
                     f"{sum(r['speedup'] >= lo for r in rs)}/{len(rs)} |")
    if timer.stub:
        lines += ["", "A rehearsal: the times are made up (stub timer); nothing here is a measurement."]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


# -- plumbing ---------------------------------------------------------------------------------------
def _append_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _log_to(path: Path) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


class _bar:
    """A rich progress display with an ETA per phase (None inside when ``progress`` is off)."""

    def __init__(self, on: bool):
        self.progress = None
        try:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        except ImportError:  # (a bare GPU machine: plan.log says what happens)
            return
        if on:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("ETA"), TimeRemainingColumn())

    def __enter__(self):
        if self.progress:
            self.progress.start()
        return self.progress

    def __exit__(self, *exc):
        if self.progress:
            self.progress.stop()


def main(argv=None) -> int:
    from ..suites.workloads import workloads

    p = argparse.ArgumentParser(prog="python -m tvmconv.tuning.gpu_plan", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default=None, help="a CUDA profile (default: the GPU's own, e.g. cuda-sm90)")
    p.add_argument("--suite", default="all", help="the workloads: a suite or model name (tvmconv tune's)")
    p.add_argument("--out", required=True, type=Path, help="where records, results and the log go")
    p.add_argument("--work", type=Path, default=None, help="where compiled candidates go (default: --out)")
    p.add_argument("--budget", type=float, default=540.0, help="seconds for the whole plan (default 540)")
    p.add_argument("--workers", type=int, default=None, help="compile processes (default: every core)")
    p.add_argument("--per-workload", type=int, default=12, help="template settings per workload (default 12)")
    p.add_argument("--limit", type=int, default=None, help="only the first N workloads (a rehearsal's)")
    p.add_argument("--stub", action="store_true", help="rehearse without a GPU: made-up times, no kernel run")
    p.add_argument("--no-binaries", action="store_true", help="leave CUDA binaries to TVM's runtime (no nvcc here)")
    a = p.parse_args(argv)
    target = resolve(a.target) if a.target else _gpu_target()
    specs = [s for s, _ in workloads(a.suite)][:a.limit]
    results = run(specs, target, a.out, timer=StubTimer(target) if a.stub else None, workers=a.workers,
                  budget_s=a.budget, per_workload=a.per_workload, work=a.work, binaries=not a.no_binaries)
    print((a.out / "summary.md").read_text())
    return 0 if results else 1


def _gpu_target() -> TargetInfo:
    from ..backends.cuda import for_cuda_device

    return for_cuda_device(0)


if __name__ == "__main__":
    raise SystemExit(main())
