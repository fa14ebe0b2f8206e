"""The CuPy kernels against the float64 reference (CUDA only, no torch involved).

The source is also compiled with NVRTC wherever cupy is installed, GPU or not, so a syntax or
type error in the CUDA code shows up before anyone runs it on a device.
"""

from __future__ import annotations

import numpy as np
import pytest

from ns_plugins.core import reference
from ns_plugins.core.alias import AliasSampler
from ns_plugins.kernels import cupy_ns


def _cuda_ready() -> bool:
    if cupy_ns.cp is None:
        return False
    try:
        return cupy_ns.cp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver or no device
        return False


cuda_only = pytest.mark.skipif(not _cuda_ready(), reason="needs cupy and a CUDA device")
DTYPES = [np.float32, np.float64, np.float16]
TOL = {np.float32: 1e-5, np.float64: 1e-12, np.float16: 2e-3}


def test_source_compiles_with_nvrtc():
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc")
    try:
        prog = nvrtc.createProgram(cupy_ns.SOURCE, "ns.cu", [], [])
    except Exception as e:  # noqa: BLE001 - cupy without the NVRTC library
        pytest.skip(f"NVRTC unavailable: {e}")
    names = [f"ns_{k}<{t}>" for k in ("forward", "backward") for t in cupy_ns._CTYPES.values()]
    for name in names:
        nvrtc.addNameExpression(prog, name)
    try:
        nvrtc.compileProgram(prog, ["-std=c++14", "-arch=compute_75"])
    except Exception as e:  # noqa: BLE001 - show the compiler log
        pytest.fail(f"{e}\n{nvrtc.getProgramLog(prog)}")
    ptx = nvrtc.getPTX(prog)
    for name in names:
        assert nvrtc.getLoweredName(prog, name) in str(ptx)
    assert "alias_sample" in str(ptx)


@pytest.fixture
def cp(monkeypatch):
    cupy = cupy_ns.cp

    def poisoned(shape, dtype):
        out = cupy.empty(shape, dtype=dtype)
        out.fill(np.nan if np.dtype(dtype).kind == "f" else 2**62)
        return out

    monkeypatch.setattr(cupy_ns, "_empty", poisoned)
    return cupy


def make_case(cp, rng, B, d, V, K, dtype):
    x = cp.asarray(rng.standard_normal((B, d)) * 0.5, dtype=dtype)
    W = cp.asarray(rng.standard_normal((V, d)) * 0.5, dtype=dtype)
    samples = rng.integers(0, V, (B, K))
    samples[rng.integers(B), 0] = -1
    samples[1] = samples[2]
    samples[3, 1] = samples[3, 0]
    return x, W, cp.asarray(samples)


def rel(out, ref):
    out = out.get().astype(np.float64)
    assert np.isfinite(out).all(), "kernel left unwritten (poisoned) or non-finite elements"
    return np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-300)


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.__name__)
@pytest.mark.parametrize("shape", [(64, 100, 500, 6), (37, 7, 5, 1), (20, 300, 30, 3)], ids=str)
@pytest.mark.parametrize("scalar_gy", [False, True])
def test_forward_backward_match_reference(cp, dtype, shape, scalar_gy):
    rng = np.random.default_rng()
    x, W, samples = make_case(cp, rng, *shape, dtype)
    B = shape[0]
    gy_np = np.full(B, 1.0) if scalar_gy else rng.standard_normal(B)
    gy = cp.asarray(1.0, dtype=dtype) if scalar_gy else cp.asarray(gy_np, dtype=dtype)
    xr, Wr, sr = x.get().astype(np.float64), W.get().astype(np.float64), samples.get()

    loss = cupy_ns.forward(x, W, samples)
    assert loss.dtype == dtype and loss.shape == (B,)
    assert rel(loss, reference.ns_loss_rows(xr, Wr, sr)) < TOL[dtype]

    gx, gW = cupy_ns.backward(gy, x, W, samples)
    gy_ref = gy.get().astype(np.float64) * np.ones(B)
    gx_ref, gW_ref = reference.ns_loss_grad(gy_ref, xr, Wr, sr)
    assert gx.dtype == dtype and gW.dtype == dtype
    assert rel(gx, gx_ref) < TOL[dtype] and rel(gW, gW_ref) < TOL[dtype]


@pytest.mark.gpu
@cuda_only
def test_hot_rows_and_bad_ids(cp):
    rng = np.random.default_rng()
    x, W, samples = make_case(cp, rng, 4096, 64, 1000, 6, np.float32)
    samples[:, 1:] %= 7  # thousands of atomics on the same few rows
    xr, Wr, sr = x.get().astype(np.float64), W.get().astype(np.float64), samples.get()
    gx, gW = cupy_ns.backward(cp.asarray(1.0, dtype=np.float32), x, W, samples)
    gx_ref, gW_ref = reference.ns_loss_grad(np.ones(4096), xr, Wr, sr)
    assert rel(gx, gx_ref) < 1e-5 and rel(gW, gW_ref) < 1e-5
    samples[5, 0], samples[5, 2] = 0, 1000
    with pytest.raises(ValueError, match="outside"):
        cupy_ns.forward(x, W, samples)
    with pytest.raises(TypeError, match="dtype of x"):
        cupy_ns.forward(x, W.astype(np.float64), samples)


@pytest.mark.gpu
@cuda_only
def test_alias_sampling_matches_distribution(cp):
    scipy_stats = pytest.importorskip("scipy.stats")
    counts = np.random.default_rng().zipf(1.5, 2000).astype(np.float64)
    sampler = AliasSampler.from_counts(counts, power=0.75)
    prob, alias = cupy_ns.alias_tables(sampler)
    n = 5_000_000
    ids = cupy_ns.sample(prob, alias, (n // 5, 5), seed=2024, offset=3)
    assert ids.shape == (n // 5, 5) and ids.dtype == np.int64
    freq = cp.bincount(ids.ravel(), minlength=len(counts)).get()
    assert freq.size == len(counts), "ids outside [0, V)"
    expected = sampler.probabilities() * n
    keep = expected >= 20
    f = np.append(freq[keep], freq[~keep].sum())
    e = np.append(expected[keep], expected[~keep].sum())
    _, p = scipy_stats.chisquare(f, e * f.sum() / e.sum())
    assert p > 1e-4, f"chi-square p = {p}"


@pytest.mark.gpu
@cuda_only
def test_alias_sampling_is_keyed_by_seed_and_offset(cp):
    prob, alias = cupy_ns.alias_tables(AliasSampler(np.arange(1.0, 51.0)))
    a = cupy_ns.sample(prob, alias, 5000, seed=9)
    assert (a == cupy_ns.sample(prob, alias, 5000, seed=9)).all()
    assert (a[1000:] == cupy_ns.sample(prob, alias, 4000, seed=9, offset=1000)).all()
    assert not (a == cupy_ns.sample(prob, alias, 5000, seed=10)).all()
