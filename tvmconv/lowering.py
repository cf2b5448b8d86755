"""A model, from PyTorch to one Relax module of TIR functions: what ``tvmconv.compile`` (the VM, on
the host) and ``tvmconv export --model`` (a C library) both build on.

    ep = exported(model, (x,))               # convert's graph passes, then torch.export
    mod, kernels = relax_module(ep, target)  # Relax: tvmconv kernels + every other op as TIR

1. ``exported``: ``tvmconv.convert`` (BatchNorm folded, patterns fused, every convolution on
   tvmconv: graph.py) and ``torch.export``, so a model fuses the same way whichever door it takes;
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

import numpy as np
import torch

from .backends.target import resolve


def exported(model: torch.nn.Module, example_inputs) -> torch.export.ExportedProgram:
    """``model`` (eval mode) captured by ``torch.export`` after convert's graph passes, every
    convolution a ``tvmconv.*`` node."""
    from . import converter

    fast = converter.convert(model.eval(), tuple(example_inputs), dispatch=False, time_layers=False)
    with torch.no_grad():
        return torch.export.export(fast, tuple(example_inputs))


def relax_module(ep: torch.export.ExportedProgram, target, *, schedule: bool = True):
    """``(Relax IRModule, {kernel function name: its tvmconv spec})`` of ``ep`` for ``target``
    (see the module docstring); ``schedule=False`` leaves the non-kernel TIR as LegalizeOps made it."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    from .tools.workloads import conv_op_names

    tgt = resolve(target)
    kernels: dict = {}

    packs: dict = {}  # spec -> (its weight packing's function, the packed weight's index and shape)

    def convert(node, importer):
        from .runtime import build
        from .tools.workloads import node_spec

        spec, bound = node_spec(node)
        bb = importer.block_builder
        gv = kernels.get(spec)
        if gv is None:
            record, source, build_target = build.choose(spec, tgt)
            mod, _, _ = build.schedule(spec, build_target, record, source)
            name = f"tvmconv_k{len(kernels)}"
            split = build.split_weight_pack(mod, spec)
            if split is not None:  # the weight packed by a call of its own: folded into the constant
                pack = split["pack"].with_attr("global_symbol", f"{name}_pack").with_attr("tirx.is_scheduled", True)
                packed = pack.params[1]  # (TIR buffers as parameters)
                names = [n for n, _ in spec.arg_shapes]
                packs[spec] = (bb.add_func(pack, f"{name}_pack"), names.index(pack.params[0].name),
                               relax.TensorType([int(d) for d in packed.shape], packed.dtype))
            func = (split or build.natural_signature(mod, spec))["main"].with_attr("global_symbol", name)
            # opaque to FuseOps (FuseTIR cannot merge a kernel whose parameters alias its buffers:
            # an epilogue fused into the kernel is the kernel's own, issue 35)
            func = func.with_attr("op_pattern", 8).with_attr("tirx.is_scheduled", True)
            gv = kernels[spec] = bb.add_func(func, name)
        args = [_kernel_arg(importer, bound[name], shape, spec, name) for name, shape in spec.arg_shapes]
        if spec in packs:
            pack_gv, at, ty = packs[spec]
            args[at] = bb.emit(relax.call_tir(pack_gv, [args[at]], ty))
        return bb.emit(relax.call_tir(gv, args, relax.TensorType(spec.out_shape, spec.dtype)))

    try:
        mod = from_exported_program(ep, custom_convert_map=dict.fromkeys(conv_op_names(), convert))
    except (AssertionError, KeyError, NotImplementedError, ValueError) as exc:
        raise ValueError(f"the model holds an op TVM's Relax importer does not take: {exc}") from exc
    seq = tvm.transform.Sequential([relax.transform.LegalizeOps(), relax.transform.FoldConstant(),
                                    relax.transform.AnnotateTIROpPattern(), relax.transform.FuseOps(),
                                    relax.transform.FuseTIR(), relax.transform.DeadCodeElimination()])
    mod = seq(mod)
    if schedule:
        mod, _ = tgt.backend.schedule_model_functions(mod)
    kernel_names = {gv.name_hint: spec for spec, gv in kernels.items()}
    return mod, {name: spec for name, spec in kernel_names.items() if any(g.name_hint == name for g in mod.get_global_vars())}


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


__all__ = ["exported", "relax_module"]
