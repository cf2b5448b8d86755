"""``tvmconv bench``: every workload timed against the vendor path, with the machine's roofline.

For each workload the tvmconv op (as a user calls it: ``tvmconv.functional``, tuned schedule if
the cache has one) and the vendor path a user would otherwise call (``torch.nn.functional`` on
CPU, i.e. oneDNN; the PyTorch op sequence for fused variants) run in the same process,
interleaved, after warm-up; medians and spreads are reported. The roofline comes from two
micro-benchmarks run first in the same process: a large SGEMM (peak FLOP/s) and a large copy
(memory bandwidth). ``roofline_fraction`` is the time the roofline allows for the workload's
FLOPs and compulsory bytes, divided by tvmconv's time.
"""

from __future__ import annotations

import math
import time

import torch

from .. import functional as TF
from ..backends import timing
from ..backends.machine import cpu_model
from ..backends.timing import Roofline, measure_roofline, torch_threads  # (re-exported: bench's API)
from ..backends.base import backend_class
from ..backends.target import TargetInfo
from ..runtime import build
from ..suites.cases import Case, case_for, on_device, settle_dispatch, time_case, variant_cases


def run_case(case: Case, target: TargetInfo, roof: Roofline, *, rounds: int = 7, dispatched: bool = False) -> dict:
    """Check the case's output against the vendor's, then time both interleaved; ``dispatched``:
    the op as dispatched too (``dispatched_s``, and ``slower_than_vendor`` where it is slower than
    the vendor path by more than the two measurements' spread)."""
    case = on_device(case, target)
    with torch.no_grad(), TF.no_dispatch(), torch_threads(roof.threads), target.backend.vendor_mode():
        with TF.capture_kernels() as kernels:
            got = case.op(*case.args, **case.kwargs, target=target)
        want = case.reference(*case.args, **case.kwargs)
    err = (got - want).abs().max().item() / max(1.0, want.abs().max().item())
    kern = kernels[-1]
    if dispatched:
        settle_dispatch(case, target, kern, roof.threads)
    a, b, *d = time_case(case, target, roof.threads, rounds=rounds, dispatched=dispatched)
    spec = kern.spec
    t, v = timing.median(a), timing.median(b)
    src = kern.schedule_source
    return {
        "workload": case.label if case.label == spec.name else f"{case.label}: {spec.name}",
        "variant": spec.variant, "family": case.family, "kind": case.kind, "count": case.count,
        "flops": spec.flops, "bytes": spec.bytes_moved,
        "tvmconv_s": t, "tvmconv_spread": timing.spread(a), "vendor_s": v, "vendor_spread": timing.spread(b),
        "ratio": t / v, "speedup": v / t, "gflops": spec.flops / t / 1e9,
        "roofline_fraction": roof.min_seconds(spec.flops, spec.bytes_moved) / t,
        "vendor": case.vendor, "schedule": build.record_kind(src) or src,
        "dispatch": kern.dispatch, "dispatch_source": kern.dispatch_source, "max_rel_err": err, "target": target.profile, "target_kind": target.kind,
        **(_dispatched(case, target, roof.threads, d[0], b, rounds) if dispatched else {}),
    }


def _dispatched(case: Case, target: TargetInfo, threads: int, d: list[float], vendor: list[float],
                rounds: int) -> dict:
    """The op as dispatched against the vendor path in the same rounds. Slower beyond the spread
    where the ratio of medians exceeds 1 by more than the two interquartile ranges together, in
    these rounds and again in a recheck of twice as many, the op timed first: on a shared VM one
    run's spread is narrower than the run-to-run noise (the same 400 us call measured 400 to 490 us
    in consecutive runs on the AVX-512 Xeon), so one run alone flags a path that the next clears."""
    ratio, slower = _slower(d, vendor)
    out = {"dispatched_s": timing.median(d), "dispatched_spread": timing.spread(d), "dispatched_ratio": ratio}
    if slower:
        op = lambda: case.op(*case.args, **case.kwargs, target=target)  # noqa: E731
        ref = lambda: case.reference(*case.args, **case.kwargs)  # noqa: E731
        with torch.no_grad(), target.backend.vendor_mode():
            d2, v2 = target.backend.time([op, ref], rounds=2 * rounds + 1, threads=threads)
        out["dispatched_recheck_ratio"], slower = _slower(d2, v2)
    return {**out, "slower_than_vendor": slower}


def _slower(d: list[float], vendor: list[float]) -> tuple[float, bool]:
    ratio = timing.median(d) / timing.median(vendor)
    return ratio, ratio > 1 + math.hypot(timing.spread(d), timing.spread(vendor))


def goal_of(rec: dict) -> tuple[float, float | None]:
    """``(speed-up at least, roofline fraction at least)`` for a bench record."""
    return backend_class(rec.get("target_kind", "llvm")).bench_goal(rec["family"], rec["kind"])


def meets_goal(rec: dict) -> bool:
    speed, roof = goal_of(rec)
    return rec["speedup"] >= speed and (roof is None or rec["roofline_fraction"] >= roof)


def geomeans(records: list[dict], key: str = "family") -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for r in records:
        groups.setdefault(r[key], []).append(r["ratio"])
    return {k: math.exp(sum(math.log(x) for x in v) / len(v)) for k, v in sorted(groups.items())}


def machine(target: TargetInfo | None = None) -> str:
    described = target.backend.machine() if target is not None else None
    if described:
        return described
    return f"{cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def plot(records: list[dict], roof: Roofline, path) -> None:
    """Two panels over the workloads: the speed-up over the vendor path (log scale, ticks 0.5x, 1x,
    2x...; the bar's spread from both interquartile ranges; a black tick at each workload's goal)
    and the fraction of the roofline reached (with the memory-bound goal). Full workload names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, LogLocator, PercentFormatter

    colors = {"compute": "tab:blue", "memory": "tab:orange", "fused": "tab:green"}
    n = len(records)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(9, 0.3 * n + 3), 9), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 2]})
    xs = range(n)
    bar_colors = [colors[r["kind"]] for r in records]
    speed = [r["speedup"] for r in records]
    # the ratio of two medians, each known to its relative interquartile range: a rough spread
    spread = [s * math.hypot(r.get("tvmconv_spread", 0), r.get("vendor_spread", 0)) / 2
              for s, r in zip(speed, records)]
    ax1.bar(xs, speed, color=bar_colors, yerr=spread, ecolor="0.35", capsize=2, error_kw={"lw": 0.8})
    for x, r in zip(xs, records):
        ax1.hlines(goal_of(r)[0], x - 0.45, x + 0.45, colors="black", lw=1.5)
    ax1.axhline(1.0, color="0.4", lw=0.8, ls="--")
    ax1.set_yscale("log", base=2)
    ax1.yaxis.set_major_locator(LogLocator(base=2))
    ax1.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    top = max([*speed, *(goal_of(r)[0] for r in records), 1.0])
    ax1.set_ylim(min([*speed, 1.0]) / 1.5, top * 1.5)
    ax1.set_ylabel("speed-up over the vendor path")
    target = records[0]["target"] if records else ""
    vendors = "; ".join(sorted({r.get("vendor", "vendor") for r in records}))
    ax1.set_title(f"tvmconv against the vendor path, target {target}; roofline measured in the same run: "
                  f"{roof.peak_flops / 1e9:.0f} GFLOP/s, {roof.bandwidth / 1e9:.0f} GB/s\nvendor path: {vendors}",
                  fontsize=9, loc="left")
    goals = {k: {goal_of(r)[0] for r in records if r["kind"] == k} for k in colors}  # (the target's backend's)
    ax1.legend(handles=[Patch(color=c, label=f"{k} (goal {min(goals[k]):g}x)" if len(goals[k]) == 1 else k)
                        for k, c in colors.items()]
               + [Line2D([], [], color="black", lw=1.5, label="goal of the workload"),
                  Line2D([], [], color="0.35", lw=0.8, label="spread (interquartile)")], fontsize=8,
               loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax2.bar(xs, [r["roofline_fraction"] for r in records], color=bar_colors)
    for x, r in zip(xs, records):
        roof_goal = goal_of(r)[1]
        if roof_goal is not None:
            ax2.hlines(roof_goal, x - 0.45, x + 0.45, colors="black", lw=1.5)
    ax2.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax2.set_ylabel("fraction of the roofline")
    ax2.set_xticks(list(xs))
    ax2.set_xticklabels([r["workload"] for r in records], rotation=90, fontsize=6)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def cases(what, example_inputs=None, input_shape=None, batch=None) -> list[Case]:
    """``'variants'`` (every variant on the default shape), a suite name, specs, or a model's convs;
    ``batch``: each at each of these batch sizes (``suites.workloads.workloads``)."""
    from ..suites.workloads import workloads

    if what == "variants" and batch is None:
        return variant_cases()
    out = []
    for spec, count in workloads(what, example_inputs, input_shape, batch=batch):
        out.append(case_for(spec, count))
    return out


def bench_models(names, target: TargetInfo, batches=(1, 8), *, rounds: int = 7, size: int | None = None) -> list[dict]:
    """End-to-end latency of tvmconv.models converted (``tvmconv.convert`` of the plain-PyTorch
    model, at each batch size: BatchNorm folded, patterns fused, layers where PyTorch is faster
    here kept) against the plain-PyTorch model, interleaved. Each row also has the sum of the
    converted layers' times (``layers_s``; the same layers in PyTorch: ``layers_torch_s``): what
    the whole takes beyond it is the rest of the model (pooling, adds, the classifier) and the
    calls between layers."""
    from ..graph.converter import convert
    from ..models import MODELS, input_size

    out = []
    for name in names:
        torch.manual_seed(0)
        twin = MODELS[name](backend="torch").eval()
        s = size or input_size(name)
        for n in batches:
            x = torch.randn(n, 3, s, s)
            with torch_threads(target.num_cores):
                fast = convert(twin, (x,), target=target if target.profile == "custom" else target.profile)
            rep = fast.tvmconv_report
            with torch.no_grad(), torch_threads(target.num_cores):
                diff = (fast(x) - twin(x)).abs().max().item()
                a, b = timing.interleaved(lambda: fast(x), lambda: twin(x), rounds=rounds, min_round_s=0.05)
            t, v = timing.median(a), timing.median(b)
            layers = [r for r in rep.layers if r.torch_s is not None]
            out.append({"workload": name, "batch": n, "input": [n, 3, s, s], "tvmconv_s": t, "vendor_s": v,
                        "tvmconv_spread": timing.spread(a), "vendor_spread": timing.spread(b), "ratio": t / v,
                        "speedup": v / t, "max_abs_diff": diff, "vendor": "plain-PyTorch model",
                        "target": target.profile, "converted": len(rep.converted), "kept": len(rep.kept),
                        "folded": len(rep.folded),
                        "layers_s": sum(r.torch_s if r.kind == "kept" else r.tvmconv_s for r in layers),
                        "layers_torch_s": sum(r.torch_s for r in layers),
                        "layers": [{"name": r.name, "kind": r.kind, "tvmconv_s": r.tvmconv_s, "torch_s": r.torch_s}
                                   for r in rep.layers]})
    return out


def call_overhead(n: int = 2000) -> dict:
    """Seconds per call on a tiny conv2d (1x4x4x4, 3x3): the compiled kernel called directly, the
    functional op, the torch.library custom op and the tvmconv.nn module."""
    from .. import nn as tnn
    from .. import ops
    x, w = torch.randn(1, 4, 4, 4), torch.randn(4, 4, 3, 3)
    m = tnn.Conv2d(4, 4, 3, bias=False).requires_grad_(False)
    with TF.capture_kernels() as ks:
        TF.conv2d(x, w)
    kern, out_v = ks[-1], torch.empty(1, 4, 2, 2)
    args = (x, w)
    op = ops.OPS["conv2d"].op
    fns = {"kernel_s": lambda: kern(*args, out_v), "functional_s": lambda: TF.conv2d(x, w),
           "custom_op_s": lambda: op(x, w, None, [1, 1], [0, 0], [1, 1], 1, ""), "module_s": lambda: m(x)}
    res = {}
    with torch.no_grad():
        for key, fn in fns.items():
            fn()
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                best = min(best, (time.perf_counter() - t0) / n)
            res[key] = best
    return res


__all__ = ["Roofline", "measure_roofline", "cases", "run_case", "geomeans", "plot", "meets_goal", "machine",
           "bench_models", "call_overhead"]
