"""``tvmconv`` command line."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, help="tvmconv: convolution variants compiled and scheduled by TVM.")
console = Console(width=None if Console().is_terminal else 200)

# Exit codes: 0 done, 1 a failure while running, 2 a wrong argument or input, 3 results that
# differ from the reference (check, export --check), 130 interrupted.
EXIT_FAILED, EXIT_USAGE, EXIT_DIFFERS = 1, 2, 3


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """One plain line on stderr, no traceback, and the exit code."""
    typer.echo(f"error: {message}".replace("\n", " "), err=True)
    raise typer.Exit(code)


def _version(value: bool):
    if value:
        from importlib import metadata

        typer.echo(f"tvmconv {metadata.version('tvmconv')}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """tvmconv: convolution variants compiled and scheduled by TVM."""


def _print_json(rows: list[dict]) -> None:
    typer.echo(json.dumps(rows, indent=1))


_OPS = ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")


# Options several commands share, declared once (typer reads the Annotated metadata; the default
# stays in each signature)
TargetOpt = Annotated[Optional[str], typer.Option("--target", "-t", help="Profile name (see `tvmconv targets`); "
                                                   "default: this host's.")]
SuiteOpt = Annotated[Optional[str], typer.Option("--suite", help="A named suite of layer shapes, or 'all'.")]
SpecOpt = Annotated[Optional[str], typer.Option("--spec", help="A workload as the JSON the untuned-warning prints.")]
ModelFileOpt = Annotated[Optional[Path], typer.Option("--model", help="A tvmconv.models name (the kernels "
                                                      "tvmconv.compile runs for it) or a torch.export'ed model "
                                                      "(.pt2): its tvmconv ops and conv layers.")]
InputShapeOpt = Annotated[Optional[str], typer.Option("--input-shape", help="The model's input shape (checked).")]
JsonPathOpt = Annotated[Optional[Path], typer.Option("--json", help="Write one JSON record per workload here.")]
AsJsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
BatchOpt = Annotated[Optional[str], typer.Option("--batch", help="Batch sizes, comma-separated (e.g. 1,8): every "
                                                 "workload at each (a spec's N replaced; a .pt2 model's layers follow "
                                                 "its input's batch). Default: as given (suites are at batch 1; bench "
                                                 "--model NAME: 1,8).")]
# only this profile's entries (cache list, cache clear)
ProfileFilterOpt = Annotated[Optional[str], typer.Option("--target", "-t", help="Only this profile.")]
# one workload given by its numbers (tune, bench, export)
OpOpt = Annotated[Optional[str], typer.Option("--op", help=f"One convolution: {', '.join(_OPS)}.")]
ShapeOpt = Annotated[Optional[str], typer.Option("--shape", help="Input shape of --op, e.g. 1,64,56,56.")]
WeightOpt = Annotated[Optional[str], typer.Option("--weight", help="Weight shape of --op, e.g. 64,64,3,3.")]
StrideOpt = Annotated[str, typer.Option("--stride")]
PaddingOpt = Annotated[str, typer.Option("--padding")]
DilationOpt = Annotated[str, typer.Option("--dilation")]
GroupsOpt = Annotated[int, typer.Option("--groups")]
BiasOpt = Annotated[bool, typer.Option("--bias")]


@app.command()
def variants(as_json: AsJsonOpt = False):
    """List the registered convolution variants."""
    from ..variants.registry import VARIANTS

    if as_json:
        return _print_json([{"variant": v.name, "kind": v.kind, "note": v.note} for v in VARIANTS.values()])
    table = Table("variant", "kind", "note")
    for v in VARIANTS.values():
        table.add_row(v.name, v.kind, v.note)
    console.print(table)


@app.command()
def check(
    variant: Optional[list[str]] = typer.Option(None, "--variant", "-v", help="Only these variants (repeatable)."),
    no_time: bool = typer.Option(False, "--no-time", help="Check correctness only."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write one JSON record per variant here."),
):
    """Run every variant on the embedded default shape (1x64x56x56, 3x3, 64 out), check it against
    PyTorch and time both, interleaved. Exits 1 if any result differs from its reference."""
    import torch

    from .check import check_variant
    from ..variants.registry import DEFAULT_ROW, VARIANTS
    from ..backends.target import host

    names = variant or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise typer.BadParameter(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}", param_hint="--variant")
    tgt = host()
    console.print(f"target {tgt.json}  torch threads {torch.get_num_threads()}  default shape "
                  f"n{DEFAULT_ROW.n} c{DEFAULT_ROW.c} {DEFAULT_ROW.size[0]}x{DEFAULT_ROW.size[1]} "
                  f"k{DEFAULT_ROW.k} -> {DEFAULT_ROW.oc}")
    table = Table("variant", "workload", "max |err|", "ok", "compile s", "schedule", "tvmconv ms", "PyTorch ms",
                  "ratio")
    results = []
    with console.status("compiling and checking...") as status:
        for name in names:
            status.update(f"{name}...")
            r = check_variant(name, time_it=not no_time)
            results.append(r)
            fmt = (lambda s: "-" if math.isnan(s) else f"{s * 1e3:.3f}")
            table.add_row(r.variant, r.workload, f"{r.max_abs_err:.1e}", "yes" if r.ok else "[red]NO[/red]",
                          f"{r.compile_s:.2f}", r.schedule, fmt(r.tvmconv_s), fmt(r.reference_s),
                          "-" if math.isnan(r.ratio) else f"{r.ratio:.2f}x")
    console.print(table)
    if json_path:
        json_path.write_text("\n".join(json.dumps(r.to_dict()) for r in results) + "\n")
    bad = [r.variant for r in results if not r.ok]
    if bad:
        console.print(f"[red]{len(bad)} variant(s) differ from their reference: {bad}[/red]")
        raise typer.Exit(EXIT_DIFFERS)
    console.print(f"all {len(results)} variants match their references")


@app.command()
def targets(as_json: AsJsonOpt = False):
    """List the target profiles; marks the one detected for this host."""
    from ..backends.target import detect_profile_name, profiles

    detected = detect_profile_name()
    if as_json:
        return _print_json([{"profile": name, "detected": name == detected, "target": p.target, "build": p.build,
                             "measure": p.measure, "vendor": p.vendor, "file": str(p.path)}
                            for name, p in profiles().items()])
    table = Table("", "profile", "TVM target", "build", "measure", "vendor", "file")
    for name, p in profiles().items():
        meas = p.measure.get("kind")
        if meas == "rpc":
            meas = f"rpc {p.measure.get('tracker')} key {p.measure.get('key')}"
        table.add_row("*" if name == detected else "", name, json.dumps(p.target), p.build.get("kind"), meas,
                      p.vendor, p.path)
    console.print(table)
    console.print(f"* detected for this host: {detected or 'none (the host target is used as is)'}")


@app.command()
def suites(as_json: AsJsonOpt = False):
    """List the named suites of layer shapes that tune, bench and export take (--suite)."""
    from .suites import SUITES, suite

    rows = []
    for name in [*SUITES, "all"]:
        table = suite(name)
        rows.append({"suite": name, "workloads": len(table), "layers": sum(count for _, count in table),
                     "variants": sorted({spec.variant for spec, _ in table})})
    if as_json:
        return _print_json(rows)
    out = Table("suite", "workloads", "layers", "variants")
    for r in rows:
        out.add_row(r["suite"], str(r["workloads"]), str(r["layers"]), ", ".join(r["variants"]))
    console.print(out)


def _ints(text: Optional[str], name: str):
    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=name) from None
    return vals[0] if len(vals) == 1 else vals


@app.command()
def tune(
    target: TargetOpt = None,
    suite: SuiteOpt = None,
    op: OpOpt = None,
    shape: ShapeOpt = None,
    weight: WeightOpt = None,
    stride: StrideOpt = "1",
    padding: PaddingOpt = "0",
    dilation: DilationOpt = "1",
    groups: GroupsOpt = 1,
    bias: BiasOpt = False,
    spec: SpecOpt = None,
    model: ModelFileOpt = None,
    input_shape: InputShapeOpt = None,
    batch: BatchOpt = None,
    untuned: bool = typer.Option(False, "--untuned", help="Every workload that ran untuned on this machine for "
                                 "--target (the ops list them in the user cache; the untuned-warning names this "
                                 "command); each leaves the list once tuned."),
    trials: Optional[int] = typer.Option(None, "--trials", min=0, help="Trials per workload, a trial being a "
                                         "schedule compiled and timed (the default and plan candidates too); "
                                         "default 64, with --time-limit a cap (1000); 0: only distill the log."),
    time_limit: Optional[str] = typer.Option(None, "--time-limit", help="End the whole run within this: 90s, 10m, 1h."),
    rpc: Optional[str] = typer.Option(None, "--rpc", help="Measure through an RPC tracker: HOST:PORT:KEY."),
    rpc_timeout: int = typer.Option(120, "--rpc-timeout", min=1, help="Seconds one trial may take on a remote "
                                    "device, waiting for a free one included; a dropped device's trials fail "
                                    "after that and tuning goes on."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Write here instead of the user cache."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    per_iter: int = typer.Option(64, "--per-iter", min=1, help="Trials measured per search round."),
    no_dispatch: bool = typer.Option(False, "--no-dispatch", help="Skip timing the tuned ops against the vendor "
                                     "path (the dispatch choice recorded after tuning)."),
    population: Optional[int] = typer.Option(None, "--population", min=2,
                                             help="Evolutionary search population (MetaSchedule's default: 512)."),
    json_path: JsonPathOpt = None,
):
    """Tune workloads with MetaSchedule and store the best schedules in the cache. Interrupting
    loses nothing measured; running the same command again spends only the remaining budget."""
    from ..tuning.api import results_json
    from ..tuning.api import tune as run_tune

    _exactly_one(suite, op, spec, model, untuned=untuned)
    sizes = _batches(batch)
    _need_tune_extra()
    try:
        if untuned:
            what = _untuned(target)
            if not what:
                return
        else:
            what = _what(suite, op, spec, model, shape, weight, stride, padding, dilation, groups, bias, target)
        results = run_tune(what, target=target, trials=trials, rpc=rpc, cache_dir=cache_dir, seed=seed,
                           input_shape=_ints(input_shape, "--input-shape"), num_trials_per_iter=per_iter,
                           population=population, dispatch=not no_dispatch, rpc_timeout=rpc_timeout,
                           batch=sizes, time_limit=time_limit)
    except (ValueError, ConnectionError) as exc:
        _fail(str(exc))
    except OSError as exc:  # a full disk, a read-only cache (TuningLogError names the file and the cause)
        _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: every measured trial is in the log and the best schedules so far "
                      "are in the cache; run the same command again to resume[/yellow]")
        raise typer.Exit(130) from None
    table = Table("workload", "trials", "best ms", "GFLOP/s", "default ms", "speed-up", "schedule", "dispatch")
    for r in results:
        fmt = (lambda s: "-" if s is None else f"{s * 1e3:.4f}")
        table.add_row(r.spec.name, f"{r.trials_total}" + (" (all)" if r.exhausted else ""), fmt(r.best_s),
                      "-" if r.gflops is None else f"{r.gflops:.1f}", fmt(r.default_s),
                      "-" if not (r.best_s and r.default_s) else f"{r.default_s / r.best_s:.2f}x", r.source,
                      r.dispatch or "-")
    console.print(table)
    if json_path:
        json_path.write_text(results_json(results) + "\n")


# What MetaSchedule's search needs beyond TVM itself (pyproject's [tune] extra)
_TUNE_EXTRA = ("xgboost", "psutil", "cloudpickle", "tornado")


def _need_tune_extra() -> None:
    import importlib.util

    missing = [m for m in _TUNE_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        _fail(f"tvmconv tune needs the [tune] extra ({', '.join(missing)} missing): pip install 'tvmconv[tune]'",
              EXIT_FAILED)


def _op_spec(op, shape, weight, stride, padding, dilation, groups, bias):
    import torch

    from ..functional import conv_spec

    if op not in _OPS:
        raise ValueError(f"--op must be one of {_OPS}, got {op!r}")
    if shape is None or weight is None:
        raise ValueError("--op needs --shape (input) and --weight (weight) shapes")
    nd = int(op[-2])
    x = torch.empty(_as_tuple(_ints(shape, "--shape")))
    w = torch.empty(_as_tuple(_ints(weight, "--weight")))
    transposed = op.startswith("conv_transpose")
    c_out = w.shape[1] * groups if transposed else w.shape[0]
    b = torch.empty(c_out) if bias else None
    pad = padding if padding in ("same", "valid") else _ints(padding, "--padding")
    return conv_spec(op, nd, x, w, b, _ints(stride, "--stride"), pad, _ints(dilation, "--dilation"), groups,
                     transposed=transposed)[0]


def _as_tuple(v):
    return v if isinstance(v, tuple) else (v,)


def _batches(text: Optional[str]) -> Optional[tuple[int, ...]]:
    """``--batch``'s comma list of positive integers (None: not given)."""
    if text is None:
        return None
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter(f"expected a comma-separated list of positive integers such as 1,8, got {text!r}",
                                 param_hint="--batch")
    return tuple(dict.fromkeys(sizes))


def _exactly_one(suite, op, spec, model, **more) -> None:
    """Refuse anything but one of --suite, --op, --spec, --model (and ``more``: ``untuned=flag``)."""
    given = {"--suite": suite, "--op": op, "--spec": spec, "--model": model,
             **{f"--{k}": v or None for k, v in more.items()}}
    if sum(v is not None for v in given.values()) != 1:
        names = [n + (" (with --shape/--weight)" if n == "--op" else "") for n in given]
        raise typer.BadParameter(f"give exactly one of {', '.join(names[:-1])} or {names[-1]}",
                                 param_hint="/".join(given))


def _untuned(target: Optional[str]) -> list:
    """The workloads ``tvmconv tune --untuned`` tunes: those listed as run untuned on ``target``'s
    profile that still have no tuned record (empty: said so)."""
    from ..backends.target import resolve
    from ..runtime import untuned

    profile = resolve(target).profile
    if profile in untuned.UNNAMED:
        raise ValueError(f"--untuned needs a target profile (see `tvmconv targets`); {target or 'this host'!r} "
                         f"resolves to an unnamed '{profile}' target")
    items = untuned.pending(profile)
    if not items:
        console.print(f"no untuned workloads are listed for {profile}: nothing to tune")
    return items


def _what(suite, op, spec, model, shape, weight, stride, padding, dilation, groups, bias, target=None):
    """The workloads named by exactly one of --suite/--op/--spec/--model (a model's for ``target``)."""
    from ..spec import spec_from_dict

    if suite is not None:
        return suite
    if spec is not None:
        return spec_from_dict(json.loads(spec))
    if model is not None:
        from ..models import MODELS
        from .calibrate import model_workloads

        if str(model) in MODELS and not Path(model).exists():
            return model_workloads(str(model), target, compiled=True)
        return Path(model)
    return _op_spec(op, shape, weight, stride, padding, dilation, groups, bias)


@app.command()
def bench(
    target: TargetOpt = None,
    suite: Optional[str] = typer.Option(None, "--suite", help="'variants' (default: every variant on the default "
                                        "shape), a suite name, or 'all'."),
    op: OpOpt = None,
    shape: ShapeOpt = None,
    weight: WeightOpt = None,
    stride: StrideOpt = "1",
    padding: PaddingOpt = "0",
    dilation: DilationOpt = "1",
    groups: GroupsOpt = 1,
    bias: BiasOpt = False,
    spec: SpecOpt = None,
    model: Optional[str] = typer.Option(None, "--model", help="tvmconv.models names (comma-separated, or 'all'; "
                                        "end-to-end against their PyTorch twins) or a torch.export'ed .pt2 file "
                                        "(its conv layers)."),
    input_shape: InputShapeOpt = None,
    batch: BatchOpt = None,
    rounds: int = typer.Option(7, "--rounds", min=3),
    json_path: JsonPathOpt = None,
    png: Optional[Path] = typer.Option(None, "--png", help="Chart path (default: bench-<target>-<what>.png)."),
    peers: bool = typer.Option(False, "--peers", help="With --model: the network through PyTorch eager, Inductor, "
                               "ONNX Runtime, OpenVINO (fp32; extra [peers]), tvmconv.compile, convert and the "
                               "torch.compile backend, interleaved in one process."),
    layers: bool = typer.Option(False, "--layers", help="With --model: tvmconv.compile's functions one by one (alone "
                                "and inside the forward), against eager and this machine's roofline."),
    dispatched: bool = typer.Option(False, "--dispatch", help="Also time each op as a user calls it (dispatch "
                                    "on: the path chosen for this machine, calibrating first where undecided) "
                                    "and list those slower than the vendor path beyond the measured spread (in the "
                                    "bench's rounds and in a recheck)."),
):
    """Time tuned tvmconv kernels against the vendor path (PyTorch/oneDNN, or the PyTorch op
    sequence for fused variants) in the same process, interleaved, with the machine's roofline."""
    from . import bench as B
    from ..models import MODELS
    from ..backends.target import resolve

    given = [x for x in (suite, op, spec, model) if x is not None]
    if len(given) > 1:
        raise typer.BadParameter("give at most one of --suite, --op, --spec or --model",
                                 param_hint="--suite/--op/--spec/--model")
    sizes = _batches(batch)
    try:
        tgt = resolve(target)
        why_not = tgt.backend.unavailable("bench")
        if why_not:
            raise ValueError(why_not)
        names = list(MODELS) if model == "all" else (model or "").split(",")
        if (peers or layers) and not (model is not None and all(n in MODELS for n in names)):
            raise ValueError(f"--{'peers' if peers else 'layers'} takes tvmconv.models networks: give --model "
                             "NAME[,NAME...] or 'all'")
        if peers:
            return _bench_peers(names, sizes or (1,), rounds, json_path, png)
        if layers:
            return _bench_layers(names, tgt, sizes or (1,), rounds, json_path)
        if model is not None and all(n in MODELS for n in names):
            return _bench_model(names, tgt, sizes or (1, 8), rounds, json_path)
        what = _what(suite or ("variants" if not given else None), op, spec, model, shape, weight, stride, padding,
                     dilation, groups, bias)
        cases = B.cases(what, input_shape=_ints(input_shape, "--input-shape"), batch=sizes)
    except (ValueError, TypeError) as exc:
        _fail(str(exc))
    roof = B.measure_roofline(tgt.num_cores, target=tgt)
    console.print(f"{B.machine(tgt)}; target {tgt.profile} ({tgt.num_cores} threads)\nroofline: SGEMM "
                  f"{roof.peak_flops / 1e9:.1f} GFLOP/s, copy {roof.bandwidth / 1e9:.1f} GB/s (measured now)")
    records = []
    with console.status("benchmarking...") as status:
        for i, c in enumerate(cases):
            status.update(f"[{i + 1}/{len(cases)}] {c.label}")
            records.append(B.run_case(c, tgt, roof, rounds=rounds, dispatched=dispatched))
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
    label = suite or (Path(model).stem if model else op or ("spec" if spec else "variants"))
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


def _bench_peers(names, batches, rounds, json_path, png):
    from . import bench as B
    from . import peers as P

    console.print(f"{B.machine()}; {torch_threads_now()} threads; fp32")
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


def torch_threads_now() -> int:
    import torch

    return torch.get_num_threads()


def _bench_model(names, tgt, batches, rounds, json_path):
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


def _bench_layers(names, tgt, batches, rounds, json_path):
    """Each network compiled, its functions profiled (``CompiledModel.profile``) and the report printed;
    one JSON line per function with ``--json``."""
    import dataclasses

    import torch

    from ..backends.timing import torch_threads
    from ..compiler import compile as compile_model
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


@app.command("export")
def export_cmd(
    target: str = typer.Option(..., "--target", "-t", help="Profile name: arm64-linux, android-arm64, cuda-sm90..."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write."),
    suite: SuiteOpt = None,
    op: OpOpt = None,
    shape: ShapeOpt = None,
    weight: WeightOpt = None,
    stride: StrideOpt = "1",
    padding: PaddingOpt = "0",
    dilation: DilationOpt = "1",
    groups: GroupsOpt = 1,
    bias: BiasOpt = False,
    spec: SpecOpt = None,
    model: ModelFileOpt = None,
    input_shape: InputShapeOpt = None,
    batch: BatchOpt = None,
    check: bool = typer.Option(False, "--check", help="Build the C example, run every kernel (under qemu for "
                               "aarch64) on random inputs and compare with PyTorch here."),
    check_python: Optional[str] = typer.Option(None, "--check-python", help="Also load every shared library "
                                               "with TVM's runtime in this interpreter of the target's "
                                               "architecture (e.g. the one scripts/aarch64-python.sh makes)."),
):
    """Compile every workload for a target with its tuned (else default) schedule: shared and
    static libraries, a C header, a C example and a manifest (CPU); CUDA source and cubin (CUDA).
    With --model: the whole model as one library (its convolutions on tvmconv's kernels, every
    other op through TVM), a C API, a header and an example."""
    from . import export as X

    _exactly_one(suite, op, spec, model)
    if model is not None:
        if batch is not None:
            _fail("export --model takes the batch from --input-shape")
        _export_model(target, output, str(model), _ints(input_shape, "--input-shape"), check)
        return
    sizes = _batches(batch)
    try:
        what = _what(suite, op, spec, model, shape, weight, stride, padding, dilation, groups, bias, target)
        with console.status("compiling...") as status:
            manifest = X.export(what, target, output, input_shape=_ints(input_shape, "--input-shape"),
                                batch=sizes, progress=lambda i, n, s: status.update(f"[{i + 1}/{n}] {s.name}"))
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    table = Table("workload", "schedule", "files")
    for w in manifest["workloads"]:
        table.add_row(w["name"], w["schedule"], " ".join(w["files"].values()))
    console.print(table)
    console.print(f"{len(manifest['workloads'])} kernels for {manifest['target']} in {output} (manifest.json)")
    bad = False
    if check:
        try:
            ok, total = X.check(output, log=console.print)
        except subprocess.CalledProcessError as exc:
            _build_failed(exc, "the C example")
        console.print(f"{ok}/{total} kernels match PyTorch (static C example)")
        bad |= ok != total
    if check_python:
        ok, total = X.check_runtime(output, check_python, log=console.print)
        console.print(f"{ok}/{total} kernels match PyTorch (TVM runtime in {check_python})")
        bad |= ok != total
    if bad:
        raise typer.Exit(EXIT_DIFFERS)


def _build_failed(exc: subprocess.CalledProcessError, what: str) -> NoReturn:
    """Show the compiler's words (not a traceback) and fail."""
    output_text = (exc.stderr or b"").decode(errors="replace") + (exc.stdout or b"").decode(errors="replace")
    typer.echo(output_text.rstrip(), err=True)
    _fail(f"building {what} failed ({' '.join(map(str, exc.cmd))} exited {exc.returncode})", EXIT_FAILED)


def _export_model(target: str, output: Path, model: str, input_shape, check: bool) -> None:
    """export --model: a tvmconv.models name (its plain-PyTorch form, seeded weights) or a .pt2."""
    import torch

    from ..models import MODELS, input_size
    from . import export_model as XM

    module = None
    if model in MODELS and not Path(model).exists():
        # seeded and calibrated (every layer moves the output: else --check could not see a wrong
        # kernel); the library and the check's reference are this one model
        input_shape = input_shape or (1, 3, input_size(model), input_size(model))
        module = XM.builtin_model(model, input_shape)
    try:
        with console.status(f"compiling {model} for {target}..."):
            manifest = XM.export_model(module if module is not None else Path(model), target, output,
                                       input_shape=input_shape)
    except subprocess.CalledProcessError as exc:
        _build_failed(exc, "the model's library")
    except (ValueError, TypeError, FileNotFoundError) as exc:
        _fail(str(exc))
    console.print(f"{model}: one library for {manifest['target']} in {output}: {manifest['library']} "
                  f"({manifest['steps']} steps, {len(manifest['kernels'])} tvmconv kernels, "
                  f"{manifest['weights_bytes'] / 1e6:.1f} MB of weights, {manifest['arena_bytes'] / 1e6:.1f} MB of "
                  f"working memory), {manifest['header']}, example.c (manifest.json)")
    if not check:
        return
    reference = module if module is not None else torch.export.load(str(model)).module()
    try:
        err = XM.check_model(output, reference, log=console.print)
    except subprocess.CalledProcessError as exc:
        _build_failed(exc, "the example")
    except RuntimeError as exc:
        _fail(str(exc), EXIT_DIFFERS)
    console.print(f"the whole model matches PyTorch on 2 threads: max |diff| {err:.2e}")


@app.command()
def calibrate(
    target: TargetOpt = None,
    suite: SuiteOpt = None,
    model: Optional[str] = typer.Option(None, "--model", help="A tvmconv.models name (the kernels it runs) or a "
                                        "torch.export'ed .pt2 file (its conv layers)."),
    spec: SpecOpt = None,
    batch: BatchOpt = None,
    rounds: int = typer.Option(7, "--rounds", min=3, help="Interleaved timing rounds per workload (more, up to "
                               "15, while they may still decide)."),
    redo: bool = typer.Option(False, "--redo", help="Measure again the workloads already decided on this machine."),
    as_json: AsJsonOpt = False,
):
    """Decide on this machine, ahead of the first calls, which path each workload's op takes (its
    tvmconv kernel or the vendor path): both timed warm and interleaved, decided only where the
    difference stands out of the rounds' noise (else the kernel, "within noise", measured again
    later), the choices stored in the user cache for this machine (CPU model, target, threads)."""
    import time

    from ..backends.machine import machine_of
    from ..backends.target import resolve
    from ..models import MODELS
    from ..spec import spec_from_dict
    from .calibrate import calibrate as run_calibrate, model_workloads

    given = [x for x in (suite, model, spec) if x is not None]
    if len(given) != 1:
        _fail("give exactly one of --suite, --model or --spec")
    sizes = _batches(batch)
    t0 = time.perf_counter()
    try:
        tgt = resolve(target)
        if spec is not None:
            what = spec_from_dict(json.loads(spec))
        elif model is not None and model in MODELS:
            what, sizes = model_workloads(model, tgt, sizes), None  # (run at each batch size)
        else:
            what = suite if suite is not None else Path(model)
        with console.status("calibrating...") as status:
            rows = run_calibrate(what, tgt, rounds=rounds, batch=sizes, redo=redo,
                                 progress=lambda i, n, s: status.update(f"[{i + 1}/{n}] {s.name}"))
    except (ValueError, TypeError) as exc:  # (json.JSONDecodeError is a ValueError)
        _fail(str(exc))
    except OSError as exc:
        _fail(str(exc), EXIT_FAILED)
    took = time.perf_counter() - t0
    if as_json:
        return _print_json(rows)
    fmt = (lambda s: "-" if s is None else f"{s * 1e3:.3f}")
    table = Table("workload", "tvmconv ms", "vendor ms", "choice", "margin", "confidence", "source", "s")
    for r in rows:
        table.add_row(r["workload"][:70], fmt(r["tvmconv_s"]), fmt(r["vendor_s"]), r["choice"],
                      "-" if r["margin"] is None else f"{r['margin']:.2f}x", _confidence(r), r["source"],
                      f"{r['seconds']:.1f}")
    console.print(table)
    console.print(f"{machine_of(tgt).description}: {len(rows)} workloads in {took:.1f} s "
                  f"({took / max(1, len(rows)):.1f} s per workload); choices stored in the user cache")


cache_app = typer.Typer(help="Inspect and clear the schedule cache.")
app.add_typer(cache_app, name="cache")
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # no separators, no "..": a folder name


@cache_app.command("list")
def cache_list(target: ProfileFilterOpt = None,
               as_json: AsJsonOpt = False):
    """Every tuned schedule record, shipped and user, with its measured time."""
    from ..runtime import cache as C

    if target is not None and not _PROFILE_NAME.match(target):  # it becomes a glob pattern
        _fail(f"--target must be a profile name (see `tvmconv targets`), got {target!r}")
    from ..runtime import dispatch as CH

    table = Table("profile", "workload", "GFLOP/s", "ms", "trials", "schedule", "dispatch", "dispatch source",
                  "where")
    shipped = C.shipped_root().resolve()
    rows = []
    listed = set()
    for rec, path in C.list_records(profile=target):
        where = "shipped" if path.resolve().is_relative_to(shipped) else "user"
        profile, name = rec.profile or path.parent.name, rec.name or path.stem
        choice, source, entry = CH.record_choice(rec)
        listed.add((profile, rec.key))
        rows.append(_cache_row(profile, name, choice, source, entry, where, rec, path))
        table.add_row(*_cache_cells(rows[-1], entry or rec.dispatch))
    for profile, key, entry in CH.calibrated(profile=target):  # choices of workloads listed with no record
        if (profile, key) in listed:
            continue
        rows.append(_cache_row(profile, entry.get("workload", key), entry["choice"], CH.CALIBRATED, entry,
                               "user (dispatch)", schedule=entry.get("schedule")))
        table.add_row(*_cache_cells(rows[-1], entry))
    if as_json:
        return _print_json(rows)
    console.print(table)


def _cache_row(profile: str, workload: str, choice: str | None, source: str, entry: dict | None, where: str,
               rec=None, path: Path | None = None, schedule: str | None = None) -> dict:
    """One row of ``cache list --json``: a tuned record's (``rec`` at ``path``) or, with neither, a
    workload only calibrated here (its record fields None; ``schedule``: the one calibrated), so
    that every row has the same keys."""
    return {"profile": profile, "workload": workload, "gflops": rec.gflops if rec else None,
            "run_secs": rec.run_secs if rec else None, "trials": rec.trials if rec else None,
            "schedule": rec.source if rec else schedule,
            "dispatch": rec.dispatch.to_dict() if rec and rec.dispatch else None, "choice": choice,
            "dispatch_source": source, "calibration": entry, "where": where,
            "path": str(path) if path is not None else None}


def _cache_cells(row: dict, d) -> list[str]:
    """The table's cells of a ``_cache_row`` (``d``: what ``_dispatch_label`` reads the times from)."""
    rec = row["path"] is not None
    return [row["profile"], str(row["workload"]), f"{row['gflops'] or 0:.1f}" if rec else "",
            f"{row['run_secs'] * 1e3:.4f}" if rec else "", "" if row["trials"] is None else str(row["trials"]),
            row["schedule"] or "", _dispatch_label(row["choice"], d), row["dispatch_source"], row["where"]]


def _dispatch_label(choice: str | None, d) -> str:
    """A workload's dispatch choice and, where known (``d``: a record's ``Dispatch`` or a stored
    choice), the vendor's time over ours and the paired rounds that back it."""
    if choice is None:
        return "-"
    fields = d if isinstance(d, dict) else {**dict(getattr(d, "extra", None) or {}),
                                            "vendor_s": getattr(d, "vendor_s", None),
                                            "tvmconv_s": getattr(d, "tvmconv_s", None)}
    v, t = fields.get("vendor_s"), fields.get("tvmconv_s")
    parts = ([f"{v / t:.2f}x"] if v is not None and t else []) + [c for c in [_confidence(fields)] if c != "-"]
    return f"{choice} ({', '.join(parts)})" if parts else choice


def _confidence(r: dict) -> str:
    """``7/7 rounds``, ``within noise (5/7 rounds)``, or "-" where unknown (no vendor, written before)."""
    if r.get("agree") is None or r.get("rounds") is None:
        return "-" if r.get("decided", True) is not False else "within noise"
    rounds = f"{r['agree']}/{r['rounds']} rounds"
    return rounds if r.get("decided", True) is not False else f"within noise ({rounds})"


@cache_app.command("show")
def cache_show(name: str = typer.Argument(..., help="A workload name (or a prefix of it) from `cache list`.")):
    """Print the schedule record(s) of a workload."""
    from ..runtime import cache as C

    found = [(r, p) for r, p in C.list_records() if (r.name or "").startswith(name) or p.stem.startswith(name)]
    if not found:
        _fail(f"no schedule record matches {name!r} (see `tvmconv cache list`)")
    for rec, path in found:
        console.print(f"[bold]{path}[/bold]")
        brief = rec.to_dict()
        brief["trace"] = f"<{len(rec.trace[0]) if rec.trace else 0} schedule instructions>"
        console.print_json(json.dumps(brief))


@cache_app.command("clear")
def cache_clear(
    target: ProfileFilterOpt = None,
    kernels_only: bool = typer.Option(False, "--kernels", help="Only the compiled kernels, keep schedules and logs."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
):
    """Delete the user cache (compiled kernels, schedules, tuning logs). Shipped schedules stay."""
    import shutil

    from ..runtime import cache as C

    root = C.user_root()
    parts = ["kernels"] if kernels_only else ["kernels", "schedules", "tuning_logs"]
    dirs = [root / p for p in parts]
    if target is not None:
        dirs = _profile_dirs_to_clear(dirs, target)
    dirs = [d for d in dirs if d.exists()]
    outside = [d for d in dirs if d.is_symlink() or not d.resolve().is_relative_to(root.resolve())]
    if outside:  # a symlinked folder: rmtree would delete what lies elsewhere
        _fail(f"{', '.join(map(str, outside))} lies outside the cache {root}; not deleting it")
    if not dirs:
        console.print("nothing to clear")
        return
    if not yes:
        typer.confirm(f"delete {', '.join(map(str, dirs))}?", abort=True)
    for d in dirs:
        shutil.rmtree(d)
    console.print(f"cleared {len(dirs)} folder(s) under {root}")


def _profile_dirs_to_clear(dirs: list[Path], target: str) -> list[Path]:
    """``dirs``' children named ``target``: it must look like a profile name (no separators, no
    ``..``) and be a known profile or a folder there, so ``--target ../x`` never leaves the cache."""
    from ..backends.target import profiles

    known = _PROFILE_NAME.match(target) and (target in profiles() or any((d / target).is_dir() for d in dirs))
    if not known:
        _fail(f"--target must be a profile name (see `tvmconv targets`) or a folder in the cache, "
                     f"got {target!r}")
    return [d / target for d in dirs]


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
