"""``tvmconv bench``'s body: which benchmark a command line asks for, and its tables, chart and
JSON records. The measuring is bench.py's (kernels, models), peers.py's and the compiled
report's (``--layers``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .options import Workloads
from .terminal import console, fail


def bench(w: Workloads, target: Optional[str], rounds: int, json_path: Optional[Path], png: Optional[Path],
          peers: bool, layers: bool, dispatched: bool) -> None:
    """The kernels ``w`` names (default: every variant on the default shape) timed against the
    vendor path; with ``w.model`` naming ``tvmconv.models`` networks, those end to end (``peers``:
    against the other runtimes; ``layers``: function by function)."""
    from . import bench as B
    from ..backends.target import resolve
    from ..models import MODELS

    given = w.given()
    if len(given) > 1:
        raise typer.BadParameter("give at most one of --suite, --op, --spec or --model",
                                 param_hint="--suite/--op/--spec/--model")
    sizes = w.batches()
    try:
        tgt = resolve(target)
        why_not = tgt.backend.unavailable("bench")
        if why_not:
            raise ValueError(why_not)
        names = list(MODELS) if w.model == "all" else (w.model or "").split(",")
        networks = w.model is not None and all(n in MODELS for n in names)
        if (peers or layers) and not networks:
            raise ValueError(f"--{'peers' if peers else 'layers'} takes tvmconv.models networks: give --model "
                             "NAME[,NAME...] or 'all'")
        if peers:
            return _peers(names, sizes or (1,), rounds, json_path, png)
        if layers:
            return _layers(names, tgt, sizes or (1,), rounds, json_path)
        if networks:
            return _models(names, tgt, sizes or (1, 8), rounds, json_path)
        what = w.what(suite=w.suite or ("variants" if not given else None))
        cases = B.cases(what, input_shape=w.input_dims(), batch=sizes)
    except (ValueError, TypeError) as exc:
        fail(str(exc))
    roof = B.measure_roofline(tgt.num_cores, target=tgt)
    console.print(f"{B.machine(tgt)}; target {tgt.profile} ({tgt.num_cores} threads)\nroofline: SGEMM "
                  f"{roof.peak_flops / 1e9:.1f} GFLOP/s, copy {roof.bandwidth / 1e9:.1f} GB/s (measured now)")
    records = []
    with console.status("benchmarking...") as status:
        for i, c in enumerate(cases):
            status.update(f"[{i + 1}/{len(cases)}] {c.label}")
            records.append(B.run_case(c, tgt, roof, rounds=rounds, dispatched=dispatched))
    _print_records(records, tgt, dispatched)
    label = w.suite or (Path(w.model).stem if w.model else w.op or ("spec" if w.spec else "variants"))
    png = png or Path(f"bench-{tgt.profile}-{label}.png")
    try:
        B.plot(records, roof, png)
        console.print(f"chart: {png}")
    except ImportError:
        console.print("no chart: matplotlib is not installed (pip install 'tvmconv[bench]')")
    if json_path:
        head = {"machine": B.machine(tgt), "peak_flops": roof.peak_flops, "bandwidth": roof.bandwidth}
        json_path.write_text("".join(json.dumps({**r, **head}) + "\n" for r in records))
        console.print(f"records: {json_path}")


def _print_records(records: list[dict], tgt, dispatched: bool) -> None:
    """The kernels' table, their geomeans per family, the goals met and (``dispatched``) the ops
    slower than the vendor path as a user calls them."""
    from . import bench as B

    ms = (lambda s, d: f"{s * 1e3:.3f} ±{d:.0%}")  # spread: interquartile range relative to the median
    table = Table("workload", "family", "MFLOP", "tvmconv ms", "vendor ms", "ratio", "GFLOP/s", "roofline",
                  "schedule", "dispatch", "goal")
    for r in records:
        table.add_row(r["workload"][:70], r["family"], f"{r['flops'] / 1e6:.1f}", ms(r["tvmconv_s"], r["tvmconv_spread"]),
                      ms(r["vendor_s"], r["vendor_spread"]), f"{r['ratio']:.2f}", f"{r['gflops']:.1f}",
                      f"{r['roofline_fraction']:.0%}", r["schedule"],
                      f"{r['dispatch']} ({r['dispatch_source']})" if r.get("dispatch_source") else r["dispatch"],
                      "met" if B.meets_goal(r) else "[red]missed[/red]")
    console.print(table)
    geo = Table("family", "workloads", "geomean ratio (tvmconv/vendor)", "geomean speed-up", title="per family")
    for fam, g in B.geomeans(records).items():
        geo.add_row(fam, str(sum(r["family"] == fam for r in records)), f"{g:.3f}", f"{1 / g:.2f}x")
    console.print(geo)
    missed = [r["workload"] for r in records if not B.meets_goal(r)]
    goals = tgt.backend.bench_goal_text
    console.print(f"{len(records) - len(missed)}/{len(records)} workloads meet their goal ({goals})")
    if dispatched:
        slower = [r for r in records if r["slower_than_vendor"]]
        geo_d = math.exp(sum(math.log(r["dispatched_ratio"]) for r in records) / len(records))
        console.print(f"dispatch on: geomean ratio {geo_d:.3f} against the vendor path; {len(slower)} of {len(records)} "
                      f"slower than it beyond the measured spread, in the rounds and in a recheck"
                      + "".join(f"\n  {r['workload']}: {r['dispatched_ratio']:.2f}, recheck "
                                f"{r['dispatched_recheck_ratio']:.2f} ({r['dispatch']})" for r in slower))


def _peers(names, batches, rounds, json_path, png):
    """Each network through every runtime a user would pick instead (peers.compare), a table per
    network and batch, and their chart."""
    import torch

    from . import bench as B
    from . import peers as P

    console.print(f"{B.machine()}; {torch.get_num_threads()} threads; fp32")
    rows = []
    for name in names:
        for n in batches:
            with console.status(f"{name}, batch {n}: building and timing every path..."):
                got = P.compare(name, n, rounds=rounds, say=lambda line: console.print(f"  {name}: {line}"))
            rows += got
            table = Table("path", "ms", "speed-up over eager", "vs ONNX Runtime", "build s", "max rel diff",
                          title=f"{name}, batch {n}")
            for r in got:
                table.add_row(r["path"], f"{r['seconds'] * 1e3:.2f} ±{r['spread']:.0%}", f"{r['speedup_vs_eager']:.2f}x",
                              f"{r['vs_onnxruntime']:.2f}x", f"{r['build_s']:.1f}", f"{r['max_rel_diff']:.1e}")
            console.print(table)
    if json_path:
        json_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    P.plot(rows, png or Path("bench-peers.png"))


def _models(names, tgt, batches, rounds, json_path):
    """Each network converted against its PyTorch twin (bench.bench_models), and the per-call overhead."""
    from . import bench as B

    console.print(f"{B.machine()}; target {tgt.profile} ({tgt.num_cores} threads)")
    with console.status("timing models..."):
        records = B.bench_models(names, tgt, batches, rounds=rounds)
    table = Table("model", "batch", "converted ms", "PyTorch ms", "speed-up", "layers converted/kept",
                  "sum of layers ms (PyTorch)", "max |diff|")
    for r in records:
        table.add_row(r["workload"], str(r["batch"]), f"{r['tvmconv_s'] * 1e3:.2f}", f"{r['vendor_s'] * 1e3:.2f}",
                      f"{r['speedup']:.2f}x", f"{r['converted']}/{r['kept']}",
                      f"{r['layers_s'] * 1e3:.2f} ({r['layers_torch_s'] * 1e3:.2f})", f"{r['max_abs_diff']:.1e}")
    console.print(table)
    o = B.call_overhead()
    console.print(f"per-call overhead on a tiny conv2d: kernel {o['kernel_s'] * 1e6:.1f} us, tvmconv.functional "
                  f"{o['functional_s'] * 1e6:.1f} us, torch.ops.tvmconv {o['custom_op_s'] * 1e6:.1f} us, "
                  f"tvmconv.nn.Conv2d {o['module_s'] * 1e6:.1f} us")
    if json_path:
        json_path.write_text("".join(json.dumps(r) + "\n" for r in records + [{"workload": "call_overhead", **o}]))


def _layers(names, tgt, batches, rounds, json_path):
    """Each network compiled, its functions profiled (``CompiledModel.profile``) and the report printed;
    one JSON line per function with ``--json``."""
    import dataclasses

    import torch

    from ..backends.timing import torch_threads
    from ..graph.compiler import compile as compile_model
    from ..models import MODELS, input_size
    from .bench import machine

    console.print(f"{machine()}; target {tgt.profile} ({tgt.num_cores} threads)")
    records = []
    for name in names:
        for n in batches:
            torch.manual_seed(0)
            x = torch.randn(n, 3, input_size(name), input_size(name))
            with console.status(f"compiling and profiling {name} (batch {n})..."), torch_threads(tgt.num_cores):
                fast = compile_model(MODELS[name](backend="torch").eval(), (x,), tgt)
                rows = fast.profile(rounds=rounds)
            console.print(f"[bold]{name}[/bold], batch {n}")
            fast.tvmconv_report.print()
            records += [{"model": name, "batch": n, **dataclasses.asdict(r),
                         "of_roofline": r.of_roofline(r.seconds),
                         "of_roofline_in_forward": r.of_roofline(r.in_forward_seconds)} for r in rows]
    if json_path:
        json_path.write_text("".join(json.dumps(r) + "\n" for r in records))
