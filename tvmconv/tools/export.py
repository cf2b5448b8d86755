"""``tvmconv export``: the kernels of a suite, spec or model, compiled for a target, as files an
app or a device uses without tvmconv.

For CPU targets (x86, arm64-linux, android-arm64), per workload:
  ``<cname>.so``   a shared library TVM's runtime loads (``tvm.runtime.load_module``);
  ``<cname>.o``    the same kernel as a system-library object, collected in ``libtvmconv_kernels.a``,
                   which a C program links statically with ``tvmconv_runtime.c`` (no TVM runtime);
and once: ``tvmconv_kernels.h`` (the calling convention and a table of every kernel with its
argument shapes), ``tvmconv_runtime.c`` (the four runtime hooks the kernels call: workspace
allocation, a serial parallel-launch, error reporting), ``example.c`` (calls every kernel, or one
on tensors read from files), ``Makefile`` and ``manifest.json``.
For CUDA targets, per workload: ``<cname>.cu`` (CUDA source) and ``<cname>.cubin`` (nvcc), and the
manifest.

``check`` (``--check``) builds the example for the target, runs every kernel on random inputs (under
``qemu-aarch64-static`` when the target is aarch64 and this machine is not) and compares the
outputs with PyTorch's on this machine.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..runtime import cache
from ..spec import Spec
from ..backends.target import TargetInfo, profiles, resolve
from .workloads import workloads

MANIFEST_FORMAT = 1
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
                "args": [{"name": n, "shape": list(shape), "dtype": s.dtype} for n, shape in s.kernel_arg_shapes],
                "output": {"shape": list(s.kernel_out_shape), "dtype": s.dtype},
                "torch_args": [{"name": n, "shape": list(shape)} for n, shape in s.arg_shapes],
                "torch_output": list(s.out_shape), "flops": s.flops, "schedule": self.schedule,
                "record": self.record, "files": self.files, "spec": s.to_dict()}


def cname_of(spec: Spec) -> str:
    return "tvmconv_" + re.sub(r"[^A-Za-z0-9_]", "_", spec.name)


def _toolchain(target: TargetInfo) -> dict:
    """C compiler, archiver and how to run a binary of ``target`` on this machine."""
    prof = profiles().get(target.profile)
    build = prof.build if prof else {"kind": "native"}
    kind = build.get("kind", "native")
    triple = target.dict.get("mtriple", "")
    if kind == "cross":
        cc = build["cc"]
        ar = cc[:-3] + "ar" if cc.endswith("gcc") else "ar"
    elif kind == "ndk":
        cc = os.environ.get("TVM_NDK_CC")
        if not cc:
            raise ValueError(f"target {target.profile!r} builds with the Android NDK: set TVM_NDK_CC to the NDK's "
                             f"clang++ (see README.md, 'Phones and ARM boards')")
        ar = str(Path(cc).with_name("llvm-ar"))
    else:
        cc, ar = os.environ.get("CC", "gcc"), "ar"
    runner: list[str] = []
    if triple.startswith("aarch64") and platform.machine() not in ("aarch64", "arm64"):
        runner = ["qemu-aarch64-static"]
    return {"kind": kind, "cc": cc, "ar": ar, "runner": runner}


def _need(tool: str, what: str) -> None:
    if shutil.which(tool) is None:
        raise FileNotFoundError(f"{what} needs `{tool}`, which is not on PATH (Debian's aarch64 cross compiler "
                                f"and qemu: bash scripts/cross-tools.sh)")


def export(what, target, out_dir, *, example_inputs=None, input_shape=None, progress=None) -> dict:
    """Compile every workload of ``what`` for ``target`` into ``out_dir``; returns the manifest."""
    import tvm

    from ..runtime import build

    tgt = resolve(target)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = workloads(what, example_inputs, input_shape)
    if not items:
        raise ValueError(f"no convolution workloads found in {what!r}")
    cuda = tgt.kind == "cuda"
    tools = None if cuda else _toolchain(tgt)
    if tools and tools["kind"] == "cross":
        _need(tools["cc"], f"exporting for {tgt.profile}")
    exported: list[Exported] = []
    for i, (spec, count) in enumerate(items):
        if progress:
            progress(i, len(items), spec)
        record, source, build_target = build.choose(spec, tgt)
        mod, _plan, source = build.schedule(spec, build_target, record, source)
        cname = cname_of(spec)
        func = mod["main"].with_attr("global_symbol", cname)
        e = Exported(spec, cname, count, "tuned" if source.startswith("tuned") else source,
                     source.removeprefix("tuned:") if source.startswith("tuned") else None)
        if cuda:
            _export_cuda(tvm, func, cname, tgt, out, e)
        else:
            _export_cpu(tvm, func, cname, build_target, tools, out, e)
        exported.append(e)
    manifest = {"format": MANIFEST_FORMAT, "target": tgt.profile, "tvm_target": tgt.key_dict,
                "tvm": cache.tvm_version(), "workloads": [e.to_dict() for e in exported]}
    if not cuda:
        _write_c_files(exported, tools, out)
        manifest["static_library"] = "libtvmconv_kernels.a"
        manifest["header"] = "tvmconv_kernels.h"
        manifest["example"] = {"source": "example.c", "build": "make", "binary": "example",
                               "run": " ".join(tools["runner"] + ["./example"])}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _export_cpu(tvm, func, cname, target, tools, out: Path, e: Exported) -> None:
    from tvm.support import cc as _cc

    ex = tvm.compile(tvm.IRModule({cname: func}), target=target.tvm())
    so = out / f"{cname}.so"
    if tools["kind"] == "cross":
        ex.export_library(str(so), fcompile=_cc.cross_compiler(tools["cc"]))
    elif tools["kind"] == "ndk":
        from tvm.support import ndk

        ex.export_library(str(so), fcompile=ndk.create_shared)
    else:
        ex.export_library(str(so))
    sys_ex = tvm.compile(tvm.IRModule({cname: func.with_attr("system_lib_prefix", "")}), target=target.tvm())
    obj = out / f"{cname}.o"
    sys_ex.mod.write_to_file(str(obj))
    e.files = {"shared": so.name, "object": obj.name}


def _export_cuda(tvm, func, cname, target, out: Path, e: Exported) -> None:
    from tvm.support import nvcc

    from ..runtime.build import use_nvcc

    use_nvcc()
    ex = tvm.compile(tvm.IRModule({cname: func}), target=target.tvm())
    src = ex.mod.imports[0].inspect_source()
    (out / f"{cname}.cu").write_text(src)
    arch = target.dict.get("arch", "sm_80")
    with tvm.target.Target(target.tvm()):
        cubin = nvcc.compile_cuda(src, target_format="cubin", arch=arch, compiler="nvcc")
    (out / f"{cname}.cubin").write_bytes(cubin)
    e.files = {"cuda": f"{cname}.cu", "cubin": f"{cname}.cubin"}


# -- C files -------------------------------------------------------------------------------------
_HEADER = """\
/* tvmconv kernels, generated by `tvmconv export`. Each kernel is called as
 *     int rc = KERNEL(NULL, args, num_args, NULL);
 * with one TVMFFIAny per tensor (inputs in manifest order, then the output), each holding a
 * DLTensor* (type_index kTVMFFIDLTensorPtr = 7). The tensors are dense, row-major, on the CPU.
 * Link with libtvmconv_kernels.a and tvmconv_runtime.c (or TVM's runtime). rc != 0: error. */
#ifndef TVMCONV_KERNELS_H_
#define TVMCONV_KERNELS_H_
#include <stdint.h>
#ifndef DLPACK_DLPACK_H_
typedef struct { int32_t device_type; int32_t device_id; } DLDevice;
typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } DLDataType;
typedef struct {
  void* data; DLDevice device; int32_t ndim; DLDataType dtype;
  int64_t* shape; int64_t* strides; uint64_t byte_offset;
} DLTensor;
#endif
#ifndef TVM_FFI_C_API_H_
typedef struct { int32_t type_index; uint32_t zero_padding; union { int64_t v_int64; double v_float64; void* v_ptr; }; } TVMFFIAny;
#endif
#define TVMCONV_DLTENSOR_PTR 7
typedef int (*tvmconv_kernel_fn)(void* self, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result);
typedef struct {
  const char* name;          /* the workload */
  tvmconv_kernel_fn fn;
  int32_t num_args;          /* inputs + 1 output */
  int32_t ndim[8];
  int64_t shape[8][5];
  uint8_t dtype_bits;        /* float 32 or 64 */
} tvmconv_kernel_t;
"""


def _write_c_files(exported: list[Exported], tools: dict, out: Path) -> None:
    lines = [_HEADER]
    for e in exported:
        lines.append(f"int __tvm_ffi_{e.cname}(void* self, const TVMFFIAny* args, int32_t num_args, "
                     f"TVMFFIAny* result);")
    lines.append("static const tvmconv_kernel_t TVMCONV_KERNELS[] = {")
    for e in exported:
        shapes = [shape for _, shape in e.spec.kernel_arg_shapes] + [e.spec.kernel_out_shape]
        if len(shapes) > 8 or any(len(s) > 5 for s in shapes):
            raise ValueError(f"export: {e.spec.name} has more arguments or dimensions than the C table holds")
        nd = ", ".join(str(len(s)) for s in shapes)
        sh = ", ".join("{" + ", ".join(map(str, s)) + "}" for s in shapes)
        bits = _DTYPES[e.spec.dtype][1]
        lines.append(f'  {{"{e.spec.name}", __tvm_ffi_{e.cname}, {len(shapes)}, {{{nd}}}, {{{sh}}}, {bits}}},')
    lines.append("};")
    lines.append(f"#define TVMCONV_NUM_KERNELS {len(exported)}")
    lines.append("#endif  /* TVMCONV_KERNELS_H_ */\n")
    (out / "tvmconv_kernels.h").write_text("\n".join(lines))
    (out / "tvmconv_runtime.c").write_text(_RUNTIME)
    (out / "example.c").write_text(_EXAMPLE)
    objs = " ".join(f"{e.cname}.o" for e in exported)
    (out / "Makefile").write_text(
        f"CC = {tools['cc']}\nAR = {tools['ar']}\n\nexample: example.c tvmconv_runtime.c libtvmconv_kernels.a\n"
        f"\t$(CC) -O2 -static -o $@ example.c tvmconv_runtime.c libtvmconv_kernels.a -lm\n\n"
        f"libtvmconv_kernels.a: {objs}\n\trm -f $@\n\t$(AR) rcs $@ {objs}\n")
    subprocess.run([tools["ar"], "rcs", str(out / "libtvmconv_kernels.a"), *[f"{e.cname}.o" for e in exported]],
                   cwd=out, check=True)


_RUNTIME = r"""/* The runtime hooks tvmconv kernels call, for static linking without TVM's runtime:
 * workspace allocation, a serial parallel-launch (tasks run one after another on the calling
 * thread), and error reporting. Generated by `tvmconv export`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct { void* sync_handle; int32_t num_task; } TVMParallelGroupEnv;
typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv* penv, void* cdata);

static void* alloc_workspace(int device_type, int device_id, uint64_t nbytes, int dtype_code, int dtype_bits) {
  (void)device_type; (void)device_id; (void)dtype_code; (void)dtype_bits;
  void* p = NULL;
  return posix_memalign(&p, 64, nbytes ? nbytes : 1) == 0 ? p : NULL;
}
static int free_workspace(int device_type, int device_id, void* ptr) {
  (void)device_type; (void)device_id; free(ptr); return 0;
}
static int parallel_launch(FTVMParallelLambda flambda, void* cdata, int num_task) {
  (void)num_task;
  TVMParallelGroupEnv env = {NULL, 1};
  return flambda(0, &env, cdata);
}
void* __TVMBackendAllocWorkspace = (void*)alloc_workspace;
void* __TVMBackendFreeWorkspace = (void*)free_workspace;
void* __TVMBackendParallelLaunch = (void*)parallel_launch;

void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t n) {
  fprintf(stderr, "tvmconv kernel error: %s:", kind ? kind : "Error");
  for (int32_t i = 0; i < n; ++i) fprintf(stderr, " %s", parts[i] ? parts[i] : "");
  fprintf(stderr, "\n");
}
"""

_EXAMPLE = r"""/* Calls tvmconv kernels from C. Generated by `tvmconv export`.
 *   ./example                       run every kernel on deterministic inputs, print checksums
 *   ./example K in1.bin .. out.bin  run kernel K on raw tensors read from files, write the output */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tvmconv_kernels.h"

static int64_t numel(const tvmconv_kernel_t* k, int i) {
  int64_t n = 1;
  for (int d = 0; d < k->ndim[i]; ++d) n *= k->shape[i][d];
  return n;
}

static int run(const tvmconv_kernel_t* k, void** data) {
  DLTensor t[8];
  TVMFFIAny args[8];
  for (int i = 0; i < k->num_args; ++i) {
    memset(&t[i], 0, sizeof t[i]);
    t[i].data = data[i];
    t[i].device.device_type = 1; /* kDLCPU */
    t[i].ndim = k->ndim[i];
    t[i].dtype.code = 2; /* kDLFloat */
    t[i].dtype.bits = k->dtype_bits;
    t[i].dtype.lanes = 1;
    t[i].shape = (int64_t*)k->shape[i];
    memset(&args[i], 0, sizeof args[i]);
    args[i].type_index = TVMCONV_DLTENSOR_PTR;
    args[i].v_ptr = &t[i];
  }
  return k->fn(NULL, args, k->num_args, NULL);
}

int main(int argc, char** argv) {
  if (argc > 1) {
    const tvmconv_kernel_t* k = &TVMCONV_KERNELS[atoi(argv[1])];
    if (argc != 2 + k->num_args) { fprintf(stderr, "%s needs %d files\n", k->name, k->num_args); return 2; }
    void* data[8];
    for (int i = 0; i < k->num_args; ++i) {
      size_t bytes = (size_t)numel(k, i) * (k->dtype_bits / 8);
      data[i] = calloc(1, bytes);
      if (i < k->num_args - 1) {
        FILE* f = fopen(argv[2 + i], "rb");
        if (!f || fread(data[i], 1, bytes, f) != bytes) { fprintf(stderr, "cannot read %s\n", argv[2 + i]); return 2; }
        fclose(f);
      }
    }
    int rc = run(k, data);
    if (rc != 0) return 1;
    FILE* f = fopen(argv[1 + k->num_args], "wb");
    fwrite(data[k->num_args - 1], 1, (size_t)numel(k, k->num_args - 1) * (k->dtype_bits / 8), f);
    fclose(f);
    return 0;
  }
  for (int j = 0; j < TVMCONV_NUM_KERNELS; ++j) {
    const tvmconv_kernel_t* k = &TVMCONV_KERNELS[j];
    void* data[8];
    for (int i = 0; i < k->num_args; ++i) {
      int64_t n = numel(k, i);
      data[i] = malloc((size_t)n * (k->dtype_bits / 8));
      for (int64_t e = 0; e < n; ++e) {
        double v = (double)((e * 7 + i * 3) % 11) / 11.0 - 0.5;
        if (k->dtype_bits == 64) ((double*)data[i])[e] = v; else ((float*)data[i])[e] = (float)v;
      }
    }
    int rc = run(k, data);
    double sum = 0;
    int64_t n = numel(k, k->num_args - 1);
    for (int64_t e = 0; e < n; ++e)
      sum += k->dtype_bits == 64 ? ((double*)data[k->num_args - 1])[e] : ((float*)data[k->num_args - 1])[e];
    printf("%s: rc %d, output checksum %.6f\n", k->name, rc, sum);
    for (int i = 0; i < k->num_args; ++i) free(data[i]);
    if (rc != 0) return 1;
  }
  return 0;
}
"""


# -- checking ------------------------------------------------------------------------------------
def check(out_dir, *, atol: float = 1e-3, log=print) -> tuple[int, int]:
    """Build the exported example for its target, run every kernel (under qemu when the target is
    another architecture) on random inputs and compare with PyTorch here. Returns (matched, total)."""
    from .. import reference
    from ..spec import spec_from_dict

    out = Path(out_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    tgt = resolve(manifest["target"])
    if tgt.kind == "cuda":
        raise ValueError("export --check runs CPU targets; CUDA kernels run on a GPU machine")
    tools = _toolchain(tgt)
    _need(tools["cc"], "export --check")
    if tools["runner"]:
        _need(tools["runner"][0], "export --check for an aarch64 target")
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
            proc = subprocess.run([*tools["runner"], str(out / "example"), str(i), *files, str(res_path)],
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
            for j, t in enumerate(kernel):
                np.save(f"{tmp}/{i}_{j}.npy", t.numpy())
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
