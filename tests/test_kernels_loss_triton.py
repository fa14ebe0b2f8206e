"""The Triton kernels against the float64 reference.

Without a CUDA device tests/conftest.py sets TRITON_INTERPRET=1 and the kernels run on CPU
tensors at small shapes; with one they run on the GPU. Outputs are poisoned before each launch,
so an element a kernel forgets to write shows up as NaN or a huge id.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

triton = pytest.importorskip("triton")

from ns_plugins.core import reference  # noqa: E402
from ns_plugins.core.alias import AliasSampler  # noqa: E402
from ns_plugins.kernels import loss_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
# ||out - ref|| / ||ref||: float32 as the README's contract says; half types are bounded by their
# output rounding.
TOL = {torch.float32: 1e-5, torch.float64: 1e-12, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
POISON_ID = 2**62


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    def empty(*shape, dtype=None, device=None):
        t = torch.empty(*shape, dtype=dtype, device=device)
        return t.fill_(float("nan") if t.is_floating_point() else POISON_ID)

    monkeypatch.setattr(loss_triton, "_empty", empty)


def make_case(rng, B, d, V, K, dtype, scale=0.5):
    """Random inputs with ignored rows, repeated rows and a negative equal to its positive."""
    x = torch.from_numpy(rng.standard_normal((B, d)) * scale).to(dtype)
    W = torch.from_numpy(rng.standard_normal((V, d)) * scale).to(dtype)
    samples = torch.from_numpy(rng.integers(0, V, (B, K)))
    if B >= 4:
        samples[rng.integers(B), 0] = -1
        samples[1] = samples[2]
        if K > 1:
            samples[3, 1] = samples[3, 0]
    return x.to(DEVICE), W.to(DEVICE), samples.to(DEVICE)


def f64(t):
    return t.detach().double().cpu().numpy()


def rel(out, ref):
    out = f64(out) if isinstance(out, torch.Tensor) else out
    assert np.isfinite(out).all(), "kernel left unwritten (poisoned) or non-finite elements"
    return np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-300)


def dense_from_rows(rows, gw_rows, V):
    out = np.zeros((V, gw_rows.shape[1]))
    out[rows.cpu().numpy()] = f64(gw_rows)
    return out


def touched(samples):
    s = samples.cpu().numpy()
    return np.unique(s[s[:, 0] >= 0])


# (B, d, V, K): d > 128 takes the chunked loop over columns; K = 1 has no negatives.
SHAPES = [(9, 16, 12, 6), (6, 200, 10, 3), (5, 7, 3, 1)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_dense_backward(rng, dtype, shape):
    x, W, samples = make_case(rng, *shape, dtype)
    gy = torch.from_numpy(rng.standard_normal(shape[0])).float().to(DEVICE)
    xr, Wr, sr = f64(x), f64(W), samples.cpu().numpy()

    loss = loss_triton.forward(x, W, samples)
    assert loss.dtype == dtype and loss.shape == (shape[0],)
    assert rel(loss, reference.ns_loss_rows(xr, Wr, sr)) < TOL[dtype]

    gx, gW = loss_triton.backward(gy, x, W, samples)
    gx_ref, gW_ref = reference.ns_loss_grad(f64(gy), xr, Wr, sr)
    assert gx.dtype == dtype and gW.dtype == dtype and gW.shape == W.shape
    assert rel(gx, gx_ref) < TOL[dtype]
    assert rel(gW, gW_ref) < TOL[dtype]
    ignored = sr[:, 0] < 0
    assert not f64(loss)[ignored].any() and not f64(gx)[ignored].any()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES[:2], ids=str)
def test_sparse_backward(rng, dtype, shape):
    x, W, samples = make_case(rng, *shape, dtype)
    V = shape[2]
    gy = torch.from_numpy(rng.standard_normal(shape[0])).to(dtype).to(DEVICE)
    gx_ref, gW_ref = reference.ns_loss_grad(f64(gy), f64(x), f64(W), samples.cpu().numpy())

    gx, rows, gw_rows = loss_triton.sparse_backward(gy, x, W, samples)
    assert rows.dtype == torch.int64 and gw_rows.dtype == dtype
    np.testing.assert_array_equal(rows.cpu().numpy(), touched(samples))
    assert rel(gx, gx_ref) < TOL[dtype]
    assert rel(dense_from_rows(rows, gw_rows, V), gW_ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("with_gy", [False, True])
def test_forward_backward_sparse(rng, dtype, with_gy):
    B, d, V, K = 10, 24, 9, 4
    x, W, samples = make_case(rng, B, d, V, K, dtype)
    gy = torch.from_numpy(rng.standard_normal(B)).float().to(DEVICE) if with_gy else None
    xr, Wr, sr = f64(x), f64(W), samples.cpu().numpy()
    gy_ref = f64(gy) if with_gy else np.ones(B)
    gx_ref, gW_ref = reference.ns_loss_grad(gy_ref, xr, Wr, sr)

    loss, gx, rows, gw_rows = loss_triton.forward_backward_sparse(x, W, samples, gy)
    assert rel(loss, reference.ns_loss_rows(xr, Wr, sr)) < TOL[dtype]
    assert rel(gx, gx_ref) < TOL[dtype]
    np.testing.assert_array_equal(rows.cpu().numpy(), touched(samples))
    assert rel(dense_from_rows(rows, gw_rows, V), gW_ref) < TOL[dtype]


def test_strided_inputs_and_expanded_gy(rng):
    B, d, V, K = 7, 10, 8, 3
    x_big = torch.from_numpy(rng.standard_normal((d, 2 * B))).float().to(DEVICE)
    W_big = torch.from_numpy(rng.standard_normal((V, 3 * d))).float().to(DEVICE)
    s_big = torch.from_numpy(rng.integers(0, V, (K, 2 * B))).to(DEVICE)
    x, W, samples = x_big.t()[::2], W_big[:, ::3], s_big.t()[1::2]
    assert not (x.is_contiguous() or W.is_contiguous() or samples.is_contiguous())
    gy = torch.ones((), device=DEVICE).expand(B)  # what the backward of a sum hands down
    xr, Wr, sr = f64(x), f64(W), samples.cpu().numpy()
    gx_ref, gW_ref = reference.ns_loss_grad(np.ones(B), xr, Wr, sr)

    assert rel(loss_triton.forward(x, W, samples), reference.ns_loss_rows(xr, Wr, sr)) < 1e-5
    gx, gW = loss_triton.backward(gy, x, W, samples)
    assert rel(gx, gx_ref) < 1e-5 and rel(gW, gW_ref) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_extreme_scores_stay_accurate(rng, dtype):
    # Scores up to |s| ~ 100: softplus and sigmoid must neither overflow nor lose the tiny terms.
    B, d, V, K = 8, 4, 6, 5
    x, W, samples = make_case(rng, B, d, V, K, dtype, scale=5.0)
    xr, Wr, sr = f64(x), f64(W), samples.cpu().numpy()
    loss = loss_triton.forward(x, W, samples)
    ref = reference.ns_loss_rows(xr, Wr, sr)
    tol = TOL[dtype] * 10
    np.testing.assert_allclose(f64(loss), ref, rtol=tol, atol=0)
    gx, gW = loss_triton.backward(torch.ones(B, device=DEVICE, dtype=dtype), x, W, samples)
    gx_ref, gW_ref = reference.ns_loss_grad(np.ones(B), xr, Wr, sr)
    assert rel(gx, gx_ref) < tol and rel(gW, gW_ref) < tol


def test_tiny_losses_keep_relative_accuracy():
    # Terms ~ exp(-12) and exp(-30): log(1 + exp(-|z|)) in float32 is 1% off for the first and
    # 0 for the second; each row must still be right to float32 precision.
    x = torch.tensor([[1.0], [1.0]], device=DEVICE)
    W = torch.tensor([[12.0], [-12.0], [-30.0], [30.0]], device=DEVICE)
    samples = torch.tensor([[0, 1, 1], [3, 2, 2]], device=DEVICE)
    loss = loss_triton.forward(x, W, samples)
    ref = reference.ns_loss_rows(f64(x), f64(W), samples.cpu().numpy())
    np.testing.assert_allclose(f64(loss), ref, rtol=1e-5)
    gx, _ = loss_triton.backward(torch.ones(2, device=DEVICE), x, W, samples)
    gx_ref, _ = reference.ns_loss_grad(np.ones(2), f64(x), f64(W), samples.cpu().numpy())
    # Row 1 only against exp(-30) directly: the reference's tanh-based sigmoid cancels there.
    np.testing.assert_allclose(f64(gx)[0], gx_ref[0], rtol=1e-5)
    np.testing.assert_allclose(f64(gx)[1, 0], -90 * np.exp(-30) / (1 + np.exp(-30)), rtol=1e-5)


def test_all_rows_ignored_and_empty_batch(rng):
    x, W, samples = make_case(rng, 5, 6, 7, 3, torch.float32)
    samples[:, 0] = -1
    gy = torch.ones(5, device=DEVICE)
    assert not loss_triton.forward(x, W, samples).any()
    gx, gW = loss_triton.backward(gy, x, W, samples)
    assert not gx.any() and not gW.any()
    gx, rows, gw_rows = loss_triton.sparse_backward(gy, x, W, samples)
    assert not gx.any() and rows.numel() == 0 and gw_rows.shape == (0, 6)

    x0, s0 = torch.empty(0, 6, device=DEVICE), torch.empty(0, 3, dtype=torch.int64, device=DEVICE)
    assert loss_triton.forward(x0, W, s0).shape == (0,)
    loss, gx, rows, gw_rows = loss_triton.forward_backward_sparse(x0, W, s0)
    assert loss.shape == (0,) and gx.shape == (0, 6) and rows.shape == (0,)
    assert gw_rows.shape == (0, 6)


def test_ignored_rows_add_no_gradient_rows(rng):
    x, W, samples = make_case(rng, 6, 5, 20, 4, torch.float32)
    samples[:, 0] = torch.tensor([-1, 1, -1, 3, 4, 5])
    samples[1:, 1:] %= 10
    samples[[0, 2], 1:] = torch.tensor([15, 16, 17], device=DEVICE)  # only ignored rows use these
    gy = torch.rand(6, device=DEVICE)
    gx, rows, gw_rows = loss_triton.sparse_backward(gy, x, W, samples)
    np.testing.assert_array_equal(rows.cpu().numpy(), touched(samples))
    assert rows.max() < 10
    _, gW_ref = reference.ns_loss_grad(f64(gy), f64(x), f64(W), samples.cpu().numpy())
    assert rel(dense_from_rows(rows, gw_rows, 20), gW_ref) < 1e-5


def test_bad_input_is_rejected(rng):
    x, W, samples = make_case(rng, 4, 6, 7, 3, torch.float32)
    with pytest.raises(TypeError, match="same dtype"):
        loss_triton.forward(x, W.double(), samples)
    with pytest.raises(TypeError, match="int64"):
        loss_triton.forward(x, W, samples.int())
    with pytest.raises(ValueError, match="columns"):
        loss_triton.forward(x, W[:, :5], samples)
    with pytest.raises(ValueError, match="samples must be"):
        loss_triton.forward(x, W, samples[:3])
    with pytest.raises(ValueError, match="gy must have shape"):
        loss_triton.backward(torch.ones(3, device=DEVICE), x, W, samples)
    if DEVICE == "cpu":  # on CUDA the id check fails asynchronously and poisons the context
        bad = samples.clone()
        bad[0, 0], bad[0, 1] = 0, 7
        with pytest.raises(RuntimeError, match="outside"):
            loss_triton.forward(x, W, bad)


# ----------------------------------------------------------------------------- sampling


def test_alias_sampling_matches_distribution():
    scipy_stats = pytest.importorskip("scipy.stats")
    counts = np.array([50, 1, 7, 0, 300, 12, 3, 90, 25, 2])
    sampler = AliasSampler.from_counts(counts, power=0.75)
    prob, alias = sampler.device_tables(DEVICE)
    n = 60_000
    ids = loss_triton.sample(prob, alias, (n // 6, 6), seed=1234, offset=77)
    assert ids.shape == (n // 6, 6) and ids.dtype == torch.int64
    freq = np.bincount(ids.cpu().numpy().ravel(), minlength=len(counts))
    assert freq.size == len(counts), "ids outside [0, V)"
    expected = sampler.probabilities() * n
    assert freq[expected == 0].sum() == 0
    keep = expected > 0
    _, p = scipy_stats.chisquare(freq[keep], expected[keep])
    assert p > 1e-4, f"chi-square p = {p}"


def test_alias_sampling_is_keyed_by_seed_and_offset():
    sampler = AliasSampler(np.arange(1, 41, dtype=np.float64))
    prob, alias = sampler.device_tables(DEVICE)
    a = loss_triton.sample(prob, alias, 3000, seed=5)
    assert torch.equal(a, loss_triton.sample(prob, alias, 3000, seed=5))
    assert torch.equal(a[1000:], loss_triton.sample(prob, alias, 2000, seed=5, offset=1000))
    assert not torch.equal(a, loss_triton.sample(prob, alias, 3000, seed=6))
    assert loss_triton.sample(prob, alias, (0, 4), seed=5).shape == (0, 4)


def test_alias_sampling_rejects_bad_tables():
    prob = torch.ones(4, dtype=torch.float64, device=DEVICE)
    alias = torch.arange(4, device=DEVICE)
    with pytest.raises(TypeError, match="float64"):
        loss_triton.sample(prob.float(), alias, 3, seed=0)
    with pytest.raises(ValueError, match="differ"):
        loss_triton.sample(prob, alias[:3], 3, seed=0)
    with pytest.raises(ValueError, match="seed"):
        loss_triton.sample(prob, alias, 3, seed=-1)


# ----------------------------------------------------------------------------- CUDA only


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_large_shapes(dtype):
    rng = np.random.default_rng()
    B, d, V, K = 4096, 128, 50_000, 6
    x, W, samples = make_case(rng, B, d, V, K, dtype)
    samples[:, 1:] = samples[:, 1:] % 50  # hot rows: many atomics on the same addresses
    gy = torch.rand(B, device=DEVICE)
    xr, Wr, sr = f64(x), f64(W), samples.cpu().numpy()
    gx_ref, gW_ref = reference.ns_loss_grad(f64(gy), xr, Wr, sr)
    assert rel(loss_triton.forward(x, W, samples), reference.ns_loss_rows(xr, Wr, sr)) < TOL[dtype]
    gx, gW = loss_triton.backward(gy, x, W, samples)
    assert rel(gx, gx_ref) < TOL[dtype] and rel(gW, gW_ref) < TOL[dtype]
    loss, gx, rows, gw_rows = loss_triton.forward_backward_sparse(x, W, samples, gy)
    assert rel(dense_from_rows(rows, gw_rows, V), gW_ref) < TOL[dtype]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("sparse_grad", [False, True])
def test_core_op_on_cuda(sparse_grad):
    from ns_plugins.core import ops

    rng = np.random.default_rng()
    x, W, samples = make_case(rng, 300, 64, 2000, 6, torch.float32)
    x.requires_grad_()
    W.requires_grad_()
    gy = torch.rand(300, device=DEVICE)
    (ops.ns_loss(x, W, samples, sparse_grad=sparse_grad) * gy).sum().backward()
    gx_ref, gW_ref = reference.ns_loss_grad(f64(gy), f64(x), f64(W), samples.cpu().numpy())
    assert rel(x.grad, gx_ref) < 1e-5
    assert rel(W.grad.to_dense() if sparse_grad else W.grad, gW_ref) < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_alias_sampling_large_vocabulary():
    scipy_stats = pytest.importorskip("scipy.stats")
    V = 100_000
    counts = np.random.default_rng().zipf(1.3, V).astype(np.float64)
    sampler = AliasSampler.from_counts(counts, power=0.75)
    prob, alias = sampler.device_tables(DEVICE)
    n = 20_000_000
    freq = torch.bincount(loss_triton.sample(prob, alias, n, seed=11), minlength=V).cpu().numpy()
    # Pool the tail so every chi-square cell expects at least 20 draws.
    expected = sampler.probabilities() * n
    order = np.argsort(expected)
    cells = (np.cumsum(expected[order]) // 20).astype(np.int64)
    f = np.bincount(cells, weights=freq[order])
    e = np.bincount(cells, weights=expected[order])
    _, p = scipy_stats.chisquare(f[e > 0], e[e > 0] * f.sum() / e.sum())
    assert p > 1e-4, f"chi-square p = {p}"


# ----------------------------------------------------------------------------- GPU lowering

# The interpreter accepts code the GPU compiler rejects (dtype mixes, float64 atomics, ...), so
# the kernels are also compiled to sm_90 machine code here, no device needed. A fresh process,
# because an interpreted @triton.jit function cannot be handed to the compiler.
COMPILE_SCRIPT = r"""
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from ns_plugins.kernels import loss_triton as T

target = GPUTarget("cuda", 90, 32)
strides = dict.fromkeys(["sxb", "sxd", "swv", "swd", "ssb", "ssk"], "i64")
dims = {"B": "i32", "D": "i32", "V": "i32"}
for elt, acc, nd in (("fp32", tl.float32, 1), ("bf16", tl.float32, 2), ("fp64", tl.float64, 1)):
    gw = "fp64" if elt == "fp64" else "fp32"
    blocks = {"K": 6, "KP": 8, "BLOCK_B": 4, "BLOCK_D": 128, "ND": nd, "ACC": acc}
    sig = {"x_ptr": f"*{elt}", "w_ptr": f"*{elt}", "s_ptr": "*i64", "loss_ptr": f"*{elt}"}
    sig.update(dims, **strides, **dict.fromkeys(blocks, "constexpr"))
    triton.compile(ASTSource(T._ns_fwd_kernel, sig, blocks), target=target)
    flags = {"HAS_GY": True, "HAS_SLOTS": True, "WRITE_LOSS": True}
    sig = {"gy_ptr": "*fp32", "x_ptr": f"*{elt}", "w_ptr": f"*{elt}", "s_ptr": "*i64",
           "slot_ptr": "*i64", "gx_ptr": f"*{elt}", "gw_ptr": f"*{gw}", "loss_ptr": f"*{elt}"}
    sig.update(dims, sgy="i64", **strides, slb="i64", slk="i64")
    sig.update(dict.fromkeys({**blocks, **flags}, "constexpr"))
    triton.compile(ASTSource(T._ns_bwd_kernel, sig, {**blocks, **flags}), target=target)
sig = {"prob_ptr": "*fp64", "alias_ptr": "*i64", "out_ptr": "*i64", "N": "i64", "V": "i32",
       "seed": "i64", "offset": "i64", "BLOCK": "constexpr"}
triton.compile(ASTSource(T._alias_kernel, sig, {"BLOCK": 1024}), target=target)
print("compiled")
"""


@pytest.mark.slow
def test_kernels_compile_for_the_gpu():
    from triton_compile import compile_in_subprocess

    compile_in_subprocess(COMPILE_SCRIPT)
