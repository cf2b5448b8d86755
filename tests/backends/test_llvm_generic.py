"""The schedules of a compiled model's non-convolution functions (backends/llvm_generic.py): each
rule's function against torch on the op it was legalized from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

tvm = pytest.importorskip("tvm")

from tvm import relax, tirx  # noqa: E402

from tvmconv.backends.llvm_generic import schedule_module  # noqa: E402
from tvmconv.backends.target import resolve  # noqa: E402


def _legalized(shape: tuple, op) -> tvm.IRModule:
    """The TIR function LegalizeOps makes of ``op`` on a float32 tensor of ``shape``."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(op(x))
        bb.emit_func_output(y)
    func = next(f for _, f in relax.transform.LegalizeOps()(bb.get()).functions_items() if isinstance(f, tirx.PrimFunc))
    return tvm.IRModule({"main": func.with_attr("global_symbol", "main")})


REDUCTIONS = {  # relax op, torch reference
    "mean": (lambda x: relax.op.mean(x, axis=[2, 3], keepdims=True), lambda t: t.mean(dim=(2, 3), keepdim=True)),
    "sum": (lambda x: relax.op.sum(x, axis=[2, 3]), lambda t: t.sum(dim=(2, 3))),
    "channel sum": (lambda x: relax.op.sum(x, axis=[1]), lambda t: t.sum(dim=1)),
}


@pytest.mark.parametrize("shape, rule", [((1, 32, 56, 56), "RowReduction"), ((2, 24, 14, 14), "RowReduction"),
                                         ((1, 40, 7, 7), None), ((1, 8, 3, 5), None)])
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_a_reduction_over_each_channels_pixels_is_summed_in_vectors_and_gives_torchs_answer(shape, rule, name):
    op, ref = REDUCTIONS[name]
    tgt = resolve(None)
    mod, counts = schedule_module(_legalized(shape, op), tgt.tvm(), tgt.backend.lanes("float32"))
    # in vectors where the pixels hold whole (half-)vectors: not 7 x 7, nor a sum across channels
    assert ("RowReduction" in counts) == (rule is not None and name != "channel sum"), counts
    x = torch.randn(shape)
    x[0, 1, 2, 3] = float("nan")
    x[-1, 2, 0, 1] = float("inf")
    want = ref(x.double())  # (float32 sums in another order differ by rounding: a bound from sum |x|)
    got = tvm.runtime.tensor(np.zeros(tuple(want.shape), "float32"))
    tvm.compile(mod, target=tgt.tvm())["main"](tvm.runtime.tensor(x.numpy()), got)
    bound = 1e-6 * float(ref(x.double().abs().nan_to_num(posinf=0)).max())
    torch.testing.assert_close(torch.from_numpy(got.numpy()).double(), want, rtol=1e-6, atol=bound, equal_nan=True)


def _run_fused(shapes: list[tuple], build, inputs: list[torch.Tensor]) -> tuple[list[torch.Tensor], dict]:
    """``build(*vars)`` (Relax ops on float32 tensors of ``shapes``) as a compiled model makes it:
    legalized (the NaN-keeping pooling included), fused, its TIR scheduled; run on ``inputs``.
    Returns the outputs and which rule scheduled how many functions."""
    from tvmconv.graph.lowering import _NAN_KEEPING

    bb = relax.BlockBuilder()
    xs = [relax.Var(f"x{i}", relax.TensorType(s, "float32")) for i, s in enumerate(shapes)]
    with bb.function("main", xs):
        with bb.dataflow():
            y = bb.emit_output(build(*xs))
        bb.emit_func_output(y)
    seq = tvm.transform.Sequential([relax.transform.LegalizeOps(_NAN_KEEPING), relax.transform.AnnotateTIROpPattern(),
                                    relax.transform.FuseOps(), relax.transform.FuseTIR()])
    tgt = resolve(None)
    mod, counts = schedule_module(seq(bb.get()), tgt.tvm(), tgt.backend.lanes("float32"))
    vm = relax.VirtualMachine(tvm.compile(mod, target=tgt.tvm()), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(t.numpy()) for t in inputs])
    outs = list(out) if not hasattr(out, "numpy") else [out]
    return [torch.from_numpy(o.numpy()) for o in outs], counts


@pytest.mark.parametrize("hw", [(28, 28), (14, 14), (7, 7), (5, 3)])
def test_shufflenets_channel_shuffle_fused_with_its_split_gives_torchs_answer(hw):
    c = 12
    a, b = torch.randn(1, c, *hw), torch.randn(1, c, *hw)
    a[0, 3, 0, 1], b[0, 5, -1, -1] = float("nan"), float("-inf")

    def shuffle(x, y):
        z = relax.op.reshape(relax.op.concat([x, y], axis=1), (1, 2, c, *hw))
        z = relax.op.reshape(relax.op.permute_dims(z, [0, 2, 1, 3, 4]), (1, 2 * c, *hw))
        return relax.op.split(z, 2, axis=1)

    got, counts = _run_fused([a.shape, b.shape], shuffle, [a, b])
    z = torch.cat([a, b], 1).view(1, 2, c, *hw).transpose(1, 2).reshape(1, 2 * c, *hw)
    assert counts == {"Parallel": 1}, counts
    for g, w in zip(got, z.chunk(2, dim=1)):
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)  # (a copy: bit for bit)


@pytest.mark.parametrize("shape", [(1, 40, 7, 7), (2, 16, 28, 28), (1, 6, 5, 3)])
def test_a_scale_per_channel_and_a_permutation_give_torchs_answer(shape):
    x, s = torch.randn(shape), torch.randn(1, shape[1], 1, 1)
    x[0, 1, 2, 0] = float("nan")
    got, _ = _run_fused([x.shape, s.shape], lambda v, w: relax.op.multiply(v, w), [x, s])
    torch.testing.assert_close(got[0], x * s, rtol=0, atol=0, equal_nan=True)
    got, _ = _run_fused([x.shape], lambda v: relax.op.permute_dims(v, [0, 2, 3, 1]), [x])
    torch.testing.assert_close(got[0], x.permute(0, 2, 3, 1), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("shape, k, stride, pad, rule", [
    ((1, 24, 112, 112), 3, 2, 1, "Window"),  # ShuffleNetV2's and ResNet's stem pool
    ((2, 4, 33, 17), 3, 2, 1, "Window"),
    ((1, 5, 32, 32), 2, 2, 0, "Window"),
    ((1, 3, 9, 5), 3, 1, 1, None),  # rows narrower than a vector: Parallel
])
def test_max_pooling_in_windows_gives_torchs_answer_nan_included(shape, k, stride, pad, rule):
    x = torch.randn(shape)
    x[0, 1, 0, 0] = float("nan")  # a corner: in the padded window's edge
    x[-1, -1, 4, 3] = float("nan")
    x[0, 0, 3, 3] = float("inf")
    got, counts = _run_fused([x.shape], lambda v: relax.op.nn.max_pool2d(v, k, stride, pad), [x])
    assert ("Window" in counts) == (rule == "Window"), counts
    torch.testing.assert_close(got[0], torch.nn.functional.max_pool2d(x, k, stride, pad), rtol=0, atol=0,
                               equal_nan=True)
