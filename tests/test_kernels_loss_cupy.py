"""The CuPy kernels against the float64 reference (CUDA only, no torch involved).

Every kernel test runs twice: on a CUDA device with cupy (marked ``gpu``), and on the host,
where the CUDA source is compiled with g++ under a small emulation (one std::thread per CUDA
thread, a barrier per warp for shuffles) and loss_cupy's own Python code drives it through a
numpy stand-in for cupy. So CI without a GPU still runs the kernels' indexing, reductions,
masks, float16 conversions and the launch code against the reference. The source is also
compiled with NVRTC wherever cupy is installed.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import types

import numpy as np
import pytest

from ns_plugins.core import reference
from ns_plugins.core.alias import AliasSampler
from ns_plugins.kernels import loss_cupy


def _cuda_ready() -> bool:
    if loss_cupy.cp is None:
        return False
    try:
        return loss_cupy.cp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver or no device
        return False


cuda_only = pytest.mark.skipif(not _cuda_ready(), reason="needs cupy and a CUDA device")
DTYPES = [np.float32, np.float64, np.float16]
TOL = {np.float32: 1e-5, np.float64: 1e-12, np.float16: 2e-3}


def test_source_compiles_with_nvrtc():
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc")
    try:
        prog = nvrtc.createProgram(loss_cupy.SOURCE, "ns.cu", [], [])
    except Exception as e:  # noqa: BLE001 - cupy without the NVRTC library
        pytest.skip(f"NVRTC unavailable: {e}")
    names = [f"ns_{k}<{t}>" for k in ("forward", "backward") for t in loss_cupy._CTYPES.values()]
    names.append("alias_sample")
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


@pytest.fixture(
    params=[
        pytest.param("cuda", marks=[pytest.mark.gpu, cuda_only]),
        pytest.param("host", marks=pytest.mark.slow),
    ]
)
def cp(request, monkeypatch):
    """The array module the kernels run on: real cupy, or numpy driving the emulated kernels."""
    if request.param == "host":
        module = host_cupy(request.getfixturevalue("emulated"))
        monkeypatch.setattr(loss_cupy, "cp", module)
        monkeypatch.setattr(loss_cupy, "_module", module.RawModule)
    else:
        module = loss_cupy.cp

    def poisoned(shape, dtype):
        out = module.empty(shape, dtype=dtype)
        out.fill(np.nan if np.dtype(dtype).kind == "f" else 2**62)
        return out

    monkeypatch.setattr(loss_cupy, "_empty", poisoned)
    return module


def make_case(cp, rng, B, d, V, K, dtype):
    x = cp.asarray(rng.standard_normal((B, d)) * 0.5, dtype=dtype)
    W = cp.asarray(rng.standard_normal((V, d)) * 0.5, dtype=dtype)
    samples = rng.integers(0, V, (B, K))
    samples[rng.integers(B), 0] = -1
    samples[1] = samples[2]
    if K > 1:
        samples[3, 1] = samples[3, 0]
    return x, W, cp.asarray(samples)


def host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def pooled_chisquare_p(freq, expected) -> float:
    """Chi-square p-value with the cells expecting fewer than 20 draws pooled into one."""
    scipy_stats = pytest.importorskip("scipy.stats")
    keep = expected >= 20
    f, e = freq[keep], expected[keep]
    if not keep.all():
        f, e = np.append(f, freq[~keep].sum()), np.append(e, expected[~keep].sum())
    return scipy_stats.chisquare(f, e * f.sum() / e.sum())[1]


def rel(out, ref):
    out = host(out).astype(np.float64)
    assert np.isfinite(out).all(), "kernel left unwritten (poisoned) or non-finite elements"
    return np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-300)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.__name__)
@pytest.mark.parametrize("shape", [(64, 100, 500, 6), (37, 7, 5, 1), (20, 300, 30, 3)], ids=str)
@pytest.mark.parametrize("scalar_gy", [False, True])
def test_forward_backward_match_reference(cp, dtype, shape, scalar_gy):
    rng = np.random.default_rng()
    x, W, samples = make_case(cp, rng, *shape, dtype)
    B = shape[0]
    gy_np = np.full(B, 1.0) if scalar_gy else rng.standard_normal(B)
    gy = cp.asarray(1.0, dtype=dtype) if scalar_gy else cp.asarray(gy_np, dtype=dtype)
    xr, Wr, sr = host(x).astype(np.float64), host(W).astype(np.float64), host(samples)

    loss = loss_cupy.forward(x, W, samples)
    assert loss.dtype == dtype and loss.shape == (B,)
    assert rel(loss, reference.ns_loss_rows(xr, Wr, sr)) < TOL[dtype]

    gx, gW = loss_cupy.backward(gy, x, W, samples)
    gy_ref = host(gy).astype(np.float64) * np.ones(B)
    gx_ref, gW_ref = reference.ns_loss_grad(gy_ref, xr, Wr, sr)
    assert gx.dtype == dtype and gW.dtype == dtype
    assert rel(gx, gx_ref) < TOL[dtype] and rel(gW, gW_ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: t.__name__)
def test_sparse_backward_matches_reference(cp, dtype):
    rng = np.random.default_rng()
    B, d, V, K = 50, 40, 300, 6
    x, W, samples = make_case(cp, rng, B, d, V, K, dtype)
    gy = cp.asarray(rng.standard_normal(B), dtype=dtype)
    sr = host(samples)
    gx_ref, gW_ref = reference.ns_loss_grad(
        host(gy).astype(np.float64), host(x).astype(np.float64), host(W).astype(np.float64), sr
    )
    gx, rows, gW_rows = loss_cupy.sparse_backward(gy, x, W, samples)
    np.testing.assert_array_equal(host(rows), np.unique(sr[sr[:, 0] >= 0]))
    dense = np.zeros((V, d))
    dense[host(rows)] = host(gW_rows)
    assert rel(gx, gx_ref) < TOL[dtype]
    assert np.linalg.norm(dense - gW_ref) / np.linalg.norm(gW_ref) < TOL[dtype]


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("sparse_grad", [False, True])
def test_torch_bridge_autograd(sparse_grad):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng()
    B, d, V, K = 64, 32, 500, 6
    x = torch.tensor(rng.standard_normal((B, d)), device="cuda", requires_grad=True)
    W = torch.tensor(rng.standard_normal((V, d)) * 0.3, device="cuda", requires_grad=True)
    samples = torch.tensor(rng.integers(0, V, (B, K)), device="cuda")
    samples[3, 0] = -1
    gy = torch.rand(B, device="cuda", dtype=torch.float64)
    (loss_cupy.ns_loss(x, W, samples, sparse_grad=sparse_grad) * gy).sum().backward()
    args = [t.detach().cpu().numpy() for t in (x, W, samples)]
    gx_ref, gW_ref = reference.ns_loss_grad(gy.cpu().numpy(), *args)
    gW = W.grad.to_dense() if sparse_grad else W.grad
    assert W.grad.is_sparse == sparse_grad
    np.testing.assert_allclose(x.grad.cpu().numpy(), gx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gW.cpu().numpy(), gW_ref, rtol=1e-10, atol=1e-12)


def test_hot_rows_and_bad_ids(cp):
    rng = np.random.default_rng()
    x, W, samples = make_case(cp, rng, 1024, 64, 1000, 6, np.float32)
    samples[:, 1:] %= 7  # thousands of atomics on the same few rows
    xr, Wr, sr = host(x).astype(np.float64), host(W).astype(np.float64), host(samples)
    gx, gW = loss_cupy.backward(cp.asarray(1.0, dtype=np.float32), x, W, samples)
    gx_ref, gW_ref = reference.ns_loss_grad(np.ones(1024), xr, Wr, sr)
    assert rel(gx, gx_ref) < 1e-5 and rel(gW, gW_ref) < 1e-5
    samples[5, 0], samples[5, 2] = 0, 1000
    with pytest.raises(ValueError, match="outside"):
        loss_cupy.forward(x, W, samples)
    with pytest.raises(TypeError, match="dtype of x"):
        loss_cupy.forward(x, W.astype(np.float64), samples)


def _tables(cp, sampler):
    """The sampler's table as ``AliasSampler.device_tables("cupy")`` makes it, on this test's cp
    (CuPy, or the host emulation)."""
    return cp.asarray(sampler.prob, dtype=cp.float64), cp.asarray(sampler.alias, dtype=cp.int64)


def test_alias_sampling_matches_distribution(cp):
    counts = np.random.default_rng().zipf(1.5, 500).astype(np.float64)
    sampler = AliasSampler.from_counts(counts, power=0.75)
    prob, alias = _tables(cp, sampler)
    n = 5_000_000 if cp.__name__ == "cupy" else 200_000
    ids = loss_cupy.sample(prob, alias, (n // 5, 5), seed=2024, offset=3)
    assert ids.shape == (n // 5, 5) and ids.dtype == np.int64
    freq = np.bincount(host(ids).ravel(), minlength=len(counts))
    assert freq.size == len(counts), "ids outside [0, V)"
    assert pooled_chisquare_p(freq, sampler.probabilities() * n) > 1e-4


def test_alias_sampling_is_keyed_by_seed_and_offset(cp):
    prob, alias = _tables(cp, AliasSampler(np.arange(1.0, 51.0)))
    a = loss_cupy.sample(prob, alias, 5000, seed=9)
    assert (a == loss_cupy.sample(prob, alias, 5000, seed=9)).all()
    assert (a[1000:] == loss_cupy.sample(prob, alias, 4000, seed=9, offset=1000)).all()
    assert not (a == loss_cupy.sample(prob, alias, 5000, seed=10)).all()


# ----------------------------------------------------------------------------- host emulation

EMULATION = r"""
#include <atomic>
#include <barrier>
#include <cmath>
#include <memory>
#include <thread>
#include <vector>
struct Dim { unsigned x; };
thread_local Dim threadIdx, blockIdx;
Dim blockDim, gridDim;
struct Warp { std::barrier<> bar{32}; double slot[32]; };
thread_local Warp* warp_;
thread_local unsigned char* smem_;
#define __global__
#define __device__
#define __forceinline__ inline
#define __align__(n)
template <typename A> A __shfl_xor_sync(unsigned, A v, int o) {
    unsigned lane = threadIdx.x & 31;
    warp_->slot[lane] = (double)v;
    warp_->bar.arrive_and_wait();
    A r = (A)warp_->slot[lane ^ o];
    warp_->bar.arrive_and_wait();
    return r;
}
inline void __syncwarp() { warp_->bar.arrive_and_wait(); }
template <typename A> void atomicAdd(A* p, A v) { std::atomic_ref<A>(*p).fetch_add(v); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline float h2f(unsigned short h) { _Float16 f; __builtin_memcpy(&f, &h, 2); return (float)f; }
inline unsigned short f2h(float v) {
    _Float16 f = (_Float16)v; unsigned short h; __builtin_memcpy(&h, &f, 2); return h;
}
using std::exp; using std::fabs; using std::fmax; using std::log1p;
template <typename F> void launch(unsigned grid, unsigned block, size_t shared, F f) {
    blockDim.x = block; gridDim.x = grid;
    for (unsigned b = 0; b < grid; ++b) {
        std::vector<std::unique_ptr<Warp>> warps;
        for (unsigned w = 0; w < block / 32; ++w) warps.emplace_back(new Warp);
        std::vector<unsigned char> smem(shared + 16);
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < block; ++t)
            threads.emplace_back([&, t] {
                threadIdx.x = t; blockIdx.x = b; warp_ = warps[t / 32].get();
                smem_ = smem.data(); f();
            });
        for (auto& th : threads) th.join();
    }
}
"""

DRIVER = r"""
extern "C" {
#define FWD(T, N) void N(const T* x, const T* W, const i64* s, T* loss, i64 B, i64 D, int K, \
    unsigned grid, unsigned block) { launch(grid, block, 0, [=] { \
    ns_forward<T>(x, W, s, loss, B, D, K); }); }
#define BWD(T, N) void N(const T* gy, i64 gs, const T* x, const T* W, const i64* s, \
    const i64* slots, T* gx, typename Acc<T>::type* gW, i64 B, i64 D, int K, unsigned grid, \
    unsigned block, unsigned long shared) { launch(grid, block, shared, [=] { \
    ns_backward<T>(gy, gs, x, W, s, slots, gx, gW, B, D, K); }); }
FWD(float, fwd_float32) FWD(double, fwd_float64) FWD(unsigned short, fwd_float16)
BWD(float, bwd_float32) BWD(double, bwd_float64) BWD(unsigned short, bwd_float16)
void sample(const double* prob, const i64* alias, i64* out, i64 n, u64 V, u64 seed, u64 offset,
            unsigned grid, unsigned block) {
    launch(grid, block, 0, [=] { alias_sample(prob, alias, out, n, V, seed, offset); });
}
}
"""


def _host_source() -> str:
    src = loss_cupy.SOURCE
    swaps = {
        'asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(*p));': "f = h2f(*p);",
        'asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));': "h = f2h(v);",
        "extern __shared__ __align__(16) unsigned char smem[];": "unsigned char* smem = smem_;",
    }
    for cuda, host in swaps.items():
        assert cuda in src, f"emulation out of date: {cuda!r} not in the source"
        src = src.replace(cuda, host)
    return EMULATION + src + DRIVER


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("needs g++ to emulate the CUDA kernels")
    tmp = tmp_path_factory.mktemp("cupy_emulation")
    probe = tmp / "probe.cpp"
    probe.write_text(EMULATION + "int main() { return (int)h2f(f2h(0.0f)); }\n")
    flags = ["-std=c++20", "-O1", "-pthread"]
    if subprocess.run([cxx, *flags, str(probe), "-o", str(tmp / "probe")]).returncode:
        pytest.skip("g++ lacks C++20 barriers, atomic_ref or _Float16")
    (tmp / "ns.cpp").write_text(_host_source())
    lib = tmp / "libns.so"
    proc = subprocess.run(
        [cxx, *flags, "-shared", "-fPIC", str(tmp / "ns.cpp"), "-o", str(lib)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return ctypes.CDLL(str(lib))


class _HostKernel:
    """A RawModule function: numpy arrays and scalars marshalled to the emulated kernel."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, grid, block, args, shared_mem=None):
        c_args = []
        for a in args:
            if isinstance(a, np.ndarray):
                c_args.append(ctypes.c_void_p(a.ctypes.data))
            elif isinstance(a, np.uint64):
                c_args.append(ctypes.c_uint64(int(a)))
            elif isinstance(a, np.int32):
                c_args.append(ctypes.c_int(int(a)))
            else:  # int64 scalars, and intp(0) for a null pointer
                c_args.append(ctypes.c_int64(int(a)))
        c_args += [ctypes.c_uint(grid[0]), ctypes.c_uint(block[0])]
        if shared_mem is not None:
            c_args.append(ctypes.c_ulong(shared_mem))
        self.fn(*c_args)


def host_cupy(lib) -> types.SimpleNamespace:
    """Enough of cupy's interface, on numpy, for loss_cupy to run the emulated kernels."""
    dtypes = {"float": "float32", "double": "float64", "unsigned short": "float16"}

    class Module:
        def get_function(self, name):
            if name == "alias_sample":
                return _HostKernel(lib.sample)
            kind, ctype = name[: name.index("<")], name[name.index("<") + 1 : -1]
            prefix = {"ns_forward": "fwd", "ns_backward": "bwd"}[kind]
            return _HostKernel(getattr(lib, f"{prefix}_{dtypes[ctype]}"))

    module = Module()
    return types.SimpleNamespace(
        __name__="numpy-host",
        ndarray=np.ndarray,
        asarray=np.asarray,
        ascontiguousarray=np.ascontiguousarray,
        empty=np.empty,
        zeros=np.zeros,
        where=np.where,
        unique=np.unique,
        int64=np.int64,
        float64=np.float64,
        RawModule=lambda: module,
    )
