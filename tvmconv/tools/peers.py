"""``tvmconv bench --model M --peers``: a network through every path a user could pick, in one process.

    rows = compare("mobilenet_v2", batch=1)      # one row per path, timed interleaved

Paths (fp32, the same threads): PyTorch eager, Inductor (``torch.compile``), ONNX Runtime and
OpenVINO (``INFERENCE_PRECISION_HINT=f32``: it picks bf16 on CPUs that have it), from one ONNX
export; ``tvmconv.compile``, ``tvmconv.convert`` and ``torch.compile(backend="tvmconv")``. A path
whose package is not installed (``pip install 'tvmconv[peers]'``) or that fails to build is skipped
with one line saying why. Each row has the path's median seconds, spread, speed-up over eager and
against ONNX Runtime, its build time and its largest difference from eager's output (relative to
the output's scale). The model is a ``tvmconv.models`` network with seeded weights and BatchNorm
statistics calibrated (``export_model.builtin_model``), so every layer moves the output.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from ..backends import timing

log = logging.getLogger("tvmconv")

PATHS = ("eager", "inductor", "onnxruntime", "openvino", "tvmconv.compile", "tvmconv.convert", "torch.compile tvmconv")


def _onnx(model, x, tmp: Path) -> Path:
    path = tmp / "model.onnx"
    if not path.exists():
        with torch.no_grad(), contextlib.redirect_stdout(None):
            torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False,
                              opset_version=17)
    return path


def _build(path: str, model, x, threads: int, tmp: Path) -> Callable[[], torch.Tensor]:
    """The callable that runs ``model`` on ``x`` along ``path`` (raises ImportError where its
    package is not installed)."""
    import tvmconv

    if path == "eager":
        return lambda: model(x)
    if path == "inductor":
        fn = torch.compile(model)
        return lambda: fn(x)
    if path == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(_onnx(model, x, tmp)), opts, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        return lambda: torch.from_numpy(sess.run(None, feed)[0])
    if path == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(_onnx(model, x, tmp)), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
        request, feed = compiled.create_infer_request(), x.numpy()
        return lambda: torch.from_numpy(request.infer({0: feed})[0])
    if path == "tvmconv.compile":
        fast = tvmconv.compile(model, (x,))
        return lambda: fast(x)
    if path == "tvmconv.convert":
        fast = tvmconv.convert(model, (x,))
        return lambda: fast(x)
    if path == "torch.compile tvmconv":
        fn = torch.compile(model, backend="tvmconv")
        return lambda: fn(x)
    raise ValueError(f"unknown path {path!r}; the paths are {', '.join(PATHS)}")


def compare(name: str, batch: int = 1, size: int | None = None, *, paths=PATHS, rounds: int = 7,
            threads: int | None = None, say=print) -> list[dict]:
    """One row per path of ``tvmconv.models`` network ``name`` on a ``(batch, 3, size, size)``
    input (see the module docstring); ``say`` gets one line per skipped path."""
    from ..models import input_size
    from .export_model import builtin_model

    threads = threads or torch.get_num_threads()
    s = size or input_size(name)
    shape = (batch, 3, s, s)
    model = builtin_model(name, shape)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    fns, built = {}, {}
    with tempfile.TemporaryDirectory(prefix="tvmconv-peers-") as tmp, torch.no_grad():
        for p in paths:
            t0 = time.perf_counter()
            try:
                fn = _build(p, model, x, threads, Path(tmp))
                want = fn()  # (the first call: Inductor and the lazy paths finish building here)
            except ImportError as exc:
                say(f"{p}: skipped, not installed ({exc.name or exc}); pip install 'tvmconv[peers]'")
                continue
            except Exception as exc:  # noqa: BLE001 - a peer that cannot take the model is reported, not fatal
                say(f"{p}: skipped, it failed on {name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                continue
            fns[p], built[p] = fn, (time.perf_counter() - t0, want)
        ref = built["eager"][1] if "eager" in built else model(x)
        times = timing.interleaved_many(list(fns.values()), rounds=rounds, min_round_s=0.1, warmup=1)
    scale = max(1.0, float(ref.abs().max()))
    med = {p: timing.median(t) for p, t in zip(fns, times)}
    rows = []
    for (p, (build_s, out)), t in zip(built.items(), times):
        rows.append({"model": name, "batch": batch, "input": list(shape), "path": p, "seconds": med[p],
                     "spread": timing.spread(t), "speedup_vs_eager": med.get("eager", float("nan")) / med[p],
                     "vs_onnxruntime": med.get("onnxruntime", float("nan")) / med[p], "build_s": build_s,
                     "max_rel_diff": float((out.double() - ref.double()).abs().max()) / scale, "threads": threads})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """Speed-up over eager per model (groups) and path (bars), with ONNX Runtime's as the line to
    beat."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys((r["model"], r["batch"]) for r in rows))
    paths = [p for p in PATHS if any(r["path"] == p for r in rows)]
    width = 0.8 / max(1, len(paths))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(models)), 4))
    for i, p in enumerate(paths):
        ys = [next((r["speedup_vs_eager"] for r in rows if (r["model"], r["batch"]) == m and r["path"] == p), 0)
              for m in models]
        ax.bar([k + i * width for k in range(len(models))], ys, width, label=p)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(models))])
    ax.set_xticklabels([f"{m} (batch {b})" for m, b in models], rotation=20, ha="right")
    ax.set_ylabel("speed-up over PyTorch eager (higher is faster)")
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


__all__ = ["PATHS", "compare", "plot"]
