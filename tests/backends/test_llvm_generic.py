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
