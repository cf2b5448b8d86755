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
inputs on two threads and compares every output with PyTorch's, once it has made sure that every
layer of the model moves the output (else a wrong kernel could pass); a ``tvmconv.models`` name is
exported and checked as one seeded, calibrated model (``builtin_model``).
"""

from __future__ import annotations

import inspect
import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backends.target import resolve
from . import c_sources
from .export import MANIFEST_FORMAT

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
    from ..graph.lowering import relax_module

    mod, kernels = relax_module(ep, target)
    return _program(mod, kernels)


def _program(mod, kernels: dict) -> Program:
    import tvm
    from tvm import relax, tirx

    main = mod["main"]
    buffers: list[Buffer] = []
    index: dict = {}  # relax var or constant -> buffer index
    tuples: dict = {}  # relax var of a tuple -> its fields' buffer indices
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

    def tensor(ty, kind: str) -> int:
        # (a TensorType with a static shape: the program was exported with fixed shapes)
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            raise ValueError(f"export --model: the model's program has a value of type {ty}; the C driver passes "
                             f"tensors of static shapes")
        buffers.append(Buffer(kind, tuple(int(d) for d in ty.shape), str(ty.dtype)))
        return len(buffers) - 1

    def results(var) -> list[int]:
        """The temps a call_tir writes: one, or one per field where it returns a tuple (a split)."""
        if isinstance(var.ty, relax.TupleType):
            tuples[var] = [tensor(f, "temp") for f in var.ty.fields]
            return tuples[var]
        index[var] = tensor(var.ty, "temp")
        return [index[var]]

    for p in main.params:
        index[p] = tensor(p.ty, "input")
    inputs = [index[p] for p in main.params]
    steps, funcs, call_tir = [], {}, tvm.ir.Op.get("relax.call_tir")
    for block in main.body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and v.op == call_tir:
                gv, args = v.args[0], [buffer_of(a) for a in v.args[1].fields]
                symbol = gv.name_hint if gv.name_hint.startswith("tvmconv_k") else f"tvmconv_op{len(funcs)}"
                funcs.setdefault(gv.name_hint, symbol)
                steps.append((funcs[gv.name_hint], [*args, *results(b.var)]))
                _check_step(mod[gv.name_hint], kernels.get(gv.name_hint), funcs[gv.name_hint], steps[-1][1], buffers)
            elif isinstance(v, relax.Tuple):
                tuples[b.var] = [buffer_of(f) for f in v.fields]
            elif isinstance(v, relax.TupleGetItem) and v.tuple_value in tuples:
                index[b.var] = tuples[v.tuple_value][v.index]  # a field of a split: a buffer of its own
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


def _check_step(func, spec, symbol: str, args: list, buffers: list) -> None:
    """Raise ValueError unless the step's buffers are what ``func`` (a PrimFunc) declares, one by
    one: its generated code refuses anything else at run time (``tvmconv_model_run`` returning -1
    on every call), so a mismatch is an export that could never run."""
    from tvm import tirx

    kernel = f"{symbol} ({spec.name})" if spec is not None else symbol
    if not isinstance(func, tirx.PrimFunc):
        return  # (refused by the caller, naming no step)
    if len(func.params) != len(args):
        raise ValueError(f"export --model: kernel {kernel} takes {len(func.params)} tensors; the model's program "
                         f"passes {len(args)}")
    for param, i in zip(func.params, args):
        want = tuple(int(d) if isinstance(d, tirx.IntImm) else None for d in param.shape)
        have = buffers[i].shape
        if len(want) != len(have) or any(w is not None and w != h for w, h in zip(want, have)) \
                or str(param.dtype) != buffers[i].dtype:
            raise ValueError(f"export --model: kernel {kernel} takes argument {param.name} as "
                             f"{str(param.dtype)} {want} ({len(want)}-D); the model's program passes "
                             f"{buffers[i].dtype} {have} ({len(have)}-D)")


def _plan_arena(buffers: list, steps: list, outputs: list) -> int:
    """Give each ``temp`` an arena offset, first fit among the ones alive at once (a temp lives from
    the step writing it to the last reading it; outputs to the end). A step writes the temps that
    first appear in its arguments (its last one, or several: a split's fields). Returns the
    arena's size."""
    last = {}
    for i, (_, args) in enumerate(steps):
        for a in args:
            last[a] = i
    for o in outputs:
        last[o] = len(steps)
    live: list = []  # (start, end, buffer index) placed so far, with their last use
    placed: set = set()
    top = 0
    for i, (_, args) in enumerate(steps):
        live = [(s, e, j) for s, e, j in live if last[j] >= i]
        for out in args:
            if buffers[out].kind != "temp" or out in placed:
                continue
            size = -(-buffers[out].nbytes // _ALIGN) * _ALIGN
            start = 0
            for s, e, _ in sorted(live):
                if start + size <= s:
                    break
                start = max(start, e)
            buffers[out].offset = start
            live.append((start, start + size, out))
            placed.add(out)
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
    ep = exported_program(model, input_shape, example_inputs, target)
    prog = lower(ep, tgt)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    funcs = {s: f.with_attr("system_lib_prefix", "") for s, f in prog.funcs.items()}
    tvm.compile(tvm.IRModule(funcs), target=tgt.tvm()).mod.write_to_file(str(out / "tvmconv_model_kernels.o"))
    (out / "tvmconv_model_weights.bin").write_bytes(prog.weights)
    (out / "tvmconv_model.h").write_text(_header(prog))
    (out / "tvmconv_model.c").write_text(_driver(prog))
    (out / "tvmconv_model_weights.S").write_text(c_sources.text("model_weights.S"))
    (out / "tvmconv_runtime.c").write_text(c_sources.text("runtime.c"))
    (out / "example.c").write_text(c_sources.text("model_example.c"))
    (out / "Makefile").write_text(_makefile(tools))
    tools.build_library(out, "tvmconv_model", ["tvmconv_model.c", "tvmconv_runtime.c", "tvmconv_model_weights.S"],
                        ["tvmconv_model_kernels.o"])
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


def exported_program(model, input_shape=None, example_inputs=None, target=None) -> torch.export.ExportedProgram:
    """``model`` captured by ``torch.export`` with its convolutions on tvmconv (see the module
    docstring); a ``.pt2`` path is loaded as it is; a ``tvmconv.models`` name is ``builtin_model``'s."""
    from ..graph.lowering import exported
    from ..suites.workloads import _load_file

    if isinstance(model, (str, Path)) and str(model).endswith(".pt2"):
        return _load_file(Path(model), input_shape)
    if example_inputs is None and input_shape is not None:
        example_inputs = (torch.randn(*input_shape),)
    if isinstance(model, str):
        model = builtin_model(model, None if example_inputs is None else tuple(example_inputs[0].shape))
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"export --model: model must be an nn.Module, a tvmconv.models name or a .pt2 path, got "
                        f"{type(model).__name__}")
    if example_inputs is None:
        raise ValueError("export --model: give the model's input shape (--input-shape 1,3,224,224)")
    return exported(model, example_inputs, target)


def builtin_model(name: str, input_shape, *, seed: int = 0, **kwargs) -> torch.nn.Module:
    """The ``tvmconv.models`` model ``name`` (``kwargs`` to its constructor) in its plain-PyTorch
    form, random weights from ``seed`` then ``calibrate``d on ``input_shape`` ``(N, C, H, W)``: the
    same model on every call, so what ``export_model`` exports for a name is what ``check_model``
    compares with."""
    from ..models import MODELS

    if name not in MODELS:
        raise ValueError(f"model {name!r} is neither a tvmconv.models name ({', '.join(MODELS)}) nor a .pt2 file")
    if input_shape is None:
        raise ValueError("export --model: give the model's input shape (--input-shape 1,3,224,224)")
    if "input_size" in inspect.signature(MODELS[name]).parameters:  # (effnet's linear layer follows it)
        kwargs.setdefault("input_size", int(input_shape[-1]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODELS[name](backend="torch", **kwargs)
    return calibrate(model, input_shape, seed=seed)


def _linear_layers() -> tuple:
    """Layer types whose output is linear in their (weight, bias): ``calibrate`` rescales them."""
    from torch import nn

    from .. import nn as tnn

    return (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
            tnn.ChannelWiseConv)


def calibrate(model: torch.nn.Module, input_shape, *, seed: int = 0, batch: int = 4, passes: int = 2):
    """``model`` (changed in place; returned in eval mode) with its random weights made to matter.
    Kaiming-init layers with fresh BatchNorm statistics make a deep model's activations vanish or
    saturate: its output then hardly depends on its layers, and no comparison can tell a wrong
    kernel. On seeded random inputs ``(batch, *input_shape[1:])``: each convolution / linear
    layer's weight and bias scaled so that its output has unit std (LSUV initialisation, in one
    pass: the output is linear in them), then every BatchNorm's running statistics measured in
    train mode over ``passes`` batches (a cumulative average)."""
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(batch, *tuple(input_shape)[1:], generator=g) for _ in range(passes)]

    def unit_std(layer, args, out):
        std = float(out.std())
        if std > 0:
            layer.weight.div_(std)
            if layer.bias is not None:
                layer.bias.div_(std)
            return out / std  # what the rescaled layer gives: later layers see it

    model.eval()
    hooks = [m.register_forward_hook(unit_std) for m in model.modules() if isinstance(m, _linear_layers())]
    try:
        with torch.no_grad():
            model(xs[0])
    finally:
        for h in hooks:
            h.remove()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average of the batches' statistics
        m.train()  # (only they: dropout and the like stay in eval mode)
    with torch.no_grad():
        for x in xs if norms else []:
            model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


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
    nbytes = lambda idx: ", ".join(str(prog.buffers[i].nbytes) for i in idx)  # noqa: E731
    return c_sources.render("model.h", n_in=len(prog.inputs), n_out=len(prog.outputs), most=most,
                            in_nd=ndims(prog.inputs), out_nd=ndims(prog.outputs), in_shapes=shapes(prog.inputs),
                            out_shapes=shapes(prog.outputs), in_bytes=nbytes(prog.inputs),
                            out_bytes=nbytes(prog.outputs))


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
    return c_sources.render("model.c", decls=decls, shapes=shapes, bufs=bufs, steps=steps, most=most,
                            n_steps=len(prog.steps), n_bufs=len(prog.buffers), arena=max(at, _ALIGN),
                            in_offsets=", ".join(map(str, in_offsets)),
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


# -- checking ------------------------------------------------------------------------------------
def check_model(out_dir, model, *, threads: int = 2, atol: float = 1e-3, log=print) -> float:
    """Build the exported model's example, run it on ``threads`` threads (under qemu for aarch64)
    on random inputs (every input of the model) and compare every output with ``model``'s in
    PyTorch here: an ``nn.Module`` (the one exported), or a ``tvmconv.models`` name (its
    ``builtin_model``, what ``export_model`` exports for the name). Returns the max abs error;
    raises RuntimeError when it exceeds ``atol`` (relative to the output's scale), and first when
    some layer of ``model`` does not move its output beyond that (``every_layer_matters``): the
    comparison could not see a wrong kernel there."""
    import os

    out = Path(out_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    if isinstance(model, str):
        model = builtin_model(model, manifest["inputs"][0]["shape"])
    g = torch.Generator().manual_seed(0)
    xs = [_random_input(t, g) for t in manifest["inputs"]]
    every_layer_matters(model, xs, atol)
    with torch.no_grad():
        want = _leaves(model.eval()(*xs))
    if len(want) != len(manifest["outputs"]):
        raise RuntimeError(f"the model gives {len(want)} outputs; the exported library {len(manifest['outputs'])}")
    tools, example = _build_example(out, manifest)
    with tempfile.TemporaryDirectory() as tmp:
        srcs = [Path(tmp) / f"in{i}.bin" for i in range(len(xs))]
        dsts = [Path(tmp) / f"out{o}.bin" for o in range(len(want))]
        for src, x in zip(srcs, xs):
            src.write_bytes(x.numpy().tobytes())
        proc = subprocess.run([*tools.runner, str(out / example), *map(str, srcs + dsts)], capture_output=True,
                              text=True, timeout=1800, env={**os.environ, "TVMCONV_NUM_THREADS": str(threads)})
        if proc.returncode != 0:
            raise RuntimeError(f"the example failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        log(proc.stdout.strip())
        got = [np.frombuffer(d.read_bytes(), dtype=w.numpy().dtype).reshape(w.shape) for d, w in zip(dsts, want)]
    errs = [float(np.abs(a.astype(np.float64) - w.double().numpy()).max()) if a.size else 0.0
            for a, w in zip(got, want)]
    for o, (err, w) in enumerate(zip(errs, want)):
        if err > _tolerance(w, atol):
            raise RuntimeError(f"the exported model differs from PyTorch's: max |diff| {err:.3g} (output {o})")
    return max(errs)


def _build_example(out: Path, manifest: dict):
    """The example built for running here: ``(toolchain, file name)``. Where the target's programs
    cannot run here (its profile names a ``harness``: an Android phone's, no phone here), the library's own
    objects (libtvmconv_model.a) are linked into the example statically by the harness's toolchain
    (Linux aarch64: a glibc harness) and run under its runner (qemu)."""
    from ..backends.toolchain import Toolchain

    tgt = resolve(manifest["target"])
    harness = Toolchain.build_of(tgt).get("harness")  # (the target's own tools are not needed for it)
    if harness:
        tools = Toolchain.for_target(resolve(harness))
        tools.require(f"export --check of a {manifest['target']} model", compiler_always=True)
        subprocess.run([tools.cc, "-O2", "-static", "-pthread", "-o", "example-harness", "example.c",
                        "libtvmconv_model.a", "-lm"], cwd=out, check=True, capture_output=True)
        return tools, "example-harness"
    subprocess.run(["make", "-s", "example"], cwd=out, check=True, capture_output=True)
    return tgt.backend.toolchain(), "example"


def _random_input(tensor: dict, g: torch.Generator) -> torch.Tensor:
    """A seeded random tensor for a manifest's ``{"shape", "dtype"}``: normal floats, small ints."""
    dtype = getattr(torch, tensor["dtype"])
    if dtype.is_floating_point:
        return torch.randn(*tensor["shape"], generator=g).to(dtype)
    return torch.randint(0, 4, tuple(tensor["shape"]), generator=g).to(dtype)


def _leaves(result) -> list:
    """A model's outputs as the exported program lists them (its pytree's tensors, in order)."""
    return [t for t in torch.utils._pytree.tree_leaves(result) if isinstance(t, torch.Tensor)]


def _tolerance(want: torch.Tensor, atol: float) -> float:
    """The check's bound on an output's error: ``atol``, relative to the output's scale when over 1."""
    return atol * max(1.0, float(want.abs().max())) if want.numel() else atol


def every_layer_matters(model: torch.nn.Module, inputs, atol: float = 1e-3) -> None:
    """Raise RuntimeError unless zeroing each layer's weight (every parameter of 2 dims or more that
    ``model``'s forward uses: convolutions, linear layers) moves ``model(*inputs)`` beyond the
    check's tolerance. Else a wrong kernel for that layer passes the check unseen: with saturated
    or vanishing activations (kaiming-init convolutions under fresh BatchNorm statistics) the
    output is the same whatever the layers compute. Zeroes a copy's weights, one at a time."""
    import copy

    probe = copy.deepcopy(model).eval()
    with torch.no_grad():
        want = _leaves(probe(*inputs))
        bounds = [_tolerance(w, atol) for w in want]
        for name, weight in _used_weights(probe, inputs):
            kept = weight.detach().clone()
            weight.zero_()
            moved = [float((m.double() - w.double()).abs().max()) if w.numel() else 0.0
                     for m, w in zip(_leaves(probe(*inputs)), want)]
            weight.copy_(kept)
            if not any(d > b for d, b in zip(moved, bounds)):
                raise RuntimeError(
                    f"the check cannot see layer {name}: zeroing its weight moves the model's output by "
                    f"{max(moved, default=0.0):.3g} at most, within the check's tolerance {max(bounds):.3g}, so a "
                    f"wrong kernel for it would pass. Check a model whose every layer matters on random inputs "
                    f"(export_model.calibrate: weights scaled, BatchNorm statistics measured; a tvmconv.models "
                    f"name is calibrated)")


def _used_weights(model: torch.nn.Module, inputs) -> list:
    """``(name, parameter)`` of ``model``'s weights (float parameters of 2 dims or more) that its
    forward on ``inputs`` uses: those autograd reaches from the outputs (an unused layer, say an
    auxiliary head, is in no exported program either). All of them where autograd cannot tell."""
    weights = [(n, p) for n, p in model.named_parameters() if p.dim() >= 2 and p.is_floating_point()]
    if not weights:
        return []
    flags = [p.requires_grad for _, p in weights]
    try:
        for _, p in weights:
            p.requires_grad_(True)
        with torch.enable_grad():
            outs = [o for o in _leaves(model(*inputs)) if o.requires_grad]
            if not outs:
                return weights
            grads = torch.autograd.grad([o.float().sum() for o in outs], [p for _, p in weights], allow_unused=True)
    except RuntimeError:
        return weights
    finally:
        for (_, p), flag in zip(weights, flags):
            p.requires_grad_(flag)
    return [w for w, grad in zip(weights, grads) if grad is not None]


__all__ = ["export_model", "check_model", "exported_program", "lower", "builtin_model", "calibrate",
           "every_layer_matters"]
