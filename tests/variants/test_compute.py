"""compute.py's elementwise helpers on their own: the vectorisable exp and sigmoid the model
compiler's epilogues use, against NumPy and torch over the whole float32 range, NaN and infinities."""

import numpy as np
import torch
import tvm
from tvm import te

from tvmconv.variants.compute import exp, sigmoid


def test_exp_and_sigmoid_follow_numpy_and_torch_everywhere():
    x = np.concatenate([np.linspace(-100, 100, 100001, dtype="float32"),
                        np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-30, 88.0, -87.0, 89.0, -104.0], "float32")])
    X = te.placeholder(x.shape, "float32", name="x")
    E = te.compute(X.shape, lambda i: exp(X(i)), name="e")
    S = te.compute(X.shape, lambda i: sigmoid(X(i)), name="s")
    f = tvm.compile(te.create_prim_func([X, E, S]), target="llvm")
    dev = tvm.cpu()
    got_e, got_s = (tvm.runtime.tensor(np.zeros_like(x), dev) for _ in range(2))
    f(tvm.runtime.tensor(x, dev), got_e, got_s)
    got_e, got_s = got_e.numpy(), got_s.numpy()
    with np.errstate(over="ignore"):
        want_e = np.exp(x.astype("float64"))
    normal = (want_e > 1e-37) & (want_e < 3e38)
    assert np.max(np.abs(got_e[normal] - want_e[normal]) / want_e[normal]) < 1e-6
    assert np.array_equal(np.isnan(got_e), np.isnan(x))
    assert got_e[x == np.inf].tolist() == [np.inf] and got_e[x == -np.inf].tolist() == [0.0]
    want_s = torch.sigmoid(torch.from_numpy(x)).numpy()
    assert np.array_equal(np.isnan(got_s), np.isnan(want_s))
    ok = ~np.isnan(want_s)
    assert np.max(np.abs(got_s[ok] - want_s[ok])) < 1e-6
    tail = ok & (want_s > 1e-30)  # relative, down to the tail (a SiLU's small outputs)
    assert np.max(np.abs(got_s[tail] - want_s[tail]) / want_s[tail]) < 1e-6
    assert got_s[x == -np.inf].tolist() == [0.0] and got_s[x == np.inf].tolist() == [1.0]
