"""Inputs the kernels cannot take never reach them: the drop-in raises what Chainer 7.8.1 raises
(widths of x and W that differ, rows of ids that do not match x, a gradient of the wrong shape),
with one line naming the problem, before any kernel runs.

Unchecked, these cases read or write outside the arrays (a segmentation fault, heap corruption or
a plausible wrong loss), so the drop-in runs them in a child process: a regression fails the test
instead of ending the run. Chainer's own functions run them here, with the drop-in uninstalled.
"""

import os
import subprocess
import sys
import types
from pathlib import Path

import chainer_setup  # noqa: F401  (skips without Chainer, applies the import fixes)
import numpy as np
import pytest

# isort: split

import chainer
import chainer.functions as F
from chainer.functions.loss import negative_sampling as fns

import ns_plugins.chainer as nsc
from ns_plugins.chainer import functions as drop_in

pytestmark = pytest.mark.chainer

ROOT = Path(__file__).resolve().parents[1]
K = 2  # negatives per row


def _arrays(x_shape, W_shape, dtype=np.float32):
    rng = np.random.default_rng(0)
    return rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(W_shape).astype(dtype)


def _sampler(V, rows=None):
    def sampler(shape):
        shape = shape if rows is None else (rows, shape[1])
        return np.random.default_rng(1).integers(0, V, shape).astype(np.int32)

    return sampler


def _loss(x_shape, W_shape, n_labels=None, backward=False, type_check=True, rows=None):
    """The loss on x and W of these shapes (labels: one per row of x unless given); with
    ``backward`` its gradient too; ``rows``: the sampler returns that many rows."""

    def case(api):
        x, W = _arrays(x_shape, W_shape)
        t = np.zeros(x_shape[0] if n_labels is None else n_labels, np.int32)
        with chainer.using_config("type_check", type_check):
            if backward:
                x, W = chainer.Variable(x), chainer.Variable(W)
            y = api.negative_sampling(x, t, W, _sampler(W_shape[0], rows), K)
            if backward:
                y.backward()

    return case


def _grad(x_shape, W_shape, samples=None, gy=(), reduce="sum"):
    """The gradient node, built as Chainer's code builds it, applied to (x, W, gy)."""

    def case(api):
        x, W = _arrays(x_shape, W_shape)
        ids = samples
        if ids is None:
            ids = np.random.default_rng(1).integers(0, W_shape[0], (x_shape[0], K + 1))
        ids = np.asarray(ids, np.int32)
        mask = np.ones(x_shape[0], bool)
        node = api.NegativeSamplingFunctionGrad(reduce, mask, K, ids, None)
        node.apply((x, W, np.ones(gy, np.float32)))

    return case


# name -> case(api); each raises in Chainer, the drop-in must raise the same class
CASES = {
    "x (1, 10**7), W (4, 2)": _loss((1, 10**7), (4, 2)),
    "x (1, 100), W (4, 2)": _loss((1, 100), (4, 2)),
    "x (6, 4), W (20, 8)": _loss((6, 4), (20, 8)),
    "x (3, 2), W (4, 8)": _loss((3, 2), (4, 8)),
    "backward: x (1, 4096), W (4, 2)": _loss((1, 4096), (4, 2), backward=True),
    "backward: x (6, 4), W (20, 8)": _loss((6, 4), (20, 8), backward=True),
    "sampler returns more rows than x": _loss((1, 2), (4, 2), rows=5),
    "type check off: x (3, 100), W (4, 2)": _loss((3, 100), (4, 2), type_check=False),
    "type check off: x 3-D": _loss((3, 2, 1), (4, 2), type_check=False),
    "type check off: x 1-D": _loss((3,), (4, 2), type_check=False),
    "type check off: W 1-D": _loss((3, 2), (4,), type_check=False),
    "type check off: W 3-D": _loss((3, 2), (4, 2, 1), type_check=False),
    "type check off: more labels than rows of x": _loss((3, 2), (4, 2), 5, type_check=False),
    "type check off: fewer labels than rows of x": _loss((3, 2), (4, 2), 2, type_check=False),
    "grad node: x (3, 4096), W (4, 2)": _grad((3, 4096), (4, 2)),
    "grad node: x (3, 5), W (4, 2)": _grad((3, 5), (4, 2)),
    "grad node: fewer rows of ids than of x": _grad((3, 2), (4, 2), [[0, 1, 2], [1, 2, 3]]),
    "grad node: no column of ids": _grad((3, 2), (4, 2), np.zeros((3, 0))),
    "grad node: id outside W": _grad((3, 2), (4, 2), [[0, 1, 2], [1, 99, 3], [2, 0, 0]]),
    "grad node: id far below -V": _grad((3, 2), (4, 2), [[0, 1, 2], [1, -9999, 3], [2, 0, 0]]),
    "grad node: 0-d gradient with reduce='no'": _grad((3, 2), (4, 2), gy=(), reduce="no"),
    "grad node: per-row gradient with reduce='sum'": _grad((4, 2), (4, 2), gy=(4,)),
}

CHAINER = types.SimpleNamespace(
    negative_sampling=F.negative_sampling,
    NegativeSamplingFunctionGrad=fns.NegativeSamplingFunctionGrad,
)
DROP_IN = types.SimpleNamespace(
    negative_sampling=nsc.negative_sampling,
    NegativeSamplingFunctionGrad=drop_in.NegativeSamplingFunctionGrad,
)


def _name(exc_type):
    return f"{exc_type.__module__}.{exc_type.__qualname__}"


def child(names):
    """Run the cases on the drop-in, one line out per case (flushed before the next starts)."""
    for name in names:
        print(f"START\t{name}", flush=True)
        try:
            CASES[name](DROP_IN)
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            message = str(exc)
            first = message.splitlines()[0] if message else ""
            print(f"RAISED\t{name}\t{_name(type(exc))}\t{len(message.splitlines())}\t{first}")
        else:
            print(f"RETURNED\t{name}")
        sys.stdout.flush()


CHILD = "import sys, test_chainer_shapes as m; m.child(sys.argv[1:])"


@pytest.fixture(scope="module")
def drop_in_results():
    """{case: ('RAISED', class, lines, message) | ('RETURNED',) | ('DIED', why)}, from child
    processes; after a child dies on a case, another runs the cases left."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env["PYTHONWARNINGS"] = "ignore"
    env.pop("NS_PLUGINS_CHAINER", None)
    results, left = {}, list(CASES)
    while left:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, *left], env=env, capture_output=True, text=True
        )
        started = None
        for line in proc.stdout.splitlines():
            kind, name, *rest = line.split("\t")
            if kind == "START":
                started = name
            else:
                results[name] = (kind, *rest)
                started = None
        if started is None:  # every case reported
            assert proc.returncode == 0 and set(left) <= set(results), proc.stderr[-3000:]
            break
        why = f"the child process ended with status {proc.returncode}: {proc.stderr[-1500:]}"
        results[started] = ("DIED", why)
        left = left[left.index(started) + 1 :]
    return results


@pytest.mark.parametrize("case", list(CASES))
def test_raises_what_chainer_raises_before_any_kernel(case, drop_in_results):
    assert not CHAINER.negative_sampling.__module__.startswith("ns_plugins")
    with pytest.raises(Exception) as chainer_raised:
        CASES[case](CHAINER)
    outcome = drop_in_results[case]
    assert outcome[0] != "DIED", f"{case}: {outcome[1]}"
    assert outcome[0] == "RAISED", f"{case}: the drop-in returned where Chainer raised"
    _, raised, lines, message = outcome
    assert raised == _name(chainer_raised.type), f"{case}: {raised}: {message}"
    assert lines == "1" and message, f"{case}: the message is not one line: {message!r}"


# dtypes ----------------------------------------------------------------------------------------
@pytest.fixture
def kernels_untouched(monkeypatch):
    """Fails the test if a CPU kernel runs."""

    def refuse(*args, **kwargs):
        raise AssertionError("a kernel ran on inputs it cannot take")

    for name in ("loss_rows", "pair_grads", "scatter_dense"):
        monkeypatch.setattr(drop_in.loss_numba, name, refuse)


@pytest.mark.parametrize(
    "dtypes", [(np.float32, np.float64), (np.float64, np.float32), (np.int32, np.int32)]
)
def test_dtypes_the_type_check_rejects_raise_with_it_off(dtypes, kernels_untouched):
    """Chainer's type check rejects these (InvalidType); switched off, the drop-in still does
    not hand them to the kernels (TypeError, as the CuPy kernels raise)."""
    x = np.ones((3, 2), dtypes[0])
    W = np.ones((4, 2), dtypes[1])
    t = np.zeros(3, np.int32)
    with pytest.raises(chainer.utils.type_check.InvalidType):
        nsc.negative_sampling(x, t, W, _sampler(4), K)
    with chainer.using_config("type_check", False):
        with pytest.raises(TypeError, match="one dtype") as info:
            nsc.negative_sampling(x, t, W, _sampler(4), K)
    assert "\n" not in str(info.value)


LONG_DOUBLE = np.dtype(np.longdouble)
OTHER_ORDER = np.dtype(np.float32).newbyteorder()


@pytest.mark.parametrize("dtype", [LONG_DOUBLE, OTHER_ORDER], ids=["longdouble", "byteswapped"])
@pytest.mark.parametrize("reduce", ["sum", "no"])
def test_float_types_chainer_accepts_are_computed(dtype, reduce):
    """Chainer's type check takes any float type; those the kernels are not compiled for are
    computed in the native float32 / float64 of their size, and returned in their own dtype."""
    x, W = _arrays((5, 3), (4, 3), np.float64)
    t = np.array([0, 1, -1, 3, 2], np.int32)
    results = []
    for f in (F.negative_sampling, nsc.negative_sampling):
        xv, Wv = chainer.Variable(x.astype(dtype)), chainer.Variable(W.astype(dtype))
        y = f(xv, t, Wv, _sampler(4), K, reduce)
        y.grad = np.ones_like(y.array)  # (F.sum would turn a byte-swapped y native)
        y.backward()
        results.append((y.array, xv.grad, Wv.grad))
    tol = 1e-5 if dtype.itemsize == 4 else 1e-12
    for ours, chainers in zip(results[1], results[0]):
        assert ours.dtype == chainers.dtype == dtype
        np.testing.assert_allclose(
            np.asarray(ours, np.float64), np.asarray(chainers, np.float64), rtol=tol, atol=tol
        )


def test_strided_inputs_match_chainer():
    """Views with gaps (a column slice of x, every other row of W) give Chainer's results."""
    x, W = _arrays((5, 8), (10, 3))
    x, W = x[:, 1:7:2], W[::2]
    t = np.array([0, 1, -1, 3, 2], np.int32)
    results = []
    for f in (F.negative_sampling, nsc.negative_sampling):
        xv, Wv = chainer.Variable(x), chainer.Variable(W)
        y = f(xv, t, Wv, _sampler(5), K, "no")
        F.sum(y).backward()
        results.append((y.array, xv.grad, Wv.grad))
    for ours, chainers in zip(results[1], results[0]):
        np.testing.assert_allclose(ours, chainers, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("shapes", [((1, 100), (4, 2)), ((6, 4), (20, 8))])
def test_widths_checked_on_gpu(shapes):
    """The CuPy kernels get the same checked input: the check runs before either path."""
    cupy = pytest.importorskip("cupy")
    x, W = (cupy.asarray(a) for a in _arrays(*shapes))
    t = cupy.zeros(shapes[0][0], cupy.int32)

    def sampler(shape):
        return cupy.zeros(shape, cupy.int32)

    with pytest.raises(ValueError, match="columns but W has") as info:
        nsc.negative_sampling(x, t, W, sampler, K)
    assert "\n" not in str(info.value)
    ids = cupy.zeros((shapes[0][0], K + 1), cupy.int32)
    node = drop_in.NegativeSamplingFunctionGrad("sum", None, K, ids, None)
    with pytest.raises(ValueError, match="columns but W has"):
        node.apply((x, W, cupy.ones((), cupy.float32)))
