"""``tvmconv export --model``: a whole model as one library for a CPU target, run with no TVM
runtime on the device.

The route, on TVM's maintained pieces:
  1. ``tvmconv.convert`` (BatchNorm folded, patterns fused, every convolution on tvmconv: a phone
     cannot be timed from here) and ``torch.export`` give a program whose convolutions are
     ``tvmconv.*`` nodes (a ``.pt2`` may hold aten convolutions: they are taken the same way);
  2. TVM Relax's ``from_exported_program`` imports it, with a convert map that turns each
     convolution into a ``call_tir`` of tvmconv's kernel for the target (its tuned record, else its
     default schedule), taking the op's own shapes; every other op is Relax's, legalized to TIR,
     constants folded, elementwise chains fused (``LegalizeOps``, ``FoldConstant``, ``FuseOps``,
     ``FuseTIR``);
  3. the result is a straight line of ``call_tir`` s. The TIR functions compile into one object;
     ``tvmconv_model.c`` calls them in order on an arena planned here (each intermediate at an
     offset, reused once dead), the weights in ``tvmconv_model_weights.bin`` linked in as data.

Files: ``libtvmconv_model.so`` (the one library), ``libtvmconv_model.a`` (the same, static),
``tvmconv_model.h`` (its C API, ``extern "C"``), the sources they are built from, ``example.c``
(runs the model on an input file or a fixed pattern, prints a checksum), a ``Makefile`` and
``manifest.json``. ``check_model`` builds the example, runs it (under qemu for aarch64) on random
input on two threads and compares the output with PyTorch's.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backends.target import resolve
from .export import _LIBC, _RUNTIME, FFI_TYPES, MANIFEST_FORMAT

_ALIGN = 64
_DL_CODES = {"float": 2, "int": 0, "uint": 1}  # DLPack type codes


@dataclass
class Buffer:
    """A tensor of the model's program: an ``input`` (the caller's), a ``const`` (in the weights
    blob) or a ``temp`` (in the arena); ``offset`` in bytes within its blob or arena."""

    kind: str
    shape: tuple
    dtype: str
    offset: int = 0

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass
class Program:
    """The model lowered: ``steps`` are ``(symbol, [buffer index, ...])`` with the output last;
    ``outputs`` index the buffers the caller gets."""

    funcs: dict  # symbol -> tirx.PrimFunc
    buffers: list
    steps: list
    inputs: list
    outputs: list
    weights: bytes
    arena: int
    kernels: dict  # symbol -> the tvmconv spec it runs


def lower(ep: torch.export.ExportedProgram, target) -> Program:
    """``ep`` as a straight line of TIR calls for ``target`` (see the module docstring)."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    tgt = resolve(target)
    kernels: dict = {}

    def convert(node, importer):
        from ..runtime import build
        from .workloads import node_spec

        spec, bound = node_spec(node)
        gv = kernels.get(spec)
        if gv is None:
            record, source, build_target = build.choose(spec, tgt)
            mod, _, _ = build.schedule(spec, build_target, record, source)
            func = build.natural_signature(mod, spec)["main"].with_attr("op_pattern", 8)  # opaque: not fused
            gv = kernels[spec] = importer.block_builder.add_func(func, f"tvmconv_k{len(kernels)}")
        args = [importer.env[bound[name]] for name, _ in spec.arg_shapes]
        return importer.block_builder.emit(relax.call_tir(gv, args, relax.TensorType(spec.out_shape, spec.dtype)))

    from .workloads import conv_op_names

    mod = from_exported_program(ep, custom_convert_map=dict.fromkeys(conv_op_names(), convert))
    seq = tvm.transform.Sequential([relax.transform.LegalizeOps(), relax.transform.FoldConstant(),
                                    relax.transform.AnnotateTIROpPattern(), relax.transform.FuseOps(),
                                    relax.transform.FuseTIR(), relax.transform.DeadCodeElimination()])
    mod = seq(mod)
    return _program(mod, {gv.name_hint: spec for spec, gv in kernels.items()})


def _program(mod, kernels: dict) -> Program:
    import tvm
    from tvm import relax, tirx

    main = mod["main"]
    buffers: list[Buffer] = []
    index: dict = {}  # relax var or constant -> buffer index
    weights = bytearray()

    def buffer_of(expr) -> int:
        if isinstance(expr, tvm.ir.Constant):
            if expr not in index:
                data = expr.value.numpy()
                weights.extend(b"\0" * (-len(weights) % _ALIGN))
                buffers.append(Buffer("const", tuple(data.shape), str(data.dtype), len(weights)))
                weights.extend(np.ascontiguousarray(data).tobytes())
                index[expr] = len(buffers) - 1
            return index[expr]
        if expr in index:
            return index[expr]
        raise ValueError(f"export --model: the model's program uses {type(expr).__name__} {expr}, which the "
                         f"C driver cannot pass")

    def tensor(var, kind: str) -> int:
        ty = var.ty  # (a TensorType with a static shape: the program was exported with fixed shapes)
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            raise ValueError(f"export --model: the model's program has a value of type {ty}; the C driver passes "
                             f"tensors of static shapes")
        buffers.append(Buffer(kind, tuple(int(d) for d in ty.shape), str(ty.dtype)))
        index[var] = len(buffers) - 1
        return index[var]

    inputs = [tensor(p, "input") for p in main.params]
    steps, funcs, call_tir = [], {}, tvm.ir.Op.get("relax.call_tir")
    tuples: dict = {}
    for block in main.body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and v.op == call_tir:
                gv, args = v.args[0], [buffer_of(a) for a in v.args[1].fields]
                symbol = gv.name_hint if gv.name_hint.startswith("tvmconv_k") else f"tvmconv_op{len(funcs)}"
                funcs.setdefault(gv.name_hint, symbol)
                steps.append((funcs[gv.name_hint], [*args, tensor(b.var, "temp")]))
            elif isinstance(v, relax.Tuple):
                tuples[b.var] = [buffer_of(f) for f in v.fields]
            elif isinstance(v, (relax.Var, tvm.ir.Constant)):
                index[b.var] = buffer_of(v)
            else:
                raise ValueError(f"export --model: the lowered program has a step the C driver cannot run: {v}")
    body = main.body.body
    outputs = tuples[body] if body in tuples else [buffer_of(body)]
    prim = {symbol: mod[name].with_attr("global_symbol", symbol) for name, symbol in funcs.items()}
    if not all(isinstance(f, tirx.PrimFunc) for f in prim.values()):
        raise ValueError("export --model: a call_tir target is not a TIR function")
    arena = _plan_arena(buffers, steps, outputs)
    return Program(prim, buffers, steps, inputs, outputs, bytes(weights), arena,
                   {funcs[name]: spec for name, spec in kernels.items() if name in funcs})


def _plan_arena(buffers: list, steps: list, outputs: list) -> int:
    """Give each ``temp`` an arena offset, first fit among the ones alive at once (a temp lives from
    the step writing it to the last reading it; outputs to the end). Returns the arena's size."""
    last = {}
    for i, (_, args) in enumerate(steps):
        for a in args:
            last[a] = i
    for o in outputs:
        last[o] = len(steps)
    live: list = []  # (start, end, buffer index) placed so far, with their last use
    top = 0
    for i, (_, args) in enumerate(steps):
        out = args[-1]
        live = [(s, e, j) for s, e, j in live if last[j] >= i]
        size = -(-buffers[out].nbytes // _ALIGN) * _ALIGN
        start = 0
        for s, e, _ in sorted(live):
            if start + size <= s:
                break
            start = max(start, e)
        buffers[out].offset = start
        live.append((start, start + size, out))
        top = max(top, start + size)
    return top


# -- files ---------------------------------------------------------------------------------------
def export_model(model, target, out_dir, *, input_shape=None, example_inputs=None) -> dict:
    """Write the whole-model library of ``model`` (a ``tvmconv.models`` name, an ``nn.Module`` or a
    ``torch.export`` ``.pt2`` path) for the CPU ``target`` into ``out_dir``; returns the manifest.
    ``input_shape`` (or ``example_inputs``) fixes the input: e.g. ``(1, 3, 224, 224)``."""
    import tvm

    tgt = resolve(target)
    if not tgt.backend.exports_c_library:
        raise ValueError(f"export --model builds a C library for CPU targets; {tgt.profile!r} is "
                         f"{tgt.backend.description}")
    tools = tgt.backend.toolchain()
    tools.require(f"exporting a model for {tgt.profile}", compiler_always=True)
    ep = exported_program(model, input_shape, example_inputs)
    prog = lower(ep, tgt)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    funcs = {s: f.with_attr("system_lib_prefix", "") for s, f in prog.funcs.items()}
    tvm.compile(tvm.IRModule(funcs), target=tgt.tvm()).mod.write_to_file(str(out / "tvmconv_model_kernels.o"))
    (out / "tvmconv_model_weights.bin").write_bytes(prog.weights)
    (out / "tvmconv_model.h").write_text(_header(prog))
    (out / "tvmconv_model.c").write_text(_driver(prog))
    (out / "tvmconv_model_weights.S").write_text(_WEIGHTS_S)
    (out / "tvmconv_runtime.c").write_text(_RUNTIME)
    (out / "example.c").write_text(_EXAMPLE)
    (out / "Makefile").write_text(_makefile(tools))
    if tools.kind == "zig":
        _build_android(out)
    else:
        subprocess.run(["make", "-s", "libtvmconv_model.so", "libtvmconv_model.a"], cwd=out, check=True,
                       capture_output=True)
    manifest = {"format": MANIFEST_FORMAT, "kind": "model", "target": tgt.profile, "tvm_target": tgt.key_dict,
                "library": "libtvmconv_model.so", "static_library": "libtvmconv_model.a", "header": "tvmconv_model.h",
                "inputs": [_tensor_dict(prog.buffers[i]) for i in prog.inputs],
                "outputs": [_tensor_dict(prog.buffers[i]) for i in prog.outputs],
                "steps": len(prog.steps), "arena_bytes": prog.arena, "weights_bytes": len(prog.weights),
                "kernels": {s: spec.name for s, spec in prog.kernels.items()},
                "example": {"source": "example.c", "build": "make example",
                            "run": " ".join([*tools.runner, "./example", "[input.bin output.bin]"])}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _build_android(out: Path) -> None:
    """The library and archive for Android without the NDK (backends/android.py): the C compiled
    by zig, linked against stub libraries. The example needs the NDK's crt objects to link."""
    from ..backends import android

    objects = []
    for src in ("tvmconv_model.c", "tvmconv_runtime.c", "tvmconv_model_weights.S"):
        obj = out / (Path(src).stem + ".o")
        subprocess.run([*android.cc(), "-O2", "-fPIC", "-c", src, "-o", obj.name], cwd=out, check=True,
                       capture_output=True)
        objects.append(obj)
    objects.append(out / "tvmconv_model_kernels.o")
    android.link_shared(out / "libtvmconv_model.so", objects, "libtvmconv_model.so")
    subprocess.run(["ar", "rcs", "libtvmconv_model.a", *[o.name for o in objects]], cwd=out, check=True,
                   capture_output=True)


def exported_program(model, input_shape=None, example_inputs=None) -> torch.export.ExportedProgram:
    """``model`` captured by ``torch.export`` with its convolutions on tvmconv (see the module
    docstring); a ``.pt2`` path is loaded as it is."""
    from .. import converter
    from ..models import MODELS
    from .workloads import _load_file

    if isinstance(model, (str, Path)) and str(model).endswith(".pt2"):
        return _load_file(Path(model), input_shape)
    if isinstance(model, str):
        if model not in MODELS:
            raise ValueError(f"model {model!r} is neither a tvmconv.models name ({', '.join(MODELS)}) nor a .pt2 file")
        model = MODELS[model](backend="torch")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"export --model: model must be an nn.Module, a tvmconv.models name or a .pt2 path, got "
                        f"{type(model).__name__}")
    if example_inputs is None:
        if input_shape is None:
            raise ValueError("export --model: give the model's input shape (--input-shape 1,3,224,224)")
        example_inputs = (torch.randn(*input_shape),)
    model = model.eval()
    fast = converter.convert(model, example_inputs, dispatch=False, time_layers=False)
    with torch.no_grad():
        return torch.export.export(fast, tuple(example_inputs))


def _tensor_dict(b: Buffer) -> dict:
    return {"shape": list(b.shape), "dtype": b.dtype}


def _dl(dtype: str) -> tuple[int, int]:
    """DLPack's (type code, bits) of ``dtype``."""
    kind = dtype.rstrip("0123456789")
    if kind not in _DL_CODES or kind == dtype:
        raise ValueError(f"export --model: a tensor of dtype {dtype} in the model's program; the C driver passes "
                         f"float, int and uint tensors")
    return _DL_CODES[kind], int(dtype[len(kind):])


def _header(prog: Program) -> str:
    shapes = lambda idx: ", ".join("{" + ", ".join(map(str, prog.buffers[i].shape)) + "}" for i in idx)  # noqa: E731
    ndims = lambda idx: ", ".join(str(len(prog.buffers[i].shape)) for i in idx)  # noqa: E731
    most = max(len(prog.buffers[i].shape) for i in prog.inputs + prog.outputs)
    return _HEADER.format(n_in=len(prog.inputs), n_out=len(prog.outputs), most=most, in_nd=ndims(prog.inputs),
                          out_nd=ndims(prog.outputs), in_shapes=shapes(prog.inputs), out_shapes=shapes(prog.outputs))


def _driver(prog: Program) -> str:
    decls = "\n".join(f"int __tvm_ffi_{s}(void*, const TVMFFIAny*, int32_t, TVMFFIAny*);" for s in prog.funcs)
    shapes = "\n".join(f"static int64_t S{i}[] = {{{', '.join(map(str, b.shape)) or '1'}}};"
                       for i, b in enumerate(prog.buffers))
    kinds = {"input": 0, "const": 1, "temp": 2}
    bufs = ",\n".join(f"  {{{kinds[b.kind]}, {b.offset}, {len(b.shape)}, S{i}, {_dl(b.dtype)[0]}, {_dl(b.dtype)[1]}, "
                      f"{b.nbytes}}}" for i, b in enumerate(prog.buffers))
    inputs = {b: k for k, b in enumerate(prog.inputs)}
    # a caller's input not 64-byte aligned (TVM's kernels may load it with aligned vector
    # instructions) is copied first into its own place after the arena
    at, in_offsets = prog.arena, []
    for i in prog.inputs:
        in_offsets.append(at)
        at += -(-prog.buffers[i].nbytes // _ALIGN) * _ALIGN
    most = max(len(a) for _, a in prog.steps)
    steps = ",\n".join(f"  {{__tvm_ffi_{s}, {len(a)}, {{{', '.join(map(str, a))}}}}}" for s, a in prog.steps)
    return _DRIVER.format(decls=decls, shapes=shapes, bufs=bufs, steps=steps, most=most, n_steps=len(prog.steps),
                          n_bufs=len(prog.buffers), arena=max(at, _ALIGN), in_offsets=", ".join(map(str, in_offsets)),
                          in_bytes=", ".join(str(prog.buffers[i].nbytes) for i in prog.inputs),
                          input_slot=", ".join(str(inputs.get(i, -1)) for i in range(len(prog.buffers))),
                          outputs=", ".join(map(str, prog.outputs)))


def _makefile(tools) -> str:
    srcs = "tvmconv_model.c tvmconv_runtime.c tvmconv_model_weights.S tvmconv_model_kernels.o"
    return (f"CC = {tools.cc}\nAR = {tools.ar}\nCFLAGS = -O2 -fPIC -pthread\n\n"
            f"libtvmconv_model.so: {srcs} tvmconv_model_weights.bin\n"
            f"\t$(CC) $(CFLAGS) -shared -Wl,-soname,libtvmconv_model.so -o $@ {srcs} -lm\n\n"
            f"libtvmconv_model.a: {srcs} tvmconv_model_weights.bin\n"
            f"\t$(CC) $(CFLAGS) -c tvmconv_model.c tvmconv_runtime.c tvmconv_model_weights.S\n"
            f"\trm -f $@\n\t$(AR) rcs $@ tvmconv_model.o tvmconv_runtime.o tvmconv_model_weights.o "
            f"tvmconv_model_kernels.o\n\n"
            f"example: example.c libtvmconv_model.a\n"
            f"\t$(CC) -O2 -static -pthread -o $@ example.c libtvmconv_model.a -lm\n")


_WEIGHTS_S = """\
/* The model's constants, linked in as read-only data. Generated by `tvmconv export --model`. */
  .section .rodata
  .balign 64
  .global tvmconv_model_weights
tvmconv_model_weights:
  .incbin "tvmconv_model_weights.bin"
  .section .note.GNU-stack,"",%progbits
"""

_HEADER = """\
/* A whole model compiled by `tvmconv export --model`: no TVM runtime needed.
 *   tvmconv_model* m = tvmconv_model_create();     // its working memory; NULL if out of memory
 *   tvmconv_model_run(m, inputs, outputs);        // arrays of TVMCONV_MODEL_NUM_INPUTS / _OUTPUTS
 *   tvmconv_model_free(m);                        // pointers to dense row-major tensors
 * One model object runs one call at a time; create one per thread to run several at once.
 * Kernels use tvmconv_set_num_threads(n) threads (default: TVMCONV_NUM_THREADS, else every CPU). */
#ifndef TVMCONV_MODEL_H_
#define TVMCONV_MODEL_H_
#include <stdint.h>
#ifdef __cplusplus
extern "C" {{
#endif
#define TVMCONV_MODEL_NUM_INPUTS {n_in}
#define TVMCONV_MODEL_NUM_OUTPUTS {n_out}
#define TVMCONV_MODEL_MAX_NDIM {most}
static const int TVMCONV_MODEL_INPUT_NDIM[] = {{{in_nd}}};
static const int64_t TVMCONV_MODEL_INPUT_SHAPE[][TVMCONV_MODEL_MAX_NDIM] = {{{in_shapes}}};
static const int TVMCONV_MODEL_OUTPUT_NDIM[] = {{{out_nd}}};
static const int64_t TVMCONV_MODEL_OUTPUT_SHAPE[][TVMCONV_MODEL_MAX_NDIM] = {{{out_shapes}}};
typedef struct tvmconv_model tvmconv_model;
tvmconv_model* tvmconv_model_create(void);
int tvmconv_model_run(tvmconv_model* m, const void* const* inputs, void* const* outputs);  /* 0: done */
void tvmconv_model_free(tvmconv_model* m);
int tvmconv_set_num_threads(int n);  /* threads the kernels may use from now on; n < 1: one */
int tvmconv_num_threads(void);
#ifdef __cplusplus
}}  /* extern "C" */
#endif
#endif  /* TVMCONV_MODEL_H_ */
"""

_DRIVER = _LIBC.replace("{", "{{").replace("}", "}}") + """\
/* Runs the model's steps in order. Generated by `tvmconv export --model`. */
#include "tvmconv_model.h"

""" + FFI_TYPES.replace("{", "{{").replace("}", "}}") + """\
typedef int (*kernel_fn)(void*, const TVMFFIAny*, int32_t, TVMFFIAny*);
{decls}
extern const unsigned char tvmconv_model_weights[];

{shapes}
typedef struct {{ int kind; int64_t offset; int32_t ndim; int64_t* shape; uint8_t code, bits; int64_t bytes; }} Buf;
static const Buf BUFS[{n_bufs}] = {{
{bufs}
}};
static const int INPUT_SLOT[{n_bufs}] = {{{input_slot}}};  /* which input a buffer is, else -1 */
static const int OUTPUTS[TVMCONV_MODEL_NUM_OUTPUTS] = {{{outputs}}};
static const int64_t INPUT_OFFSET[TVMCONV_MODEL_NUM_INPUTS] = {{{in_offsets}}};
static const int64_t INPUT_BYTES[TVMCONV_MODEL_NUM_INPUTS] = {{{in_bytes}}};
typedef struct {{ kernel_fn fn; int n; int args[{most}]; }} Step;
static const Step STEPS[{n_steps}] = {{
{steps}
}};

struct tvmconv_model {{ unsigned char* arena; }};

tvmconv_model* tvmconv_model_create(void) {{
  tvmconv_model* m = (tvmconv_model*)calloc(1, sizeof *m);
  if (m && posix_memalign((void**)&m->arena, 64, {arena}) != 0) {{ free(m); return NULL; }}
  return m;
}}

void tvmconv_model_free(tvmconv_model* m) {{
  if (m) {{ free(m->arena); free(m); }}
}}

static void* data_of(const tvmconv_model* m, int b, const void* const* inputs) {{
  if (BUFS[b].kind == 0) return (void*)inputs[INPUT_SLOT[b]];
  if (BUFS[b].kind == 1) return (void*)(tvmconv_model_weights + BUFS[b].offset);
  return m->arena + BUFS[b].offset;
}}

int tvmconv_model_run(tvmconv_model* m, const void* const* given, void* const* outputs) {{
  if (!m || !given || !outputs) return -1;
  const void* inputs[TVMCONV_MODEL_NUM_INPUTS];
  for (int i = 0; i < TVMCONV_MODEL_NUM_INPUTS; ++i) {{
    inputs[i] = given[i];
    if ((uintptr_t)given[i] % 64) {{  /* the kernels read 64-byte aligned tensors */
      memcpy(m->arena + INPUT_OFFSET[i], given[i], (size_t)INPUT_BYTES[i]);
      inputs[i] = m->arena + INPUT_OFFSET[i];
    }}
  }}
  for (int s = 0; s < {n_steps}; ++s) {{
    DLTensor t[{most}];
    TVMFFIAny a[{most}];
    for (int i = 0; i < STEPS[s].n; ++i) {{
      const Buf* b = &BUFS[STEPS[s].args[i]];
      memset(&t[i], 0, sizeof t[i]);
      t[i].data = data_of(m, STEPS[s].args[i], inputs);
      t[i].device.device_type = 1;  /* kDLCPU */
      t[i].ndim = b->ndim;
      t[i].shape = b->shape;
      t[i].dtype.code = b->code;
      t[i].dtype.bits = b->bits;
      t[i].dtype.lanes = 1;
      memset(&a[i], 0, sizeof a[i]);
      a[i].type_index = 7;  /* kTVMFFIDLTensorPtr */
      a[i].v_ptr = &t[i];
    }}
    int rc = STEPS[s].fn(NULL, a, STEPS[s].n, NULL);
    if (rc != 0) return rc;
  }}
  for (int o = 0; o < TVMCONV_MODEL_NUM_OUTPUTS; ++o)
    memcpy(outputs[o], data_of(m, OUTPUTS[o], inputs), (size_t)BUFS[OUTPUTS[o]].bytes);
  return 0;
}}
"""

_EXAMPLE = _LIBC + r"""/* Runs the exported model once. Generated by `tvmconv export --model`.
 *   ./example                          a fixed input pattern; prints the output's checksum
 *   ./example input.bin output.bin     raw float tensors (the first input, the first output)
 * (libc through the few declarations above: the same file builds for Linux and Android.) */
#include "tvmconv_model.h"

static size_t numel(const int64_t* shape, int ndim) {
  size_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= (size_t)shape[d];
  return n;
}

static int say(int fd, const char* text) {
  size_t n = 0;
  while (text[n]) ++n;
  write(fd, text, n);
  return fd == 1 ? 0 : 2;
}

static int file_io(const char* path, void* buf, size_t bytes, int writing) {
  int fd = writing ? open(path, 01 | 0100 | 01000, 0644) : open(path, 0);  /* O_WRONLY|O_CREAT|O_TRUNC; O_RDONLY */
  if (fd < 0) return -1;
  size_t done = 0;
  while (done < bytes) {
    long k = writing ? write(fd, (char*)buf + done, bytes - done) : read(fd, (char*)buf + done, bytes - done);
    if (k <= 0) break;
    done += (size_t)k;
  }
  close(fd);
  return done == bytes ? 0 : -1;
}

int main(int argc, char** argv) {
  void* in[TVMCONV_MODEL_NUM_INPUTS];
  void* out[TVMCONV_MODEL_NUM_OUTPUTS];
  char line[256];
  for (int i = 0; i < TVMCONV_MODEL_NUM_INPUTS; ++i) {
    size_t n = numel(TVMCONV_MODEL_INPUT_SHAPE[i], TVMCONV_MODEL_INPUT_NDIM[i]);
    float* x = (float*)malloc(n * sizeof(float));
    for (size_t e = 0; e < n; ++e) x[e] = (float)((e * 7 + i * 3) % 11) / 11.0f - 0.5f;
    in[i] = x;
  }
  size_t n_in = numel(TVMCONV_MODEL_INPUT_SHAPE[0], TVMCONV_MODEL_INPUT_NDIM[0]);
  if (argc == 3 && file_io(argv[1], in[0], n_in * sizeof(float), 0) != 0) return say(2, "cannot read the input\n");
  for (int o = 0; o < TVMCONV_MODEL_NUM_OUTPUTS; ++o)
    out[o] = malloc(numel(TVMCONV_MODEL_OUTPUT_SHAPE[o], TVMCONV_MODEL_OUTPUT_NDIM[o]) * sizeof(float));
  tvmconv_model* m = tvmconv_model_create();
  if (!m) return say(2, "out of memory\n");
  int rc = tvmconv_model_run(m, (const void* const*)in, out);
  if (rc != 0) return say(2, "tvmconv_model_run failed\n");
  size_t n = numel(TVMCONV_MODEL_OUTPUT_SHAPE[0], TVMCONV_MODEL_OUTPUT_NDIM[0]);
  double sum = 0;
  for (size_t e = 0; e < n; ++e) sum += ((float*)out[0])[e];
  snprintf(line, sizeof line, "output checksum %.6f over %zu values (%d threads)\n", sum, n, tvmconv_num_threads());
  say(1, line);
  if (argc == 3 && file_io(argv[2], out[0], n * sizeof(float), 1) != 0) return say(2, "cannot write the output\n");
  tvmconv_model_free(m);
  return 0;
}
"""


# -- checking ------------------------------------------------------------------------------------
def check_model(out_dir, model, *, threads: int = 2, atol: float = 1e-3, log=print) -> float:
    """Build the exported model's example, run it on ``threads`` threads (under qemu for aarch64)
    on random input and compare with ``model`` (an ``nn.Module``, or a ``tvmconv.models`` name:
    its plain-PyTorch form with the same initial weights) in PyTorch here. Returns the max abs
    error; raises RuntimeError when it exceeds ``atol`` (relative to the output's scale)."""
    import os

    from ..backends.toolchain import Toolchain

    out = Path(out_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    tgt = resolve(manifest["target"])
    tools = tgt.backend.toolchain()
    if tgt.dict.get("mtriple", "").endswith("android"):
        # no Android device here: the library's own objects (libtvmconv_model.a) linked into the
        # example by Linux's aarch64 toolchain, a glibc harness, and run under qemu
        linux = Toolchain.for_target(resolve("arm64-linux"))
        linux.require("export --check of an Android model", compiler_always=True)
        subprocess.run([linux.cc, "-O2", "-static", "-pthread", "-o", "example-linux", "example.c",
                        "libtvmconv_model.a", "-lm"], cwd=out, check=True, capture_output=True)
        tools, example = linux, "example-linux"
    else:
        subprocess.run(["make", "-s", "example"], cwd=out, check=True, capture_output=True)
        example = "example"
    shape = manifest["inputs"][0]["shape"]
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
        src.write_bytes(x.numpy().tobytes())
        proc = subprocess.run([*tools.runner, str(out / example), str(src), str(dst)], capture_output=True,
                              text=True, timeout=1800, env={**os.environ, "TVMCONV_NUM_THREADS": str(threads)})
        if proc.returncode != 0:
            raise RuntimeError(f"the example failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        log(proc.stdout.strip())
        got = np.frombuffer(dst.read_bytes(), dtype=np.float32).reshape(want.shape)
    err = float(np.abs(got - want.numpy()).max())
    if err > atol * max(1.0, float(want.abs().max())):
        raise RuntimeError(f"the exported model differs from PyTorch's: max |diff| {err:.3g}")
    return err


__all__ = ["export_model", "check_model", "exported_program", "lower"]
