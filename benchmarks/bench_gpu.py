"""GPU benchmark: the fused Triton op, the CuPy kernels, a Chainer-style kernel and naive torch
autograd, against the copy bandwidth measured on the same device in the same run; then the chunk
engine's Triton step (words/s) against the numba kernel on the same machine's CPU cores.

    python benchmarks/bench_gpu.py [--B 65536 --d 128 --V 1000000 --k 5] [--dtype float32]
                                   [--sweep] [--sweep-chunk] [--quick] [--dry-run]
                                   [--chunk-words N] [--skip-loss]

Bytes that must move (s = bytes per element of x/W, K = k + 1, R = unique ids in the batch):
    forward            B*d*s (x) + B*K*8 (ids) + B*K*d*s (gathered W rows) + B*s (loss)
    fwd+bwd, sparse    forward + B*d*s (gx) + R*d*s (gW rows) + R*8 (row ids)
    fwd+bwd, dense     forward + B*d*s (gx) + V*d*s (every gW row is written)
    alias draws        n*8 (ids out) + n*16 (one prob and one alias entry per draw)
The copy bandwidth is (bytes read + bytes written) / time of a 1 GiB device-to-device copy.
Times are medians of triton.testing.do_bench (L2 flushed between runs). Without a CUDA device the
script says so and exits 0; ``--dry-run`` instead runs every row on the CPU under the Triton
interpreter at a tiny size (wall-clock timings, meaningless) to check the script itself.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import commit  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEVICE = "cuda"


def median_ms(fn, quick: bool) -> float:
    if DEVICE != "cuda":
        fn()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e3
    from triton.testing import do_bench

    return do_bench(fn, warmup=10 if quick else 50, rep=50 if quick else 300, return_mode="median")


def copy_bandwidth(quick: bool) -> float:
    src = torch.empty(2**30 if DEVICE == "cuda" else 2**24, dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(src)
    return 2 * src.numel() / (median_ms(lambda: dst.copy_(src), quick) * 1e-3)


# ----------------------------------------------------------------------------- peers


def naive_step(x, W, samples):
    """What plain PyTorch does: gather a (B, K, d) copy, dot, softplus, autograd scatters into a
    dense V x d gradient."""
    W = W.detach().requires_grad_()
    x = x.detach().requires_grad_()
    w = W[samples]
    s = torch.einsum("bd,bkd->bk", x, w)
    sign = torch.ones(s.shape[1], device=s.device, dtype=s.dtype)
    sign[0] = -1
    F.softplus(s * sign).sum().backward()
    return x.grad, W.grad


CHAINER_STYLE = {}


def chainer_style_kernels():
    """Chainer 7's negative_sampling GPU code path: one thread per (row, sample) loops over d
    with strided reads, then a dense zeroed gW and one atomicAdd thread per (row, sample)."""
    import cupy as cp

    if not CHAINER_STYLE:
        CHAINER_STYLE["wx"] = cp.ElementwiseKernel(
            "raw T W, raw T x, S k, int32 c, int32 m",
            "T wx",
            """
            T f = 0;
            for (int j = 0; j < c; ++j) f += x[(i / m) * c + j] * W[k * c + j];
            wx = f;
            """,
            "ns_chainer_wx",
        )
        CHAINER_STYLE["y"] = cp.ElementwiseKernel(
            "T wx, int32 m",
            "T y",
            """
            T f = wx;
            if (i % m == 0) f = -f;
            y = f < 0 ? __logf(1 + __expf(f)) : f + __logf(1 + __expf(-f));
            """,
            "ns_chainer_forward",
        )
        CHAINER_STYLE["g"] = cp.ElementwiseKernel(
            "T wx, int32 m",
            "T g",
            "T y = (i % m == 0) ? 1 : -1; g = -y / (1.0f + __expf(wx * y));",
            "ns_chainer_g",
        )
        CHAINER_STYLE["gx"] = cp.ElementwiseKernel(
            "raw T g, raw T W, raw S k, int32 c, int32 m",
            "T gx",
            """
            int d = i / c;
            T w = 0;
            for (int j = 0; j < m; ++j) w += g[d * m + j] * W[k[d * m + j] * c + i % c];
            gx = w;
            """,
            "ns_chainer_gx",
        )
        CHAINER_STYLE["gw"] = cp.ElementwiseKernel(
            "T g, raw T x, S k, int32 c, int32 m",
            "raw T gW",
            "for (int j = 0; j < c; ++j) atomicAdd(&gW[k * c + j], g * x[(i / m) * c + j]);",
            "ns_chainer_gw",
        )
    return CHAINER_STYLE


def chainer_style_step(x, W, samples):
    import cupy as cp

    kern = chainer_style_kernels()
    B, d = x.shape
    m = samples.shape[1]
    wx = kern["wx"](W, x, samples, d, m)
    loss = kern["y"](wx, m).sum()
    g = kern["g"](wx, m)
    gx = kern["gx"](g, W, samples, d, m, cp.empty_like(x))
    gW = cp.zeros_like(W)
    kern["gw"](g, x, samples, d, m, gW)
    return loss, gx, gW


# ----------------------------------------------------------------------------- table


class Table:
    def __init__(self, copy_bw: float):
        self.copy_bw = copy_bw
        self.rows = []

    def add(self, name, ms, nbytes=None, base_ms=None, note=""):
        self.rows.append((name, ms, nbytes, base_ms, note))

    def print(self):
        head = f"{'row':52} {'median ms':>10} {'MB moved':>9} {'GB/s':>7} {'% copy':>7}"
        head += f" {'vs naive':>9}"
        print(head)
        print("-" * len(head))
        for name, ms, nbytes, base_ms, note in self.rows:
            if ms is None:
                print(
                    f"{name:52} {'failed' if note.startswith('FAILED') else 'skipped':>10}  {note}"
                )
                continue
            mb = gbs = frac = speed = ""
            if nbytes is not None:
                bw = nbytes / (ms * 1e-3)
                mb, gbs, frac = f"{nbytes / 1e6:.1f}", f"{bw / 1e9:.0f}", f"{bw / self.copy_bw:.0%}"
            if base_ms is not None:
                speed = f"{base_ms / ms:.2f}x"
            print(f"{name:52} {ms:10.3f} {mb:>9} {gbs:>7} {frac:>7} {speed:>9}  {note}")


def zipf_counts(V: int) -> np.ndarray:
    return 1e7 / np.arange(1, V + 1)  # word frequencies fall off as 1 / rank


def check(name, got, want, tol):
    err = (got.double() - want.double()).norm() / want.double().norm()
    if not err < tol:
        sys.exit(f"{name}: relative error {err:.2e} against naive torch, not benchmarking it")


def bench_loss(args, table):
    from ns_plugins.core.alias import AliasSampler
    from ns_plugins.kernels import loss_triton

    B, d, V, k = args.B, args.d, args.V, args.k
    K = k + 1
    dtype = DTYPES[args.dtype]
    s = torch.finfo(dtype).bits // 8
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    x = (torch.randn(B, d, device=DEVICE, generator=gen) * 0.1).to(dtype)
    W = (torch.randn(V, d, device=DEVICE, generator=gen) * 0.1).to(dtype)
    sampler = AliasSampler.from_counts(zipf_counts(V), power=0.75)
    prob, alias = sampler.device_tables(DEVICE)
    samples = loss_triton.sample(prob, alias, (B, K), seed=1)
    samples[:, 0] = torch.randint(0, V, (B,), device=DEVICE, generator=gen)
    R = torch.unique(samples).numel()

    fwd_bytes = B * d * s + B * K * 8 + B * K * d * s + B * s
    sparse_bytes = fwd_bytes + B * d * s + R * d * s + R * 8
    dense_bytes = fwd_bytes + B * d * s + V * d * s
    print(f"loss: B={B} d={d} V={V} k={k} {args.dtype}, unique ids in the batch R={R}\n")

    # Correctness against naive torch before timing anything.
    gx_n, gW_n = naive_step(x.float(), W.float(), samples)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    loss, gx, rows, gw_rows = loss_triton.forward_backward_sparse(x, W, samples)
    check("fused sparse gx", gx, gx_n, tol)
    check("fused sparse gW", gw_rows, gW_n[rows], tol)
    gx, gW = loss_triton.backward(torch.ones(B, device=DEVICE), x, W, samples)
    check("dense gW", gW, gW_n, tol)
    del gx_n, gW_n, gW

    naive = median_ms(lambda: naive_step(x, W, samples), args.quick)
    table.add("naive torch autograd fwd+bwd (dense gW)", naive, dense_bytes, naive)
    try:
        from ns_plugins.kernels import loss_torch

        t = median_ms(lambda: loss_torch.forward_backward_sparse(x, W, samples), args.quick)
        table.add("core torch ops fwd+bwd (sparse)", t, sparse_bytes, naive)
    except ImportError as e:
        table.add("core torch ops fwd+bwd (sparse)", None, note=str(e))

    try:
        from ns_plugins.core import ops

        def op_step(sparse_grad):
            xg, Wg = x.detach().requires_grad_(), W.detach().requires_grad_()
            ops.ns_loss(xg, Wg, samples, sparse_grad=sparse_grad).sum().backward()

        t = median_ms(lambda: op_step(False), args.quick)
        table.add("core op ns_loss + autograd (dense gW)", t, dense_bytes, naive)
        t = median_ms(lambda: op_step(True), args.quick)
        table.add("core op ns_loss + autograd (sparse gW)", t, sparse_bytes, naive)
    except ImportError as e:
        table.add("core op ns_loss + autograd", None, note=str(e))

    ones = torch.ones(B, device=DEVICE)
    t = median_ms(lambda: loss_triton.forward(x, W, samples, validate=False), args.quick)
    table.add("triton forward", t, fwd_bytes)
    t = median_ms(lambda: loss_triton.backward(ones, x, W, samples, validate=False), args.quick)
    table.add("triton backward (dense gW)", t)
    t = median_ms(
        lambda: (
            loss_triton.forward(x, W, samples, validate=False),
            loss_triton.backward(ones, x, W, samples, validate=False),
        ),
        args.quick,
    )
    table.add("triton fwd + bwd (dense gW, autograd path)", t, dense_bytes, naive)
    t = median_ms(
        lambda: (
            loss_triton.forward(x, W, samples, validate=False),
            loss_triton.sparse_backward(ones, x, W, samples, validate=False),
        ),
        args.quick,
    )
    table.add("triton fwd + sparse bwd (two passes)", t, sparse_bytes, naive)
    fused = median_ms(
        lambda: loss_triton.forward_backward_sparse(x, W, samples, validate=False), args.quick
    )
    table.add("triton fused fwd+bwd sparse (one pass)", fused, sparse_bytes, naive)
    t = median_ms(lambda: torch.unique(samples, sorted=True, return_inverse=True), args.quick)
    table.add("  of which torch.unique (row ids)", t, note="sort-based, syncs the host")
    t = median_ms(lambda: loss_triton.forward(x, W, samples, validate=True), args.quick)
    table.add("triton forward with id validation", t, fwd_bytes)

    if args.sweep:
        sweep(args, x, W, samples, sparse_bytes, table)

    try:
        import cupy as cp

        from ns_plugins.kernels import loss_cupy
    except ImportError as e:
        table.add("cupy fwd + bwd (dense gW)", None, note=f"no cupy: {e}")
        table.add("chainer-style kernel fwd + bwd", None, note="needs cupy")
        return
    if dtype == torch.bfloat16:
        table.add("cupy fwd + bwd (dense gW)", None, note="no bfloat16 in cupy")
        return
    xc, Wc, sc = cp.from_dlpack(x), cp.from_dlpack(W), cp.from_dlpack(samples)
    gyc = cp.asarray(1.0, dtype=xc.dtype)
    gx_c, gW_c = loss_cupy.backward(gyc, xc, Wc, sc)
    check("cupy gW", torch.from_dlpack(gW_c), naive_step(x.float(), W.float(), samples)[1], tol)
    t = median_ms(
        lambda: (
            loss_cupy.forward(xc, Wc, sc, validate=False),
            loss_cupy.backward(gyc, xc, Wc, sc, validate=False),
        ),
        args.quick,
    )
    table.add("cupy fwd + bwd (dense gW)", t, dense_bytes, naive)
    if dtype == torch.float32:
        t = median_ms(lambda: chainer_style_step(xc, Wc, sc), args.quick)
        table.add("chainer-style kernel fwd + bwd (dense gW)", t, dense_bytes, naive)
    else:
        table.add("chainer-style kernel fwd + bwd", None, note="float32 only")


def sweep(args, x, W, samples, sparse_bytes, table):
    """Time the fused kernel over block shapes; the default comes from loss_triton._blocks."""
    from ns_plugins.kernels import loss_triton

    default = loss_triton._blocks
    kp, block_d, nd, _, _ = default(args.d, args.k + 1)
    try:
        for block_b in (1, 2, 4, 8, 16):
            for warps in (2, 4, 8):
                loss_triton._blocks = lambda d, k1, b=block_b, w=warps: (kp, block_d, nd, b, w)
                t = median_ms(
                    lambda: loss_triton.forward_backward_sparse(x, W, samples, validate=False),
                    args.quick,
                )
                table.add(f"  sweep fused: BLOCK_B={block_b} num_warps={warps}", t, sparse_bytes)
    finally:
        loss_triton._blocks = default


def bench_sampling(args, table):
    from ns_plugins.core.alias import AliasSampler
    from ns_plugins.kernels import loss_triton

    n = 2**24 if DEVICE == "cuda" else 2**12
    sampler = AliasSampler.from_counts(zipf_counts(args.V), power=0.75)
    prob, alias = sampler.device_tables(DEVICE)
    draw_bytes = n * 24

    def rate(ms):
        return f"{n / (ms * 1e-3) / 1e9:.2f} G draws/s"

    t = median_ms(lambda: loss_triton.sample(prob, alias, n, seed=3), args.quick)
    table.add(f"alias draws, triton kernel (n={n}, V={args.V})", t, draw_bytes, note=rate(t))
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    t = median_ms(lambda: sampler.sample_torch(n, generator=gen, device=DEVICE), args.quick)
    table.add("alias draws, torch ops (AliasSampler.sample_torch)", t, draw_bytes, note=rate(t))
    weights = torch.as_tensor(sampler.probabilities(), device=DEVICE, dtype=torch.float32)
    t = median_ms(lambda: torch.multinomial(weights, n, replacement=True), args.quick)
    table.add("torch.multinomial (float32 weights)", t, note=rate(t))
    try:
        import cupy as cp

        from ns_plugins.kernels import loss_cupy
    except ImportError:
        table.add("alias draws, cupy kernel", None, note="no cupy")
        return
    pc, ac = cp.from_dlpack(prob), cp.from_dlpack(alias)
    t = median_ms(lambda: loss_cupy.sample(pc, ac, n, seed=3), args.quick)
    table.add("alias draws, cupy kernel", t, draw_bytes, note=rate(t))


def bench_chunk(args, table):
    """The chunk engine's step: words/s of the Triton kernel on one chunk, against the numba
    kernel on every CPU core of the same machine (the CPU path of the same engine)."""
    from ns_plugins.core.alias import AliasSampler

    V, d = (50_000, 100) if DEVICE == "cuda" else (500, 16)
    n = args.chunk_words if DEVICE == "cuda" else 100
    rng = np.random.default_rng(0)
    counts = zipf_counts(V)
    freq = counts / counts.sum()
    ids = rng.choice(V, size=n, p=freq).astype(np.int32)
    offsets = np.arange(0, n + 1, 25, dtype=np.int64)
    offsets[-1] = n
    keep = np.minimum(1.0, (np.sqrt(freq / 1e-3) + 1) * 1e-3 / freq)  # gensim's, sample=1e-3
    sampler = AliasSampler.from_counts(counts, power=0.75)
    workers = os.cpu_count() or 1
    print(f"chunk step: {n} words, V={V}, d={d}, window 5, negative 5, sample 1e-3\n")
    failed = []
    for name, kw in (("sg", {}), ("shared", {"shared_negatives": True}), ("cbow", {"cbow": True})):
        try:
            chunk_rows(args, table, name, kw, n, V, d, ids, offsets, keep, sampler, workers)
        except Exception as exc:  # noqa: BLE001 - one failing variant must not lose the table
            import traceback

            traceback.print_exc()
            table.add(f"chunk step {name}, triton", None, note=f"FAILED: {exc!r}"[:300])
            failed.append(name)
    if failed:
        raise RuntimeError(f"chunk step failed for {', '.join(failed)}")


def chunk_rows(args, table, name, kw, n, V, d, ids, offsets, keep, sampler, workers):
    from ns_plugins.kernels import chunk_numba, chunk_triton

    rng = np.random.default_rng(1)
    tables = chunk_triton.device_tables(keep, sampler, DEVICE)
    ids_d = torch.from_numpy(ids).to(DEVICE)
    off_d = torch.from_numpy(offsets).to(DEVICE)
    W0 = ((rng.random((V, d)) - 0.5) / d).astype(np.float32)
    W_in = torch.from_numpy(W0).to(DEVICE)
    W_out = torch.zeros(V, d, device=DEVICE)
    seeds = iter(range(10**9))

    def step(programs=None):
        return chunk_triton.train_chunk(ids_d, off_d, W_in, W_out, *tables, 5, 5, 0.025, 0.0001,
                                        next(seeds), programs=programs, **kw)  # fmt: skip

    out = step().cpu()
    if not (torch.isfinite(W_in).all() and torch.isfinite(W_out).all()):
        raise RuntimeError(f"chunk {name}: the weights are not finite after one step")
    ms = median_ms(step, args.quick)
    # the peer: the numba kernel on the host's cores, one timed run after a warm-up
    A_in, A_out = W0.copy(), np.zeros((V, d), np.float32)
    sub = offsets[offsets <= min(n, 2_000_000)]
    k32 = keep.astype(np.float32)
    chunk_numba.train_chunk(ids, sub[:3], A_in, A_out, k32, sampler.prob, sampler.alias, 5, 5,
                        0.025, 0.0001, 1, workers=workers, **kw)  # fmt: skip
    t = time.perf_counter()
    stats = chunk_numba.train_chunk(ids, sub, A_in, A_out, k32, sampler.prob, sampler.alias, 5, 5,
                                0.025, 0.0001, 1, workers=workers, **kw)  # fmt: skip
    cpu_rate = (sub[-1] - sub[0]) / (time.perf_counter() - t)
    rate = n / (ms * 1e-3)
    table.add(
        f"chunk step {name}, triton ({n / 1e6:.1f}M words)",
        ms,
        note=f"{rate / 1e6:.1f}M words/s, {out[1] / max(out[2], 1):.1f} pairs/word; "
        f"numba on {workers} CPU threads {cpu_rate / 1e6:.2f}M words/s "
        f"({rate / cpu_rate:.1f}x), {stats.n_pairs / max(stats.n_words, 1):.1f} pairs/word",
    )
    if args.sweep_chunk and DEVICE == "cuda":
        sms = torch.cuda.get_device_properties(0).multi_processor_count
        for per_sm in (4, 8, 16, 32, 64):
            t = median_ms(lambda p=sms * per_sm: step(programs=p), args.quick)
            table.add(
                f"  sweep chunk {name}: programs={sms * per_sm} ({per_sm}/SM)",
                t,
                note=f"{n / (t * 1e-3) / 1e6:.1f}M words/s",
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--B", type=int, default=65536)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--V", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--sweep", action="store_true", help="time block shapes of the fused op")
    parser.add_argument(
        "--sweep-chunk", action="store_true", help="time grid sizes of the chunk step"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--dry-run", action="store_true", help="tiny CPU run of every row")
    parser.add_argument("--chunk-words", type=int, default=4_000_000, help="words per chunk step")
    parser.add_argument("--skip-loss", action="store_true", help="only alias draws and chunk step")
    args = parser.parse_args()

    if args.dry_run:
        global DEVICE
        DEVICE = "cpu"
        os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton
        args.B, args.d, args.V, args.k = 64, 24, 1000, 5
    elif not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; this benchmark needs one. Nothing measured.")
        return 0
    try:
        import triton
    except ImportError:
        print("bench_gpu: triton is not installed; pip install '.[triton]' from the clone.")
        return 0

    print(
        f"machine: {torch.cuda.get_device_name() if DEVICE == 'cuda' else 'CPU dry run'} "
        f"({platform.node()}), "
        f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, "
        f"commit: {commit()}\ntorch {torch.__version__}, triton {triton.__version__}, "
        f"CUDA {torch.version.cuda}"
    )
    copy_bw = copy_bandwidth(args.quick)
    print(f"device-to-device copy: {copy_bw / 1e9:.0f} GB/s (read + write)\n")
    table = Table(copy_bw)
    parts = (
        [bench_sampling, bench_chunk]
        if args.skip_loss
        else [bench_loss, bench_sampling, bench_chunk]
    )
    failed = 0
    for part in parts:  # a failing part is reported in the table; the others still run
        try:
            part(args, table)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - check() exits on a wrong result
            import traceback

            traceback.print_exc()
            table.add(part.__name__, None, note=f"FAILED: {exc!r}"[:300])
            failed += 1
    table.print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
