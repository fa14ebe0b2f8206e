"""The registered op and the torch front end against the float64 reference."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ns_plugins.core import ops, reference
from ns_plugins.nn import NegativeSampling, negative_sampling

TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


def _inputs(seed, B, d, V, K, dtype, ignore_frac=0.2, dup=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, d, generator=g).to(dtype)
    W = torch.randn(V, d, generator=g).to(dtype)
    samples = torch.randint(0, V, (B, K), generator=g)
    if B and dup:
        samples[0, :] = samples[0, 0]  # negatives equal to the positive, repeated ids
    if B:
        samples[torch.rand(B, generator=g) < ignore_frac, 0] = -1
    return x, W, samples


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    B=st.integers(0, 40),
    d=st.integers(1, 24),
    V=st.integers(1, 30),
    K=st.integers(1, 8),
    dtype=st.sampled_from(list(TOL)),
)
def test_forward_backward_match_reference(seed, B, d, V, K, dtype):
    x, W, samples = _inputs(seed, B, d, V, K, dtype)
    x.requires_grad_()
    W.requires_grad_()
    rows = ops.ns_loss(x, W, samples)
    assert rows.dtype == dtype and rows.shape == (B,)
    xr, Wr, s = x.detach().double().numpy(), W.detach().double().numpy(), samples.numpy()
    ref = reference.ns_loss_rows(xr, Wr, s)
    gy = torch.rand(B, dtype=torch.float64) + 0.5
    rows.backward(gy.to(dtype))
    gx_ref, gW_ref = reference.ns_loss_grad(gy.numpy(), xr, Wr, s)
    if B == 0:
        return
    assert _rel(rows.detach().double(), ref) < TOL[dtype]
    assert x.grad.dtype == dtype and W.grad.dtype == dtype
    assert _rel(x.grad.double(), gx_ref) < TOL[dtype]
    assert _rel(W.grad.double(), gW_ref) < TOL[dtype]
    ignored = s[:, 0] == -1
    assert np.all(rows.detach().double().numpy()[ignored] == 0)
    assert torch.all(x.grad[torch.from_numpy(ignored)] == 0)


def test_double_backward_matches_reference():
    x, W, samples = _inputs(1, 12, 6, 9, 5, torch.float64)
    x.requires_grad_()
    W.requires_grad_()
    gy = torch.rand(12, dtype=torch.float64, requires_grad=True)
    gx, gW = torch.autograd.grad(ops.ns_loss(x, W, samples), (x, W), gy, create_graph=True)
    ggx, ggW = torch.randn_like(gx), torch.randn_like(gW)
    got = torch.autograd.grad((gx * ggx).sum() + (gW * ggW).sum(), (gy, x, W))
    want = reference.ns_loss_double_grad(
        gy.detach().numpy(),
        x.detach().numpy(),
        W.detach().numpy(),
        samples.numpy(),
        ggx.numpy(),
        ggW.numpy(),
    )
    for a, b in zip(got, want):
        assert _rel(a.detach(), b) < 1e-12


def test_gradcheck_gradgradcheck_opcheck():
    x, W, samples = _inputs(2, 7, 4, 6, 4, torch.float64)
    x.requires_grad_()
    W.requires_grad_()
    fn = lambda x, W: ops.ns_loss(x, W, samples)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, W))
    assert torch.autograd.gradgradcheck(fn, (x, W))
    gy = torch.rand(7, dtype=torch.float64, requires_grad=True)
    for op, args in [(ops.ns_loss_fwd, (x, W, samples)), (ops.ns_loss_bwd, (gy, x, W, samples))]:
        result = torch.library.opcheck(op, args)
        assert all(v == "SUCCESS" for v in result.values()), result


def test_torch_compile_fullgraph_forward_and_backward():
    x, W, samples = _inputs(3, 16, 8, 20, 6, torch.float32)
    ref = reference.ns_loss_rows(x.numpy(), W.numpy(), samples.numpy())
    x.requires_grad_()
    W.requires_grad_()
    compiled = torch.compile(lambda x, W, s: ops.ns_loss(x, W, s).sum(), fullgraph=True)
    loss = compiled(x, W, samples)
    loss.backward()
    _, gW_ref = reference.ns_loss_grad(
        np.ones(16), x.detach().numpy(), W.detach().numpy(), samples.numpy()
    )
    assert _rel(loss.item(), ref.sum()) < 1e-5
    assert _rel(W.grad, gW_ref) < 1e-5


def test_sparse_paths_match_dense():
    x, W, samples = _inputs(4, 30, 5, 50, 6, torch.float32)
    gy = torch.rand(30)
    Wd = W.clone().requires_grad_()
    ops.ns_loss(x, Wd, samples).backward(gy)
    Ws = W.clone().requires_grad_()
    ops.ns_loss(x, Ws, samples, sparse_grad=True).backward(gy)
    assert Ws.grad.is_sparse
    torch.testing.assert_close(Ws.grad.to_dense(), Wd.grad)
    loss, gx, rows, gW_rows = ops.ns_loss_sparse(x, W, samples, gy)
    torch.testing.assert_close(loss, ops.ns_loss(x, W, samples))
    dense = torch.zeros_like(W).index_add_(0, rows, gW_rows)
    torch.testing.assert_close(dense, Wd.grad)
    assert rows.numel() == torch.unique(samples.clamp_min(0)).numel()  # only touched rows


def test_front_end_contract():
    V, d = 12, 4
    torch.manual_seed(0)
    x, W = torch.randn(8, d, requires_grad=True), torch.randn(V, d, requires_grad=True)
    t = torch.tensor([0, 3, -1, 11, 5, 5, -1, 2])
    calls = []

    def sampler(shape):
        calls.append(shape)
        return torch.randint(0, V, shape)

    loss, samples = negative_sampling(x, t, W, sampler, 4, return_samples=True)
    assert calls == [(8, 5)] and samples.shape == (8, 5)
    assert torch.equal(samples[:, 0], t)  # column 0 is t, -1 kept
    ref = reference.negative_sampling(
        x.detach().numpy(), t.numpy(), W.detach().numpy(), samples.numpy(), "no"
    )
    assert loss.dim() == 0 and _rel(loss.item(), ref.sum()) < 1e-5
    fixed = samples.clamp_min(0)  # the sampler's draws are ids; column 0 is overwritten by t
    rows = negative_sampling(x, t, W, lambda s: fixed.clone(), 4, reduce="no")
    assert rows.shape == (8,) and _rel(rows.detach(), ref) < 1e-5
    # a numpy sampler works as well
    rng = np.random.default_rng(0)
    negative_sampling(x, t, W, lambda s: rng.integers(0, V, s), 2)


def test_module_like_chainer_link():
    counts = np.array([50, 20, 10, 5, 1])
    m = NegativeSampling(3, counts, sample_size=4)
    assert m.W.shape == (5, 3) and torch.all(m.W == 0)
    assert len(m.alias) == 5
    m.generator = torch.Generator().manual_seed(0)
    x, t = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 4, -1])
    loss, samples = m(x, t, return_samples=True)
    # with W = 0 every valid row costs (k + 1) * log 2
    assert abs(loss.item() - 5 * 5 * np.log(2)) < 1e-5
    assert samples.shape == (6, 5) and samples[5, 0] == -1
    loss.backward()
    assert m.W.grad.shape == m.W.shape


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(x=torch.randn(4)), ValueError, "x must be 2-D"),
        (dict(t=torch.zeros(4, 1, dtype=torch.long)), ValueError, "t must be 1-D"),
        (dict(t=torch.zeros(4)), TypeError, "integer"),
        (dict(t=torch.zeros(3, dtype=torch.long)), ValueError, "batch sizes differ"),
        (dict(W=torch.randn(10, 5)), ValueError, "features"),
        (dict(W=torch.randn(10, 3, dtype=torch.float64)), TypeError, "same dtype"),
        (dict(t=torch.tensor([0, 1, 10, 2])), IndexError, r"label 10, out of range \[-1, 10\)"),
        (dict(t=torch.tensor([0, -2, 1, 2])), ValueError, "label -2, out of range"),
        (dict(sample_size=-1), ValueError, "sample_size"),
        (dict(sampler=lambda s: torch.zeros(s[0], 2, dtype=torch.long)), ValueError, "shape"),
        (dict(sampler=lambda s: torch.zeros(s)), TypeError, "integer ids"),
        (dict(sampler=lambda s: torch.full(s, 10)), ValueError, r"id 10, out of range \[0, 10\)"),
        (dict(reduce="mean"), ValueError, "only 'sum' and 'no' are valid for 'reduce'"),
    ],
)
def test_bad_input(kwargs, exc, message):
    args = dict(
        x=torch.randn(4, 3),
        t=torch.tensor([0, 1, -1, 9]),
        W=torch.randn(10, 3),
        sampler=lambda s: torch.randint(0, 10, s),
        sample_size=3,
        reduce="sum",
    )
    args.update(kwargs)
    with pytest.raises(exc, match=message):
        negative_sampling(**args)


@pytest.mark.gpu
def test_cuda_matches_reference():
    x, W, samples = _inputs(5, 64, 32, 100, 6, torch.float32)
    xc, Wc = x.cuda().requires_grad_(), W.cuda().requires_grad_()
    rows = ops.ns_loss(xc, Wc, samples.cuda())
    rows.sum().backward()
    ref = reference.ns_loss_rows(x.numpy(), W.numpy(), samples.numpy())
    _, gW = reference.ns_loss_grad(np.ones(64), x.numpy(), W.numpy(), samples.numpy())
    assert _rel(rows.detach().cpu(), ref) < 1e-5
    assert _rel(Wc.grad.cpu(), gW) < 1e-5


def _kernel_modules():
    from ns_plugins.kernels import loss_torch

    mods = [loss_torch]
    try:
        from ns_plugins.kernels import loss_numba

        mods.append(loss_numba)
    except ImportError:
        pass
    return mods


@pytest.mark.parametrize("kernels", _kernel_modules(), ids=lambda m: m.__name__.split(".")[-1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_cpu_kernel_matches_reference(kernels, dtype):
    for _ in range(3):  # fresh shapes and draws each time
        rng = np.random.default_rng()
        B, d, V, K = (int(v) for v in rng.integers([1, 1, 1, 1], [60, 40, 50, 9]))
        x, W, samples = _inputs(int(rng.integers(2**31)), B, d, V, K, dtype)
        gy = torch.rand(B, dtype=dtype)
        xr, Wr, s = x.double().numpy(), W.double().numpy(), samples.numpy()
        gx_ref, gW_ref = reference.ns_loss_grad(gy.double().numpy(), xr, Wr, s)
        loss_ref = reference.ns_loss_rows(xr, Wr, s)
        tol = TOL[dtype]
        assert _rel(kernels.forward(x, W, samples), loss_ref) < tol
        gx, gW = kernels.backward(gy, x, W, samples)
        assert _rel(gx, gx_ref) < tol and _rel(gW, gW_ref) < tol
        gx, rows, gW_rows = kernels.sparse_backward(gy, x, W, samples)
        assert _rel(gx, gx_ref) < tol
        assert _rel(torch.zeros_like(W).index_add_(0, rows, gW_rows), gW_ref) < tol
        loss, gx, rows, gW_rows = kernels.forward_backward_sparse(x, W, samples, gy)
        assert _rel(loss, loss_ref) < tol and _rel(gx, gx_ref) < tol
        assert _rel(torch.zeros_like(W).index_add_(0, rows, gW_rows), gW_ref) < tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("V", [3, 700, 1500])
@pytest.mark.parametrize("d", [9, 10])  # float32 rows of 36 and 40 bytes: 4- and 8-byte words
def test_scatter_dense_rewrites_any_array(dtype, V, d):
    """The dense W gradient written into an array that holds leftovers (NaN, -0.0, old rows):
    touched rows get the gradient, every other row exactly zero."""
    from ns_plugins.kernels import loss_numba

    x, W, samples = _inputs(7, 64, d, V, 6, dtype)
    gy = torch.rand(64, dtype=dtype) + 0.5
    g, _, _ = loss_numba.rows_grad(gy, x, W, samples, False)
    out = np.full((V, d), np.nan, dtype=x.numpy().dtype)
    out[::2] = 0.0
    out[1::3] = -0.0
    loss_numba.scatter_dense(g, x, samples, out)
    s = samples.numpy()
    _, gW_ref = reference.ns_loss_grad(
        gy.double().numpy(), x.double().numpy(), W.double().numpy(), s
    )
    assert _rel(out, gW_ref) < TOL[dtype]
    untouched = np.setdiff1d(np.arange(V), np.maximum(s, 0))
    assert np.all(out[untouched].view(np.uint8) == 0)  # +0.0 bit for bit


def _bad_samples():
    """(name, samples, bad id): 4 rows over V = 10, each case with one id no kernel may see."""
    good = torch.tensor([[0, 1, 2], [3, 4, 5], [-1, 6, 7], [9, 8, 0]])
    cases = []
    for name, (i, j, v) in {
        "label V": (1, 0, 10),
        "label 10**7": (3, 0, 10**7),
        "label -2": (0, 0, -2),
        "negative id -1": (2, 2, -1),
        "negative id -3": (0, 1, -3),
        "negative id V": (3, 2, 10),
        "negative id 10**7": (1, 1, 10**7),
    }.items():
        s = good.clone()
        s[i, j] = v
        cases.append((name, s, v))
    return cases


@pytest.mark.parametrize("name, samples, bad", _bad_samples(), ids=[c[0] for c in _bad_samples()])
def test_op_rejects_ids_out_of_range_before_any_kernel(name, samples, bad):
    x = torch.randn(4, 3, dtype=torch.float64)
    W0 = torch.randn(10, 3, dtype=torch.float64)
    W = W0.clone().requires_grad_()
    gy = torch.ones(4, dtype=torch.float64)
    calls = [
        lambda: ops.ns_loss(x, W, samples),
        lambda: ops.ns_loss(x, W, samples, sparse_grad=True),
        lambda: torch.ops.ns_plugins.ns_loss_fwd(x, W, samples),
        lambda: torch.ops.ns_plugins.ns_loss_bwd(gy, x, W, samples),
        lambda: ops.ns_loss_sparse(x, W.detach(), samples, gy),
    ]
    for call in calls:
        with pytest.raises(IndexError, match=rf" {bad}, out of range \[-?[01], 10\)"):
            call()
    assert torch.equal(W.detach(), W0) and W.grad is None


def test_op_rejects_bad_shapes_and_dtypes():
    x, W = torch.randn(4, 3), torch.randn(10, 3)
    with pytest.raises(ValueError, match="samples must be 2-D"):
        ops.ns_loss(x, W, torch.zeros(4, dtype=torch.long))  # 1-D samples
    with pytest.raises(ValueError, match="samples must be 2-D"):
        ops.ns_loss(x, W, torch.zeros(3, 2, dtype=torch.long))  # batch differs
    with pytest.raises(TypeError, match="integer ids"):
        ops.ns_loss(x, W, torch.zeros(4, 2))  # float ids
    with pytest.raises(TypeError, match="same dtype"):
        ops.ns_loss(x, W.double(), torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="gy must have shape"):
        ops.ns_loss_sparse(x, W, torch.zeros(4, 2, dtype=torch.long), torch.ones(3))
    # int32 ids stay accepted
    s = torch.randint(0, 10, (4, 2))
    torch.testing.assert_close(ops.ns_loss(x, W, s.int()), ops.ns_loss(x, W, s))


def test_op_checks_ids_under_torch_compile():
    x, W = torch.randn(4, 3), torch.randn(10, 3, requires_grad=True)
    compiled = torch.compile(lambda x, W, s: ops.ns_loss(x, W, s).sum(), fullgraph=True)
    good = torch.randint(0, 10, (4, 3))
    compiled(x, W, good).backward()
    bad = good.clone()
    bad[2, 1] = 10**7
    W.grad = None
    with pytest.raises(IndexError, match="10000000, out of range"):
        compiled(x, W, bad)
    assert W.grad is None
    with pytest.raises(Exception, match="samples must be 2-D"):  # caught while tracing
        compiled(x, W, good[:, 0])


@pytest.mark.parametrize(
    "t, sampler, exc, message",
    [
        (torch.tensor([0, 1, 10, 2]), None, IndexError, r"label 10, out of range \[-1, 10\)"),
        (torch.tensor([0, 10**7, 1, 2]), None, IndexError, "label 10000000, out of range"),
        (None, lambda s: torch.full(s, 10**7), IndexError, r"id 10000000, out of range \[0, 10\)"),
        (None, lambda s: -torch.ones(s, dtype=torch.long), IndexError, "id -1, out of range"),
        (None, lambda s: np.full(s, 2.7), TypeError, "integer ids"),
        (None, lambda s: torch.zeros(s[0], dtype=torch.long), ValueError, "sampler returned shape"),
    ],
)
def test_front_end_rejects_bad_ids_and_leaves_W_untouched(t, sampler, exc, message):
    x = torch.randn(4, 3, requires_grad=True)
    W0 = torch.randn(10, 3)
    W = W0.clone().requires_grad_()
    t = torch.tensor([0, 1, -1, 9]) if t is None else t
    sampler = sampler or (lambda s: torch.randint(0, 10, s))
    with pytest.raises(exc, match=message):
        negative_sampling(x, t, W, sampler, 2)
    assert torch.equal(W.detach(), W0) and W.grad is None and x.grad is None


def test_front_end_ignores_the_samplers_column_0():
    """Column 0 is overwritten by t, so what the sampler put there is never checked or used."""
    x, W = torch.randn(3, 2), torch.randn(5, 2)
    t = torch.tensor([4, -1, 0])

    def sampler(shape):
        s = torch.randint(0, 5, shape)
        s[:, 0] = -7
        return s

    loss, samples = negative_sampling(x, t, W, sampler, 3, reduce="no", return_samples=True)
    assert torch.equal(samples[:, 0], t) and loss[1] == 0
