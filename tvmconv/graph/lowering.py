"""A model, from PyTorch to one Relax module of TIR functions: what ``tvmconv.compile`` (the VM, on
the host) and ``tvmconv export --model`` (a C library) both build on.

    ep = exported(model, (x,))               # convert's graph passes, then torch.export
    mod, kernels = relax_module(ep, target)  # Relax: tvmconv kernels + every other op as TIR

1. ``exported``: ``tvmconv.convert`` (BatchNorm folded, patterns fused -- a depthwise and a
   pointwise convolution only where that kernel is tuned --, every convolution on tvmconv:
   graph.py) and ``torch.export``, so a model fuses the same way whichever door it takes;
2. ``relax_module``: TVM Relax's ``from_exported_program``, with a convert map that turns each
   convolution into a ``call_tir`` of tvmconv's kernel for the target (its tuned record, else its
   default schedule; opaque to fusion, marked scheduled), taking the op's own shapes (a weight the
   kernel reads packed is packed by a call of its own, which FoldConstant runs once, at compile
   time: the module holds the packed constant); every other
   op Relax's, legalized to TIR, constants folded, elementwise chains fused (``LegalizeOps``,
   ``FoldConstant``, ``FuseOps``, ``FuseTIR``), and each resulting function scheduled for the
   target (``Backend.schedule_model_functions``; on CPUs backends/llvm_generic.py: parallel
   loops, vectors).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from ..backends.target import resolve


def exported(model: torch.nn.Module, example_inputs, target=None, *, separable=None) -> torch.export.ExportedProgram:
    """``model`` (eval mode) captured by ``torch.export`` after convert's graph passes, every
    convolution a ``tvmconv.*`` node (``separable``: see ``convert``; None: ``fuse_where_tuned(target)``)."""
    from . import converter

    # A depthwise and a pointwise convolution are two kernels, each with its epilogue fused, unless
    # the fused kernel has a tuned schedule for the target: untuned, the depthwise kernel alone runs
    # 2-4x PyTorch's and the two beat the fused default (MobileNetV2 7-12%, MobileNetV3 4-9% on the
    # Zen 3; benchmarks/results/x86-avx2-zen3-separable-ab.md); issue 35 found the fused layers
    # slower than PyTorch's two ops on a Zen 4 too. MobileNet v1's tuned fused layers stay fused.
    fast = converter.convert(model.eval(), tuple(example_inputs), dispatch=False, time_layers=False,
                             separable=fuse_where_tuned(target) if separable is None else separable)
    with torch.no_grad():
        return torch.export.export(fast, tuple(example_inputs))


def fuse_where_tuned(target=None):
    """The compiler's rule for a depthwise convolution and the pointwise one after it, as
    ``convert``'s ``separable``: one fused kernel where that kernel has a tuned schedule for
    ``target`` (a choice measured on such a machine), else two kernels (see ``exported``)."""
    from ..runtime import cache

    tgt = resolve(target)
    return lambda spec: cache.tuned_record(spec, tgt) is not None


def relax_module(ep: torch.export.ExportedProgram, target, *, schedule: bool = True, fuse: bool = True):
    """``(Relax IRModule, {kernel function name: its tvmconv spec})`` of ``ep`` for ``target``
    (see the module docstring); ``schedule=False`` leaves the non-kernel TIR as LegalizeOps made it,
    ``fuse=False`` the elementwise ops after a kernel apart from it."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    from .passes import conv_op_names

    tgt = resolve(target)
    kernels: dict = {}

    packs: dict = {}  # spec -> (its weight packing's function, the packed weight's index and shape)
    made: dict = {}  # kernel function name -> how it was made (_Made), to fuse epilogues into it

    def convert(node, importer):
        from ..runtime import build
        from .passes import node_spec

        spec, bound = node_spec(node)
        bb = importer.block_builder
        gv = kernels.get(spec)
        if gv is None:
            record, source, build_target = build.choose(spec, tgt)
            mod, _, source = build.schedule(spec, build_target, record, source)
            name = f"tvmconv_k{len(kernels)}"
            split = build.split_weight_pack(mod, spec)
            if split is not None:  # the weight packed by a call of its own: folded into the constant
                pack = split["pack"].with_attr("global_symbol", f"{name}_pack").with_attr("tirx.is_scheduled", True)
                packed = pack.params[1]  # (TIR buffers as parameters)
                names = [n for n, _ in spec.arg_shapes]
                packs[spec] = (bb.add_func(pack, f"{name}_pack"), names.index(pack.params[0].name),
                               relax.TensorType([int(d) for d in packed.shape], packed.dtype))
            gv = kernels[spec] = bb.add_func(_kernel_func(split or build.natural_signature(mod, spec), name), name)
            if source != "unscheduled":  # (an epilogue fused into it replays its schedule)
                made[name] = _Made(spec, build_target, record if source != "default" else None, split is not None)
        args = [_kernel_arg(importer, bound[name], shape, spec, name) for name, shape in spec.arg_shapes]
        if spec in packs:
            pack_gv, at, ty = packs[spec]
            args[at] = bb.emit(relax.call_tir(pack_gv, [args[at]], ty))
        return bb.emit(relax.call_tir(gv, args, relax.TensorType(spec.out_shape, spec.dtype)))

    try:
        mod = from_exported_program(ep, custom_convert_map=dict.fromkeys(conv_op_names(), convert))
    except (AssertionError, KeyError, NotImplementedError, ValueError) as exc:
        raise ValueError(f"the model holds an op TVM's Relax importer does not take: {exc}{_where(ep, str(exc))}") \
            from exc
    if fuse:
        mod = scale_into_weights(mod, {gv.name_hint: (spec, packs.get(spec)) for spec, gv in kernels.items()})
        mod = fuse_epilogues(mod, made)
    seq = tvm.transform.Sequential([relax.transform.LegalizeOps(_NAN_KEEPING), relax.transform.FoldConstant(),
                                    relax.transform.AnnotateTIROpPattern(), relax.transform.FuseOps(),
                                    relax.transform.FuseTIR(), relax.transform.DeadCodeElimination()])
    mod = seq(mod)
    if schedule:
        mod, _ = tgt.backend.schedule_model_functions(mod)
    names = {g.name_hint for g in mod.get_global_vars()}
    specs = {gv.name_hint: spec for spec, gv in kernels.items()}
    specs.update({name: made[name.rsplit("_e", 1)[0]].spec for name in names if fused(name)})
    return mod, {name: spec for name, spec in specs.items() if name in names}


def _kernel_func(mod, name: str):
    """``mod``'s kernel as the Relax module's function ``name``: opaque to FuseOps (the ops after
    it are fused into it by ``fuse_epilogues``: FuseTIR cannot merge a kernel whose parameters
    alias its buffers) and scheduled already."""
    return mod["main"].with_attr("global_symbol", name).with_attr("op_pattern", 8).with_attr("tirx.is_scheduled", True)


def _where(ep: torch.export.ExportedProgram, message: str) -> str:
    """Where the ops ``message`` names sit in the model: the paths of the modules that call them."""
    spots = [where(node) for node in ep.graph.nodes
             if node.op == "call_function" and f"'{getattr(node.target, '__name__', None)}'" in message]
    return f" (at {'; '.join(dict.fromkeys(spots))})" if spots else ""


def where(node) -> str:
    """``op in path (ModuleClass)``: a graph node's op and the innermost module that calls it."""
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    path, kind = stack[-1] if stack else ("", None)  # (the innermost module: its path, its class)
    op = getattr(node.target, "__name__", node.target)
    return f"{op} in {path} ({kind})" if path else f"{op} in the model's forward"


def importable(node) -> bool:
    """Whether TVM's Relax importer (with tvmconv's convolutions) takes this graph node."""
    from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

    from .passes import conv_op_names

    global _IMPORTABLE
    if _IMPORTABLE is None:
        _IMPORTABLE = frozenset(ExportedProgramImporter().create_convert_map()) | conv_op_names()
    return node.op != "call_function" or getattr(node.target, "__name__", None) in _IMPORTABLE


_IMPORTABLE = None


def _kernel_arg(importer, node, shape: tuple, spec, name: str):
    """The Relax value of ``node`` (the op's argument ``name``) in the shape the kernel's buffer
    takes (``spec.arg_shapes``). The functional op may view an argument anew: squeeze-excitation
    takes its fc weights as the 1x1 convolutions' ``(C_r, C, 1, 1)`` and its kernel reads
    ``(C_r, C)``; call_tir passes a tensor as it is, so the view is a reshape here (folded into
    the constant)."""
    from tvm import relax

    value = importer.env[node]
    have = tuple(int(d) for d in value.ty.shape)
    if have == tuple(shape):
        return value
    if np.prod(have, dtype=np.int64) != np.prod(shape, dtype=np.int64):
        raise ValueError(f"export --model: {spec.name}'s argument {name} is {have} in the model's program; its "
                         f"kernel takes {tuple(shape)}")
    return importer.block_builder.emit(relax.op.reshape(value, shape))


__all__ = ["exported", "fuse_epilogues", "fused", "importable", "relax_module", "scale_into_weights", "where"]


def _dataflow(main):
    """``(bindings, readers)`` of a Relax ``main`` that is one dataflow block: readers maps a var to
    the indices of the bindings that read it (``len(bindings)``: the function's result). None for
    another shape of function (the passes here then leave it alone)."""
    from tvm import relax

    if len(main.body.blocks) != 1 or not isinstance(main.body.blocks[0], relax.DataflowBlock):
        return None
    bindings = list(main.body.blocks[0].bindings)
    readers: dict = {}
    for i, b in enumerate(bindings):
        for v in relax.analysis.free_vars(b.value):
            readers.setdefault(v, set()).add(i)
    for v in relax.analysis.free_vars(main.body.body):
        readers.setdefault(v, set()).add(len(bindings))
    return bindings, readers


def _calls_op(value, name: str) -> bool:
    """Whether a Relax binding's ``value`` is a call of the operator ``name`` ("relax.call_tir")."""
    import tvm
    from tvm import relax

    return isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == name


def scale_into_weights(mod, kernels: dict):
    """``mod`` with each product ``x * s`` of a batch-1 activation ``x (1, C, H, W)`` and a
    per-channel scale ``s (1, C, 1, 1)`` (squeeze-excitation's rescale) that only a pointwise
    kernel reads computed as that kernel on ``x`` with its weight (packed or as it is: input
    channels are axis 1 of both) scaled by ``s`` along them: ``W (x * s) = (W s) x``, C_out x C
    numbers scaled instead of C x H x W (EfficientNet-B0's first: 2,304 against 1,204,224).
    ``kernels``: kernel function name -> (its spec, its weight packing as ``relax_module`` keeps it:
    (pack function, the weight's argument index, type), or None)."""
    from tvm import relax

    main = mod["main"]
    found = _dataflow(main)
    if found is None:
        return mod
    bindings, users = found
    value = {b.var: b.value for b in bindings}
    kept, gone = [], set()
    for b in bindings:
        hit = _scaled_pointwise(b.value, kernels, value, users)
        if hit is None:
            kept.append(b)
            continue
        at_x, at_w, x, s, product = hit
        args = list(b.value.args[1].fields)
        w = args[at_w]
        c = int(s.ty.shape[1])
        name = getattr(w, "name_hint", "weight")  # (a constant has none)
        view = relax.DataflowVar(f"{name}_se", relax.TensorType([1, c] + [1] * (len(w.ty.shape) - 2), s.ty.dtype))
        scaled = relax.DataflowVar(f"{name}_scaled", w.ty)
        kept += [relax.VarBinding(view, relax.op.reshape(s, view.ty.shape)),
                 relax.VarBinding(scaled, relax.op.multiply(w, view))]
        args[at_x], args[at_w] = x, scaled
        kept.append(relax.VarBinding(b.var, relax.call_tir(b.value.args[0], args, b.value.ty_args[0])))
        gone.add(product)
    if not gone:
        return mod
    kept = [b for b in kept if b.var not in gone]
    mod["main"] = relax.Function(main.params, relax.SeqExpr([relax.DataflowBlock(kept)], main.body.body),
                                 main.ret_ty, main.is_pure, main.attrs)
    return relax.transform.Normalize()(mod)


def _scaled_pointwise(call, kernels: dict, value: dict, users: dict):
    """``(input index, weight index, x, s, the product's var)`` where ``call`` is a pointwise
    batch-1 kernel whose input is a product ``x * s`` read nowhere else (``scale_into_weights``),
    else None. (A kernel reading its weight unpacked, the pixel tile's, took the product as an
    elementwise pass of its own: MobileNetV3's 28x28 and 7x7 rescales, 0.35 ms of its forward.)"""
    from tvm import relax

    from ..variants import ConvSpec

    if not _calls_op(call, "relax.call_tir"):
        return None
    spec, pack = kernels.get(call.args[0].name_hint, (None, None))
    if not (isinstance(spec, ConvSpec) and spec.n == 1 and spec.groups == 1 and not spec.transposed
            and not spec.shuffle and all(k == 1 for k in spec.kernel) and all(st == 1 for st in spec.stride)
            and all(p == (0, 0) for p in spec.padding)):
        return None
    names = [n for n, _ in spec.arg_shapes]
    at_x, at_w = names.index("input"), pack[1] if pack is not None else names.index("weight")
    args = call.args[1].fields
    product, w = args[at_x], args[at_w]
    mul = value.get(product)
    if not (_calls_op(mul, "relax.multiply") and len(users.get(product, ())) == 1
            and (pack is None or isinstance(value.get(w), relax.Call))):
        return None
    want = tuple(int(d) for d in product.ty.shape)
    if np.prod(want) <= np.prod([int(d) for d in w.ty.shape]):  # (scaling the weight would be more work)
        return None
    for x, s in (mul.args, mul.args[::-1]):
        if (tuple(int(d) for d in x.ty.shape) == want and tuple(int(d) for d in s.ty.shape) == (1, want[1], 1, 1)
                and x.ty.dtype == s.ty.dtype == spec.dtype):
            return at_x, at_w, x, s, product
    return None


# -- epilogues -----------------------------------------------------------------------------------
# The elementwise ops a kernel may apply in its store, as Relax's torch importer writes them (SiLU is
# a sigmoid and a multiply; hardswish an add, two clips, a multiply and a divide), on TIR values.
_FUSED = re.compile(r"tvmconv_k\d+_e\d+")


def fused(name: str) -> bool:
    """Whether the Relax module's kernel function ``name`` computes an epilogue."""
    return _FUSED.fullmatch(name) is not None


@dataclass(frozen=True)
class _Made:
    spec: object
    target: object
    record: object  # the tuned record its schedule replays; None: the default schedule
    packed: bool  # its weight packed by a call of its own


def _legalize_clip(bb, call):
    """relax.clip and relax.nn.relu as torch computes them (TVM's own legalization is a max and a
    min, which turn NaN into the bound)."""
    from tvm import te

    from ..variants.compute import clamp

    lo, hi = (float(call.args[1].value), float(call.args[2].value)) if len(call.args) == 3 else (0.0, np.inf)
    return bb.call_te(lambda x: te.compute(x.shape, lambda *i: clamp(x(*i), lo, hi, x.dtype), name="clip"),
                      call.args[0], primfunc_name_hint="clip" if len(call.args) == 3 else "relu")


def _legalize_max_pool2d(bb, call):
    """relax.nn.max_pool2d (NCHW) as torch computes it, NaN included: the window's maximum by
    ``compute.max_nan`` (TVM's legalization takes ``max``, which passes over a NaN: a compiled
    MaxPool2d gave 1.15 where eager gave NaN). Another layout: TVM's own legalization."""
    import tvm
    from tvm import te, tirx

    from ..variants.compute import max_nan

    a = call.attrs
    if a.layout != "NCHW" or a.out_layout != "NCHW":
        return tvm.ir.Op.get("relax.nn.max_pool2d").get_attr("FLegalize")(bb, call)
    (kh, kw), (sh, sw), (dh, dw) = [[int(v) for v in t] for t in (a.pool_size, a.strides, a.dilation)]
    top, left = int(a.padding[0]), int(a.padding[1])
    out_shape = [int(d) for d in call.ty.shape]

    def pool(x):
        h, w = int(x.shape[2]), int(x.shape[3])
        ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
        nanmax = te.comm_reducer(max_nan, lambda t: tirx.const(float("-inf"), t), name="nanmax")

        def body(n, c, i, j):
            y, z = i * sh + ry * dh - top, j * sw + rx * dw - left
            inside = tirx.all(y >= 0, y < h, z >= 0, z < w)
            v = tirx.if_then_else(inside, x[n, c, tirx.max(tirx.min(y, h - 1), 0), tirx.max(tirx.min(z, w - 1), 0)],
                                  tirx.const(float("-inf"), x.dtype))
            return nanmax(v, axis=[ry, rx])

        return te.compute(out_shape, body, name="max_pool2d")

    return bb.call_te(pool, call.args[0], primfunc_name_hint="max_pool2d")


_NAN_KEEPING = {"relax.clip": _legalize_clip, "relax.nn.relu": _legalize_clip, "relax.nn.max_pool2d": _legalize_max_pool2d}


def _ops() -> dict:
    from tvm import tirx

    from ..variants.compute import clamp, exp, sigmoid

    return {"relax.add": lambda a, b: a + b, "relax.subtract": lambda a, b: a - b,
            "relax.multiply": lambda a, b: a * b, "relax.divide": lambda a, b: a / b,
            "relax.nn.relu": lambda a: clamp(a, 0.0, np.inf, str(a.ty)), "relax.exp": exp,
            "relax.clip": lambda a, lo, hi: clamp(a, lo, hi, str(a.ty)),  # (a TIR value's type is its dtype)
            "relax.sigmoid": sigmoid, "relax.nn.silu": lambda a: a * sigmoid(a), "relax.tanh": tirx.tanh}


def fuse_epilogues(mod, made: dict):
    """``mod`` with the elementwise ops after each tvmconv kernel of ``made`` computed in the
    kernel's store: the longest chain of ``_ops`` on the kernel's output, scalars and tensors that
    broadcast to it (a residual, a per-channel scale) whose values nothing outside the chain reads.
    The kernel is scheduled anew with the chain as its epilogue (``build.with_epilogue``); where
    that does not apply, the ops stay apart."""
    from tvm import relax

    main = mod["main"]
    found = _dataflow(main)
    if found is None:
        return mod
    bindings, users = found
    claimed, replace, funcs = set(), {}, {}  # funcs: (kernel, epilogue key) -> the fused kernel's GlobalVar
    bb = relax.BlockBuilder(mod)
    for i, b in enumerate(bindings):
        call = b.value
        if i in claimed or not (_calls_op(call, "relax.call_tir") and call.args[0].name_hint in made):
            continue
        kernel = call.args[0].name_hint
        found = _epilogue_of(bindings, i, users, claimed)
        if found is None:
            continue
        members, epilogue, extra = found
        key = (kernel, epilogue.key)
        if key not in funcs:
            module = _with_epilogue(made[kernel], epilogue)
            if module is None:
                continue
            name = f"{kernel}_e{len(funcs)}"
            funcs[key] = bb.add_func(_kernel_func(module, name), name)
        claimed.update([i, *members])
        sink = bindings[members[-1]].var
        replace[members[-1]] = relax.VarBinding(sink, relax.call_tir(funcs[key], [*call.args[1].fields, *extra],
                                                                     call.ty_args[0]))
        replace.update({j: None for j in [i, *members[:-1]]})
    if not funcs:
        return mod
    mod = bb.get()
    kept = [replace.get(i, b) for i, b in enumerate(bindings) if replace.get(i, b) is not None]
    mod["main"] = relax.Function(main.params, relax.SeqExpr([relax.DataflowBlock(kept)], main.body.body),
                                 main.ret_ty, main.is_pure, main.attrs)
    return relax.transform.Normalize()(mod)


def _with_epilogue(made: _Made, epilogue):
    """``made``'s kernel with ``epilogue`` in its store, taking its arguments as the unfused
    kernel does (the op's shapes, the weight packed apart where it was); None where not."""
    from ..runtime import build

    mod = build.with_epilogue(made.spec, made.target, made.record, epilogue)
    if mod is None:
        return None
    lanes = made.target.backend.lanes(made.spec.dtype)
    finish = lambda func: build.vectorize_partial_tiles(func, lanes)  # noqa: E731
    split = build.split_weight_pack(mod, made.spec, finish)
    if (split is not None) != made.packed:
        return None
    return split or build.natural_signature(mod, made.spec, finish)


def _epilogue_of(bindings: list, at: int, users: dict, claimed: set):
    """``(member binding indices, Epilogue, its tensor arguments)`` for the kernel call bound at
    ``at``: the longest chain of ``_ops`` bindings after it, each reading the kernel's value or an
    earlier member's, whose values nothing else reads but the chain's last member (its sink);
    None where no op follows that way."""
    import tvm
    from tvm import relax

    from ..variants.compute import Epilogue

    ops = _ops()
    out = bindings[at].var
    shape, dtype = _dims(out.ty.shape), out.ty.dtype
    if shape is None:
        return None
    inside = {out: ("k",)}  # var -> where the epilogue has its value: ("k",) the kernel, ("m", j) member j
    members, steps, extra, best = [], [], [], None
    for i in range(at + 1, len(bindings)):
        v = bindings[i].value
        args = list(v.args) if isinstance(v, relax.Call) else []
        if not any(isinstance(a, relax.Var) and a in inside for a in args):
            continue  # (a binding of something else between the chain's members)
        ty = bindings[i].var.ty
        if i in claimed or not isinstance(v.op, tvm.ir.Op) or v.op.name not in ops or \
                not isinstance(ty, relax.TensorType) or ty.dtype != dtype or _dims(ty.shape) != shape:
            break
        step = []
        for a in args:
            if isinstance(a, relax.Var) and a in inside:
                step.append(inside[a])
            elif isinstance(a, (tvm.tirx.IntImm, tvm.tirx.FloatImm)):  # (clip's bounds)
                step.append(("c", float(a.value)))
            elif isinstance(a, tvm.ir.expr.GenericConst) and _dims(a.ty.shape) == ():
                step.append(("c", float(a.value.numpy())))
            elif isinstance(a.ty, relax.TensorType) and a.ty.dtype == dtype and _broadcasts(a.ty.shape, shape):
                step.append(("x", len(extra)))
                extra.append(a)
            else:
                break
        else:
            inside[bindings[i].var] = ("m", len(members))
            members.append(i)
            steps.append((v.op.name, tuple(step)))
            if all(users.get(var, set()) <= set(members) for var in list(inside)[:-1]):
                best = (len(members), len(extra))
            continue
        break
    if best is None:
        return None
    members, steps, extra = members[:best[0]], steps[:best[0]], extra[:best[1]]

    def apply(value, loads):
        vals = []
        for op, step in steps:
            got = [value if a[0] == "k" else vals[a[1]] if a[0] == "m" else loads[a[1]] if a[0] == "x" else a[1]
                   for a in step]
            if op == "relax.clip":  # (its bounds stay numbers)
                vals.append(ops[op](*got))
            else:
                vals.append(ops[op](*[tvm.tirx.const(g, dtype) if isinstance(g, float) else g for g in got]))
        return vals[-1]

    shapes = tuple(tuple(int(d) for d in e.ty.shape) for e in extra)
    return members, Epilogue(apply, shapes, repr((steps, shapes))), extra


def _dims(shape) -> tuple | None:
    """A Relax shape's sizes; None where one is symbolic (or the shape unknown)."""
    try:
        return tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        return None


def _broadcasts(shape, to: tuple) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``to`` (NumPy's rule) without growing it."""
    dims = _dims(shape)
    return dims is not None and len(dims) <= len(to) and all(d in (1, t) for d, t in zip(dims[::-1], to[::-1]))
