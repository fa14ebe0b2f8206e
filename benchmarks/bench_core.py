"""Core benchmark: the negative-sampling loss and the alias sampler, side by side with Chainer 7.8.1
and naive torch autograd, in one run on this machine.

    python benchmarks/bench_core.py [--quick] [--repeat N]

Loss rows time forward + backward (median of N). The memory-traffic floor counts the bytes that
must move for a sparse step: read x and the (k+1) gathered rows, write gx, read-modify-write the
touched gradient rows, read the ids; divided by the copy bandwidth measured here in the same run.
``--cpu-time`` reports process CPU seconds instead of wall time: steadier on a shared machine, and
fair to single-threaded peers (divide by the thread count for an idle machine's wall time).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ns_plugins.core.alias import AliasSampler
from ns_plugins.core.ops import naive_loss, ns_loss, ns_loss_sparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import commit, median_time  # noqa: E402

os.environ.setdefault("SETUPTOOLS_USE_DISTUTILS", "stdlib")
SHAPES = [(10000, 100, 10000, 5), (4096, 300, 100000, 5), (65536, 128, 1000000, 5)]


CLOCK = time.perf_counter


def copy_bandwidth():
    src = torch.randn(64 * 2**20)  # 256 MiB
    dst = torch.empty_like(src)
    t = median_time(lambda: dst.copy_(src), 7)
    return 2 * src.numel() * 4 / t  # bytes read + written per second


def floor_bytes(B, d, k):
    K = k + 1
    return 4 * (B * d + B * K * d + B * d + 2 * B * K * d) + 8 * B * K


def counts_for(V, rng):
    return rng.zipf(1.5, V).astype(np.float64)


def bench_loss(B, d, V, k, repeat, chainer):
    rng = np.random.default_rng(0)
    counts = counts_for(V, rng)
    sampler = AliasSampler.from_counts(counts)
    x = torch.randn(B, d)
    W = torch.randn(V, d) * 0.1
    t = torch.from_numpy(rng.integers(0, V, B))
    gen = torch.Generator().manual_seed(0)

    def samples():
        s = sampler.sample_torch((B, k + 1), generator=gen)
        s[:, 0] = t
        return s

    res = {}
    xg, Wg = x.clone().requires_grad_(), W.clone().requires_grad_()

    def naive():
        xg.grad = Wg.grad = None
        naive_loss(xg, Wg, samples()).sum().backward()

    def fused_dense():
        xg.grad = Wg.grad = None
        ns_loss(xg, Wg, samples()).sum().backward()

    def fused_sparse():
        ns_loss_sparse(x, W, samples())

    res["naive torch"] = median_time(naive, repeat)
    res["ours (dense grad)"] = median_time(fused_dense, repeat)
    res["ours (sparse rows)"] = median_time(fused_sparse, repeat)
    if chainer is not None:
        F, cw = chainer
        xc = chainer_variable(x.numpy())
        Wc = chainer_variable(W.numpy())
        tc = t.numpy().astype(np.int32)
        walker = cw(sampler.probabilities())

        def ch():
            xc.cleargrad()
            Wc.cleargrad()
            F.negative_sampling(xc, tc, Wc, walker.sample, k).backward()

        res["chainer 7.8.1"] = median_time(ch, max(2, repeat // 2))
    return res


def chainer_variable(a):
    import chainer

    return chainer.Variable(a.copy())


def load_chainer():
    try:
        import chainer.functions as F
        from chainer.utils import WalkerAlias
    except Exception as e:  # noqa: BLE001
        print(f"chainer unavailable ({e}); its columns are left out")
        return None
    return F, WalkerAlias


def bench_alias(chainer, quick):
    V = 1_000_000
    rng = np.random.default_rng(0)
    counts = counts_for(V, rng)
    p = counts**0.75
    p /= p.sum()
    rows = []
    build = median_time(lambda: AliasSampler(p), 5)
    ch_build = None
    if chainer is not None:
        ch_build = median_time(lambda: chainer[1](p), 1 if quick else 2, warmup=0)
    rows.append(("alias build, V=1M", build, ch_build, "s"))
    s = AliasSampler(p)
    n = 10_000_000
    npr = np.random.default_rng(1)
    gen = torch.Generator().manual_seed(1)
    draw_np = median_time(lambda: s.sample(n, npr), 3)
    draw_t = median_time(lambda: s.sample_torch(n, generator=gen), 3)
    ch_draw = None
    if chainer is not None:
        walker = chainer[1](p)
        ch_draw = median_time(lambda: walker.sample((n,)), 3)
    rows.append(("10M draws, numpy", draw_np, ch_draw, "s"))
    rows.append(("10M draws, torch", draw_t, ch_draw, "s"))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="only the first two shapes")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--cpu-time", action="store_true", help="process CPU time, not wall time")
    args = ap.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    torch.manual_seed(0)
    chainer = load_chainer()
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"date {time.strftime('%Y-%m-%d')}; commit {commit()}"
    )
    bw = copy_bandwidth()
    print(
        f"clock: {'process CPU time' if args.cpu_time else 'wall time'}; "
        f"measured copy bandwidth: {bw / 1e9:.1f} GB/s (read + write)\n"
    )
    header = (
        f"{'(B, d, V, k)':<26}{'chainer ms':>11}{'naive ms':>10}{'dense ms':>10}"
        f"{'sparse ms':>10}{'floor ms':>10}{'xChainer':>9}{'xNaive':>8}{'sparse/floor':>13}"
    )
    print("loss forward + backward, median")
    print(header)
    for B, d, V, k in SHAPES[: 2 if args.quick else 3]:
        r = bench_loss(B, d, V, k, args.repeat, chainer)
        floor = floor_bytes(B, d, k) / bw
        ch = r.get("chainer 7.8.1")
        best = min(r["ours (dense grad)"], r["ours (sparse rows)"])
        print(
            f"{str((B, d, V, k)):<26}"
            f"{(ch * 1e3 if ch else float('nan')):>11.1f}{r['naive torch'] * 1e3:>10.1f}"
            f"{r['ours (dense grad)'] * 1e3:>10.1f}{r['ours (sparse rows)'] * 1e3:>10.1f}"
            f"{floor * 1e3:>10.2f}{(ch / best if ch else float('nan')):>9.1f}"
            f"{r['naive torch'] / best:>8.1f}{r['ours (sparse rows)'] / floor:>13.1f}"
        )
    print("\nalias sampler, median")
    print(f"{'':<22}{'ours':>10}{'chainer':>10}{'ratio':>8}")
    for name, ours, ch, unit in bench_alias(chainer, args.quick):
        ratio = f"{ch / ours:.1f}x" if ch else "-"
        chs = f"{ch:.3f}" if ch else "-"
        print(f"{name:<22}{ours:>9.3f}{unit}{chs:>9}{unit if ch else ' '}{ratio:>8}")


if __name__ == "__main__":
    main()
