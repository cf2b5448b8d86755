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
from .workloads import workloads

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
    at each of these batch sizes, as ``tools.workloads.workloads`` takes it); returns the manifest."""
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


# -- C files -------------------------------------------------------------------------------------
# The DLPack and tvm-ffi types of a kernel's calling convention, so that C callers need neither
# header (a caller that includes dlpack.h or tvm-ffi's c_api.h first keeps its own)
FFI_TYPES = """\
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
"""

_HEADER = """\
/* tvmconv kernels, generated by `tvmconv export`. Each kernel is called as
 *     int rc = KERNEL(NULL, args, num_args, NULL);
 * with one TVMFFIAny per tensor (inputs in manifest order, then the output), each holding a
 * DLTensor* (type_index kTVMFFIDLTensorPtr = 7). The tensors are dense, row-major, on the CPU.
 * Link with libtvmconv_kernels.a and tvmconv_runtime.c (or TVM's runtime). rc != 0: error.
 * Kernels split their outer loop over tvmconv_set_num_threads(n) threads (default: the
 * TVMCONV_NUM_THREADS environment variable, else every online CPU). */
#ifndef TVMCONV_KERNELS_H_
#define TVMCONV_KERNELS_H_
#include <stdint.h>
#ifdef __cplusplus
extern "C" {  /* the kernels and the runtime are C symbols: a C++ caller links them unmangled */
#endif
""" + FFI_TYPES + """\
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
int tvmconv_set_num_threads(int n);  /* threads the kernels may use from now on; n < 1: one */
int tvmconv_num_threads(void);       /* the threads they use */
"""


def _write_c_files(exported: list[Exported], tools: Toolchain, out: Path) -> None:
    lines = [_HEADER]
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
    (out / "tvmconv_kernels.h").write_text("\n".join(lines))
    (out / "tvmconv_runtime.c").write_text(_RUNTIME)
    (out / "example.c").write_text(_EXAMPLE)
    objs = " ".join(f"{e.cname}.o" for e in exported)
    (out / "Makefile").write_text(
        f"CC = {tools.cc}\nAR = {tools.ar}\n\nexample: example.c tvmconv_runtime.c libtvmconv_kernels.a\n"
        f"\t$(CC) -O2 -static -pthread -o $@ example.c tvmconv_runtime.c libtvmconv_kernels.a -lm\n\n"
        f"libtvmconv_kernels.a: {objs}\n\trm -f $@\n\t$(AR) rcs $@ {objs}\n")
    subprocess.run([tools.ar, "rcs", str(out / "libtvmconv_kernels.a"), *[f"{e.cname}.o" for e in exported]],
                   cwd=out, check=True)


# The libc functions the generated C calls, declared with the prototypes glibc and Android's bionic
# share, so that the files need only the compiler's own headers: they build for Linux and, without
# the NDK's headers, for Android (tools/android.py). pthread_mutex_t and pthread_cond_t differ in
# size between the two (40 to 48 bytes), so they are opaque 64-byte blocks here; all zeros is
# both libraries' static initializer.
_LIBC = r"""#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
int open(const char* path, int flags, ...);
long read(int fd, void* buf, size_t n);
int close(int fd);
void* malloc(size_t n);
void* calloc(size_t n, size_t size);
void free(void* p);
int posix_memalign(void** p, size_t align, size_t n);
void* memcpy(void* dst, const void* src, size_t n);
void* memset(void* p, int c, size_t n);
char* getenv(const char* name);
long strtol(const char* s, char** end, int base);
int get_nprocs(void);
int snprintf(char* buf, size_t n, const char* fmt, ...);
long write(int fd, const void* buf, size_t n);
#ifdef __cplusplus
}
#endif
"""

_RUNTIME = _LIBC + r"""
/* The runtime hooks tvmconv kernels call, for static linking without TVM's runtime:
 * workspace allocation, a parallel launch on a pool of POSIX threads, and error reporting.
 * Generated by `tvmconv export`. */
typedef unsigned long thread_t;  /* pthread_t */
typedef struct { _Alignas(16) unsigned char opaque[64]; } lock_t;  /* pthread_mutex_t, pthread_cond_t */
int pthread_create(thread_t* t, const void* attr, void* (*start)(void*), void* arg);
int pthread_detach(thread_t t);
int pthread_mutex_lock(lock_t* m);
int pthread_mutex_unlock(lock_t* m);
int pthread_cond_wait(lock_t* c, lock_t* m);
int pthread_cond_signal(lock_t* c);
int pthread_cond_broadcast(lock_t* c);

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

/* The pool: workers 1..spawned-1 wait for a new job (generation), each runs the tasks
 * id, id + n, ... of it; the launching thread runs the tasks of id 0 and waits for the rest.
 * One launch at a time (launch_mu): TVM's CPU kernels do not nest launches. */
#define MAX_THREADS 1024
static lock_t launch_mu, mu, go, finished;
static int threads, spawned = 1, pending, job_n, job_err;
static unsigned long generation, born[MAX_THREADS];  /* the generation a worker was started in */
static FTVMParallelLambda job_f;
static void* job_cdata;
static TVMParallelGroupEnv job_env;

static int run_tasks(int id, int n, FTVMParallelLambda f, TVMParallelGroupEnv* env, void* cdata) {
  int err = 0;
  for (int t = id; t < env->num_task; t += n) {
    int r = f(t, env, cdata);
    if (r) err = r;
  }
  return err;
}

static void* worker(void* arg) {
  int id = (int)(intptr_t)arg;
  unsigned long seen = born[id];
  pthread_mutex_lock(&mu);
  for (;;) {
    while (generation == seen) pthread_cond_wait(&go, &mu);
    seen = generation;
    if (id < job_n) {
      pthread_mutex_unlock(&mu);
      int r = run_tasks(id, job_n, job_f, &job_env, job_cdata);
      pthread_mutex_lock(&mu);
      if (r) job_err = r;
    }
    if (--pending == 0) pthread_cond_signal(&finished);
  }
  return NULL;
}

static int default_threads(void) {
  const char* env = getenv("TVMCONV_NUM_THREADS");
  long n = env ? strtol(env, NULL, 10) : get_nprocs();
  return n > 0 && n <= MAX_THREADS ? (int)n : 1;
}

int tvmconv_set_num_threads(int n) {
  pthread_mutex_lock(&launch_mu);
  threads = n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n;
  pthread_mutex_unlock(&launch_mu);
  return 0;
}

int tvmconv_num_threads(void) {
  pthread_mutex_lock(&launch_mu);
  if (!threads) threads = default_threads();
  int n = threads;
  pthread_mutex_unlock(&launch_mu);
  return n;
}

static int parallel_launch(FTVMParallelLambda f, void* cdata, int num_task) {
  pthread_mutex_lock(&launch_mu);
  if (!threads) threads = default_threads();
  while (spawned < threads) {  /* a worker that cannot start leaves fewer threads */
    thread_t t;
    born[spawned] = generation;
    if (pthread_create(&t, NULL, worker, (void*)(intptr_t)spawned) != 0) break;
    pthread_detach(t);
    ++spawned;
  }
  int n = threads < spawned ? threads : spawned;
  TVMParallelGroupEnv env = {NULL, num_task > 0 ? num_task : n};
  if (n == 1 || env.num_task == 1) {
    int err = run_tasks(0, 1, f, &env, cdata);
    pthread_mutex_unlock(&launch_mu);
    return err;
  }
  pthread_mutex_lock(&mu);
  job_f = f; job_cdata = cdata; job_env = env; job_n = n; job_err = 0;
  pending = spawned - 1;
  ++generation;
  pthread_cond_broadcast(&go);
  pthread_mutex_unlock(&mu);
  int err = run_tasks(0, n, f, &job_env, cdata);
  pthread_mutex_lock(&mu);
  while (pending) pthread_cond_wait(&finished, &mu);
  if (job_err) err = job_err;
  pthread_mutex_unlock(&mu);
  pthread_mutex_unlock(&launch_mu);
  return err;
}

void* __TVMBackendAllocWorkspace = (void*)alloc_workspace;
void* __TVMBackendFreeWorkspace = (void*)free_workspace;
void* __TVMBackendParallelLaunch = (void*)parallel_launch;

void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t n) {
  char line[1024];
  int at = snprintf(line, sizeof line, "tvmconv kernel error: %s:", kind ? kind : "Error");
  for (int32_t i = 0; i < n && at > 0 && at < (int)sizeof line; ++i)
    at += snprintf(line + at, sizeof line - at, " %s", parts[i] ? parts[i] : "");
  if (at < 0) at = 0;
  if (at > (int)sizeof line - 2) at = (int)sizeof line - 2;
  line[at] = '\n';
  write(2, line, (size_t)at + 1);
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
    printf("%s: rc %d, output checksum %.6f (%d threads)\n", k->name, rc, sum, tvmconv_num_threads());
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
