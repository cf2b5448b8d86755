"""``tvmconv`` command line: the commands and their options, each handing its work to the tools
module that does it (options.py declares the options they share, terminal.py how they print and
exit). Nothing here imports torch or TVM until a command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .options import (AsJsonOpt, BatchOpt, JsonPathOpt, ProfileFilterOpt, SpecOpt, SuiteOpt, TargetOpt, Workloads,
                      workload_options)
from .terminal import EXIT_DIFFERS, EXIT_FAILED, EXIT_USAGE

__all__ = ["app", "main", "EXIT_FAILED", "EXIT_USAGE", "EXIT_DIFFERS"]

app = typer.Typer(add_completion=False, help="tvmconv: convolution variants compiled and scheduled by TVM.")


def _version(value: bool):
    if value:
        from importlib import metadata

        typer.echo(f"tvmconv {metadata.version('tvmconv')}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """tvmconv: convolution variants compiled and scheduled by TVM."""


@app.command()
def variants(as_json: AsJsonOpt = False):
    """List the registered convolution variants."""
    from .listings import variants as listing

    listing(as_json)


@app.command()
def check(
    variant: Optional[list[str]] = typer.Option(None, "--variant", "-v", help="Only these variants (repeatable)."),
    no_time: bool = typer.Option(False, "--no-time", help="Check correctness only."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write one JSON record per variant here."),
):
    """Run every variant on the embedded default shape (1x64x56x56, 3x3, 64 out), check it against
    PyTorch and time both, interleaved. Exits 3 if any result differs from its reference."""
    from .check import report

    if report(variant, time_it=not no_time, json_path=json_path):
        raise typer.Exit(EXIT_DIFFERS)


@app.command()
def targets(as_json: AsJsonOpt = False):
    """List the target profiles; marks the one detected for this host."""
    from .listings import targets as listing

    listing(as_json)


@app.command()
def suites(as_json: AsJsonOpt = False):
    """List the named suites of layer shapes that tune, bench and export take (--suite)."""
    from .listings import suites as listing

    listing(as_json)


@app.command()
@workload_options()
def tune(
    target: TargetOpt = None,
    w: Workloads = None,
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
    from .tunecmd import tune as body

    body(w, target, untuned, json_path, trials=trials, rpc=rpc, cache_dir=cache_dir, seed=seed,
         num_trials_per_iter=per_iter, population=population, dispatch=not no_dispatch, rpc_timeout=rpc_timeout,
         time_limit=time_limit)


@app.command()
@workload_options(
    suite=Annotated[Optional[str], typer.Option("--suite", help="'variants' (default: every variant on the default "
                                                "shape), a suite name, or 'all'.")],
    model=Annotated[Optional[str], typer.Option("--model", help="tvmconv.models names (comma-separated, or 'all'; "
                                                "end-to-end against their PyTorch twins) or a torch.export'ed .pt2 "
                                                "file (its conv layers).")])
def bench(
    target: TargetOpt = None,
    w: Workloads = None,
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
    from .benchcmd import bench as body

    body(w, target, rounds, json_path, png, peers, layers, dispatched)


@app.command("export")
@workload_options()
def export_cmd(
    target: str = typer.Option(..., "--target", "-t", help="Profile name: arm64-linux, android-arm64, cuda-sm90..."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write."),
    w: Workloads = None,
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
    from .exportcmd import export as body

    body(w, target, output, check, check_python)


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
    from .calibrate import command

    command(target, suite, model, spec, batch, rounds=rounds, redo=redo, as_json=as_json)


cache_app = typer.Typer(help="Inspect and clear the schedule cache.")
app.add_typer(cache_app, name="cache")


@cache_app.command("list")
def cache_list(target: ProfileFilterOpt = None, as_json: AsJsonOpt = False):
    """Every tuned schedule record, shipped and user, with its measured time."""
    from .cachecmd import list_records

    list_records(target, as_json)


@cache_app.command("show")
def cache_show(name: str = typer.Argument(..., help="A workload name (or a prefix of it) from `cache list`.")):
    """Print the schedule record(s) of a workload."""
    from .cachecmd import show

    show(name)


@cache_app.command("clear")
def cache_clear(
    target: ProfileFilterOpt = None,
    kernels_only: bool = typer.Option(False, "--kernels", help="Only the compiled kernels, keep schedules and logs."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
):
    """Delete the user cache (compiled kernels, schedules, tuning logs). Shipped schedules stay."""
    from .cachecmd import clear

    clear(target, kernels_only, yes)


def main():  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
