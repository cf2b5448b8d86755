"""``tvmconv export``: the kernels of a suite, spec or model, compiled for a target, as files an
app or a device uses without tvmconv.

For CPU targets (x86, arm64-linux, android-arm64), per workload:
  ``<cname>.so``   a shared library TVM's runtime loads (``tvm.runtime.load_module``);
  ``<cname>.o``    the same kernel as a system-library object, collected in ``libtvmconv_kernels.a``,
                   which a C program links statically with ``tvmconv_runtime.c`` (no TVM runtime);
and once: ``tvmconv_kernels.h`` (the calling convention and a table of every kernel with its
argument shapes), ``tvmconv_runtime.c`` (the four runtime hooks the kernels call: workspace
allocation, a parallel launch on POSIX threads, error reporting), ``example.c`` (calls every kernel, or one
on tensors read from files), ``Makefile`` and ``manifest.json``.
For CUDA targets, per workload: ``<cname>.cu`` (CUDA source) and ``<cname>.cubin`` (nvcc), and the
manifest.

``check`` (``--check``) builds the example for the target, runs every kernel on random inputs (under
``qemu-aarch64-static`` when the target is aarch64 and this machine is not) and compares the
outputs with PyTorch's on this machine.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..runtime import cache
from ..spec import Spec
from ..backends.target import resolve
from ..backends.toolchain import Toolchain
from . import c_sources
from ..suites.workloads import workloads

MANIFEST_FORMAT = 2  # 2: kernels take the op's own shapes (1: 3-D spatial views)
_DTYPES = {"float32": (2, 32), "float64": (2, 64), "float16": (2, 16)}  # DLPack (code, bits)


@dataclass
class Exported:
    spec: Spec
    cname: str
    count: int
    schedule: str
    record: str | None
    files: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        s = self.spec
        return {"name": s.name, "cname": self.cname, "variant": s.variant, "count": self.count,
                "args": [{"name": n, "shape": list(shape), "dtype": s.dtype} for n, shape in s.arg_shapes],
                "output": {"shape": list(s.out_shape), "dtype": s.dtype}, "flops": s.flops, "schedule": self.schedule,
                "record": self.record, "files": self.files, "spec": s.to_dict()}


def cname_of(spec: Spec) -> str:
    return "tvmconv_" + re.sub(r"[^A-Za-z0-9_]", "_", spec.name)


def export(what, target, out_dir, *, example_inputs=None, input_shape=None, progress=None, batch=None) -> dict:
    """Compile every workload of ``what`` for ``target`` into ``out_dir`` (``batch``: each workload
    at each of these batch sizes, as ``suites.workloads.workloads`` takes it); returns the manifest."""
    from ..runtime import build

    tgt = resolve(target)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = workloads(what, example_inputs, input_shape, batch=batch)
    if not items:
        raise ValueError(f"no convolution workloads found in {what!r}")
    backend = tgt.backend
    tools = backend.toolchain()
    if tools is not None:
        tools.require(f"exporting for {tgt.profile}")
    exported: list[Exported] = []
    for i, (spec, count) in enumerate(items):
        if progress:
            progress(i, len(items), spec)
        record, source, build_target = build.choose(spec, tgt)
        mod, _plan, source = build.schedule(spec, build_target, record, source)
        cname = cname_of(spec)
        func = build.natural_signature(mod, spec)["main"].with_attr("global_symbol", cname)  # the op's shapes
        e = Exported(spec, cname, count, source.split(":", 1)[0] if build.from_record(source) else source,
                     build.record_file(source))
        e.files = backend.export_kernel(func, cname, out, build_target, tools)
        exported.append(e)
    manifest = {"format": MANIFEST_FORMAT, "target": tgt.profile, "tvm_target": tgt.key_dict,
                "tvm": cache.tvm_version(), "workloads": [e.to_dict() for e in exported]}
    if backend.exports_c_library:
        _write_c_files(exported, tools, out)
        manifest["static_library"] = "libtvmconv_kernels.a"
        manifest["header"] = "tvmconv_kernels.h"
        manifest["example"] = {"source": "example.c", "build": "make", "binary": "example",
                               "run": " ".join([*tools.runner, "./example"])}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


# -- C files (their text: tools/c/, see c_sources) -----------------------------------------------
def _write_c_files(exported: list[Exported], tools: Toolchain, out: Path) -> None:
    (out / "tvmconv_kernels.h").write_text(_kernels_header(exported))
    (out / "tvmconv_runtime.c").write_text(c_sources.text("runtime.c"))
    (out / "example.c").write_text(c_sources.text("kernels_example.c"))
    objs = " ".join(f"{e.cname}.o" for e in exported)
    (out / "Makefile").write_text(
        f"CC = {tools.cc}\nAR = {tools.ar}\n\nexample: example.c tvmconv_runtime.c libtvmconv_kernels.a\n"
        f"\t$(CC) -O2 -static -pthread -o $@ example.c tvmconv_runtime.c libtvmconv_kernels.a -lm\n\n"
        f"libtvmconv_kernels.a: {objs}\n\trm -f $@\n\t$(AR) rcs $@ {objs}\n")
    subprocess.run([tools.ar, "rcs", str(out / "libtvmconv_kernels.a"), *[f"{e.cname}.o" for e in exported]],
                   cwd=out, check=True)


def _kernels_header(exported: list[Exported]) -> str:
    """``tvmconv_kernels.h``: the calling convention and a table of every kernel's shapes."""
    lines = [c_sources.text("kernels_head.h")]
    for e in exported:
        lines.append(f"int __tvm_ffi_{e.cname}(void* self, const TVMFFIAny* args, int32_t num_args, "
                     f"TVMFFIAny* result);")
    lines.append("static const tvmconv_kernel_t TVMCONV_KERNELS[] = {")
    for e in exported:
        shapes = [shape for _, shape in e.spec.arg_shapes] + [e.spec.out_shape]
        if len(shapes) > 8 or any(len(s) > 5 for s in shapes):
            raise ValueError(f"export: {e.spec.name} has more arguments or dimensions than the C table holds")
        nd = ", ".join(str(len(s)) for s in shapes)
        sh = ", ".join("{" + ", ".join(map(str, s)) + "}" for s in shapes)
        bits = _DTYPES[e.spec.dtype][1]
        lines.append(f'  {{"{e.spec.name}", __tvm_ffi_{e.cname}, {len(shapes)}, {{{nd}}}, {{{sh}}}, {bits}}},')
    lines.append("};")
    lines.append(f"#define TVMCONV_NUM_KERNELS {len(exported)}")
    lines.append("#ifdef __cplusplus\n}  /* extern \"C\" */\n#endif")
    lines.append("#endif  /* TVMCONV_KERNELS_H_ */\n")
    return "\n".join(lines)


# -- checking ------------------------------------------------------------------------------------
def check(out_dir, *, atol: float = 1e-3, log=print) -> tuple[int, int]:
    """Build the exported example for its target, run every kernel (under qemu when the target is
    another architecture) on random inputs and compare with PyTorch here. Returns (matched, total)."""
    from .. import reference
    from ..spec import spec_from_dict

    out = Path(out_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    tgt = resolve(manifest["target"])
    if not tgt.backend.exports_c_library:
        raise ValueError(f"export --check runs the C example of CPU targets; {tgt.profile!r} is "
                         f"{tgt.backend.description}, whose kernels run on its device")
    tools = tgt.backend.toolchain()
    tools.require("export --check", compiler_always=True)
    subprocess.run(["make", "-s", "example"], cwd=out, check=True, capture_output=True)
    ok = 0
    wls = manifest["workloads"]
    with tempfile.TemporaryDirectory() as tmp:
        for i, w in enumerate(wls):
            spec = spec_from_dict(w["spec"])
            vendor = reference.reference_for(spec)
            if vendor is None:
                log(f"  {spec.name}: no PyTorch reference to compare with, skipped")
                continue
            full, kernel = reference.random_args(spec, torch.Generator().manual_seed(i))
            files = []
            for j, t in enumerate(kernel):
                path = Path(tmp) / f"in{j}.bin"
                path.write_bytes(t.numpy().tobytes())
                files.append(str(path))
            res_path = Path(tmp) / "out.bin"
            proc = subprocess.run([*tools.runner, str(out / "example"), str(i), *files, str(res_path)],
                                  capture_output=True, text=True, timeout=600)
            want = vendor[1](*full)
            if proc.returncode != 0:
                log(f"  {spec.name}: the kernel failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
                continue
            got = np.frombuffer(res_path.read_bytes(), dtype=spec.dtype).reshape(want.shape)
            err = float(np.abs(got - want.numpy()).max())
            good = err <= atol * max(1.0, float(want.abs().max()))
            ok += good
            log(f"  {spec.name}: max |diff| {err:.2e} {'ok' if good else 'MISMATCH'}")
    return ok, len(wls)


_RUNTIME_CHECK = """
import json, sys
import numpy as np
import tvm
out_dir, io_dir = sys.argv[1], sys.argv[2]
manifest = json.load(open(out_dir + "/manifest.json"))
for i, w in enumerate(manifest["workloads"]):
    try:
        f = tvm.runtime.load_module(out_dir + "/" + w["files"]["shared"])[w["cname"]]
        args = [tvm.runtime.tensor(np.load(f"{io_dir}/{i}_{j}.npy")) for j in range(len(w["args"]))]
        out = tvm.runtime.tensor(np.zeros(w["output"]["shape"], w["output"]["dtype"]))
        f(*args, out)
        np.save(f"{io_dir}/{i}_out.npy", out.numpy())
    except Exception as exc:
        print(f"{w['name']}: {type(exc).__name__}: {exc}", file=sys.stderr)
"""


def check_runtime(out_dir, python, *, atol: float = 1e-3, log=print) -> tuple[int, int]:
    """Load every exported shared library with TVM's runtime in ``python`` (an interpreter of the
    target's architecture, e.g. the emulated aarch64 one of scripts/aarch64-python.sh, or this
    one for the host's target), run it on random inputs and compare with PyTorch here."""
    from .. import reference
    from ..spec import spec_from_dict

    out = Path(out_dir).resolve()
    wls = json.loads((out / "manifest.json").read_text())["workloads"]
    ok = 0
    with tempfile.TemporaryDirectory() as tmp:
        wants = {}
        for i, w in enumerate(wls):
            spec = spec_from_dict(w["spec"])
            full, kernel = reference.random_args(spec, torch.Generator().manual_seed(100 + i))
            for j, (t, (_, shape)) in enumerate(zip(kernel, spec.arg_shapes)):
                np.save(f"{tmp}/{i}_{j}.npy", t.reshape(shape).numpy())
            wants[i] = reference.reference_for(spec)[1](*full)
        script = Path(tmp) / "run.py"
        script.write_text(_RUNTIME_CHECK)
        proc = subprocess.run([*([python] if isinstance(python, str) else python), str(script), str(out), tmp],
                              capture_output=True, text=True, timeout=1800)
        for i, w in enumerate(wls):
            path = Path(tmp) / f"{i}_out.npy"
            if not path.exists():
                log(f"  {w['name']}: did not run in TVM's runtime: {proc.stderr.strip()[-300:]}")
                continue
            want = wants[i].numpy()
            err = float(np.abs(np.load(path).reshape(want.shape) - want).max())
            good = err <= atol * max(1.0, float(np.abs(want).max()))
            ok += good
            log(f"  {w['name']} (TVM runtime): max |diff| {err:.2e} {'ok' if good else 'MISMATCH'}")
    return ok, len(wls)


__all__ = ["export", "check", "check_runtime", "cname_of", "MANIFEST_FORMAT"]
