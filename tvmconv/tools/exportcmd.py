"""``tvmconv export``'s body: the kernels of a suite, op, spec or model compiled for a target
(export.py), or with ``--model`` the whole model as one library (export_model.py), and the checks
that run them."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .options import Workloads
from .terminal import EXIT_DIFFERS, build_failed, console, fail


def export(w: Workloads, target: str, output: Path, check: bool, check_python: Optional[str]) -> None:
    """Compile the workloads ``w`` names for ``target`` into ``output``, print what was written,
    and (``check``) run them from C, (``check_python``) through TVM's runtime in that interpreter;
    exits ``EXIT_DIFFERS`` when a kernel differs from PyTorch."""
    from . import export as X

    w.exactly_one()
    if w.model is not None:
        if w.batch is not None:
            fail("export --model takes the batch from --input-shape")
        return export_model(target, output, str(w.model), w.input_dims(), check)
    sizes = w.batches()
    try:
        what = w.what(target)
        with console.status("compiling...") as status:
            manifest = X.export(what, target, output, input_shape=w.input_dims(), batch=sizes,
                                progress=lambda i, n, s: status.update(f"[{i + 1}/{n}] {s.name}"))
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    table = Table("workload", "schedule", "files")
    for e in manifest["workloads"]:
        table.add_row(e["name"], e["schedule"], " ".join(e["files"].values()))
    console.print(table)
    console.print(f"{len(manifest['workloads'])} kernels for {manifest['target']} in {output} (manifest.json)")
    bad = False
    if check:
        try:
            ok, total = X.check(output, log=console.print)
        except subprocess.CalledProcessError as exc:
            build_failed(exc, "the C example")
        console.print(f"{ok}/{total} kernels match PyTorch (static C example)")
        bad |= ok != total
    if check_python:
        ok, total = X.check_runtime(output, check_python, log=console.print)
        console.print(f"{ok}/{total} kernels match PyTorch (TVM runtime in {check_python})")
        bad |= ok != total
    if bad:
        raise typer.Exit(EXIT_DIFFERS)


def export_model(target: str, output: Path, model: str, input_shape, check: bool) -> None:
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
        build_failed(exc, "the model's library")
    except (ValueError, TypeError, FileNotFoundError) as exc:
        fail(str(exc))
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
        build_failed(exc, "the example")
    except RuntimeError as exc:
        fail(str(exc), EXIT_DIFFERS)
    console.print(f"the whole model matches PyTorch on 2 threads: max |diff| {err:.2e}")
