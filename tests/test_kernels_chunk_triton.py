"""The Triton chunk kernel against the numba chunk kernel.

Both draw every random number from (seed, corpus position, slot), so with one program the Triton
kernel visits the words in the numba kernel's order with the same draws and must give the same
weights to float32 rounding. Without a CUDA device the kernel runs under TRITON_INTERPRET=1 (set by
conftest.py) on tiny corpora; the `gpu` tests run it compiled on a device.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from ns_plugins.core.alias import AliasSampler  # noqa: E402
from ns_plugins.kernels import chunk_numba as hw  # noqa: E402
from ns_plugins.kernels import chunk_triton as tc  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MODES = {"sg": {}, "cbow": {"cbow": True}, "shared": {"shared_negatives": True}}


def make_corpus(rng, V=12, d=10, n_sent=8, max_len=7, lead=3, subsample=True, min_len=0):
    """Sentences (some empty) starting ``lead`` words into ``ids``, one frequent word."""
    counts = rng.integers(1, 60, size=V).astype(np.float64)
    counts[0] = 400
    lengths = rng.integers(min_len, max_len + 1, size=n_sent)
    lengths[1] = 0
    offsets = (lead + np.concatenate([[0], np.cumsum(lengths)])).astype(np.int64)
    ids = rng.choice(V, size=offsets[-1] + 2, p=counts / counts.sum()).astype(np.int32)
    keep = np.minimum(1.0, np.sqrt(20.0 / counts)) if subsample else np.ones(V)
    W_in = ((rng.random((V, d)) - 0.5) * 0.5).astype(np.float32)
    W_out = ((rng.random((V, d)) - 0.5) * 0.5).astype(np.float32)
    return dict(
        ids=ids,
        offsets=offsets,
        W_in=W_in,
        W_out=W_out,
        keep=keep.astype(np.float32),
        sampler=AliasSampler.from_counts(counts, 0.75),
    )


def run_numba(c, window, negative, seed, **kw):
    W_in, W_out = c["W_in"].copy(), c["W_out"].copy()
    s = c["sampler"]
    stats = hw.train_chunk(c["ids"], c["offsets"], W_in, W_out, c["keep"], s.prob, s.alias,
                           window, negative, 0.1, 0.01, seed, workers=1, **kw)  # fmt: skip
    return stats, W_in, W_out


def run_triton(c, window, negative, seed, device=DEVICE, **kw):
    s = c["sampler"]
    keep, prob, alias = tc.device_tables(c["keep"], s, device)
    ids = torch.from_numpy(c["ids"]).to(device)
    offsets = torch.from_numpy(c["offsets"]).to(device)
    # copies: on the CPU .to(device) would share c's arrays and train them in place
    W_in = torch.from_numpy(c["W_in"].copy()).to(device)
    W_out = torch.from_numpy(c["W_out"].copy()).to(device)
    out = tc.train_chunk(ids, offsets, W_in, W_out, keep, prob, alias, window, negative,
                         0.1, 0.01, seed, **kw)  # fmt: skip
    assert out.dtype == torch.float64 and out.shape == (3,) and out.device == W_in.device
    return out.cpu().numpy(), W_in.cpu().numpy(), W_out.cpu().numpy()


def assert_same_run(c, window, negative, seed, mode_kw, tol=(1e-5, 2e-6), numba_kw=None, **kw):
    shrink = kw.pop("shrink_windows", True)
    rtol, atol = tol
    stats, N_in, N_out = run_numba(
        c, window, negative, seed, shrink_windows=shrink, **mode_kw, **(numba_kw or {})
    )
    out, T_in, T_out = run_triton(c, window, negative, seed, shrink_windows=shrink, **mode_kw, **kw)
    assert (out[1], out[2]) == (stats.n_pairs, stats.n_words)
    assert out[0] == pytest.approx(stats.loss_sum, rel=rtol)
    assert not np.array_equal(N_in, c["W_in"])  # something was trained
    np.testing.assert_allclose(T_in, N_in, rtol=rtol, atol=atol)
    np.testing.assert_allclose(T_out, N_out, rtol=rtol, atol=atol)
    return stats


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("subsample, shrink", [(True, True), (False, False)])
def test_one_program_matches_the_numba_kernel(rng, mode, subsample, shrink):
    # a short subsampled corpus trains nothing now and then (about 1 seed in 100): draw again
    # until the numba kernel trains a pair, so that the comparison below always means something
    while True:
        c = make_corpus(rng, subsample=subsample)
        seed = int(rng.integers(2**63))
        if run_numba(c, 3, 4, seed, shrink_windows=shrink, **MODES[mode])[0].n_pairs > 0:
            break
    stats = assert_same_run(c, 3, 4, seed, MODES[mode], shrink_windows=shrink, programs=1)
    n = int(c["offsets"][-1] - c["offsets"][0])
    assert (stats.n_words < n) == subsample


@pytest.mark.parametrize("mode", sorted(MODES))
def test_first_position_shifts_the_draws_as_in_the_numba_kernel(rng, mode):
    base = int(rng.integers(1, 2**20))
    while True:  # subsampled: draw again in the rare case that no pair trains
        c = make_corpus(rng, subsample=True, min_len=2)
        seed = int(rng.integers(2**63))
        if run_numba(c, 3, 4, seed, first_position=base, **MODES[mode])[0].n_pairs > 0:
            break
    assert_same_run(c, 3, 4, seed, MODES[mode], programs=1, first_position=base,
                    numba_kw={"first_position": base})  # fmt: skip


@pytest.mark.parametrize("mode, window, negative", [("sg", 1, 0), ("cbow", 1, 1), ("shared", 2, 0)])
def test_smallest_windows_and_no_negatives(rng, mode, window, negative):
    # 20 columns in a block of 32; no subsampling and sentences of 2 or more words, so that
    # some pair always trains (with subsampling a short random corpus could train nothing)
    c = make_corpus(rng, d=20, subsample=False, min_len=2)
    assert_same_run(c, window, negative, 5, MODES[mode], programs=1)


@pytest.mark.parametrize("mode", ["sg", "cbow"])
def test_spans_and_context_scans_cross_sentences(rng, monkeypatch, mode):
    """Spans of 5 positions start inside sentences and context scans of 4 positions need
    several blocks to find a wide window of kept words among many dropped ones."""
    monkeypatch.setattr(tc, "SPAN", 5)
    monkeypatch.setattr(tc, "_BLK", 4)
    c = make_corpus(rng, V=6, n_sent=5, min_len=10, max_len=16)  # one of them empty
    c["keep"][:] = 0.35
    seed = int(rng.integers(2**32))
    stats = assert_same_run(c, 5, 2, seed, MODES[mode], shrink_windows=False, programs=1)
    assert stats.n_pairs > 0


@pytest.mark.parametrize("mode", sorted(MODES))
def test_many_programs_train_every_word_once(rng, monkeypatch, mode):
    """Programs share the spans: the same words and pairs are trained as by the numba kernel,
    only in another order."""
    monkeypatch.setattr(tc, "SPAN", 3)
    c = make_corpus(rng)
    seed = int(rng.integers(2**32))
    stats, N_in, _ = run_numba(c, 3, 3, seed, **MODES[mode])
    out, T_in, T_out = run_triton(c, 3, 3, seed, programs=4, **MODES[mode])
    assert (out[1], out[2]) == (stats.n_pairs, stats.n_words)
    assert np.isfinite(T_in).all() and np.isfinite(T_out).all()
    # rows of words outside the chunk are untouched
    lo, hi = c["offsets"][0], c["offsets"][-1]
    unseen = np.setdiff1d(np.arange(len(c["W_in"])), c["ids"][lo:hi])
    np.testing.assert_array_equal(T_in[unseen], c["W_in"][unseen])
    np.testing.assert_allclose(T_in, N_in, atol=0.05)  # same updates, another order


def test_loss_can_be_skipped(rng):
    # no subsampling and sentences of 2 or more words: a pair always trains, so the loss is > 0
    c = make_corpus(rng, subsample=False, min_len=2)
    with_loss, A_in, A_out = run_triton(c, 2, 3, 11, programs=1)
    without, B_in, B_out = run_triton(c, 2, 3, 11, programs=1, compute_loss=False)
    assert with_loss[0] > 0 and without[0] == 0
    np.testing.assert_array_equal(with_loss[1:], without[1:])
    np.testing.assert_array_equal(A_in, B_in)
    np.testing.assert_array_equal(A_out, B_out)


def test_empty_chunk_trains_nothing(rng):
    c = make_corpus(rng)
    for offsets in ([5], [5, 5, 5]):
        c["offsets"] = np.array(offsets, dtype=np.int64)
        out, W_in, W_out = run_triton(c, 2, 3, 1, programs=2)
        np.testing.assert_array_equal(out, 0.0)
        np.testing.assert_array_equal(W_in, c["W_in"])
        np.testing.assert_array_equal(W_out, c["W_out"])


def test_device_tables_dtypes(rng):
    s = AliasSampler.from_counts(rng.integers(1, 9, size=7).astype(float), 0.75)
    keep, prob, alias = tc.device_tables(np.ones(7), s, "cpu")
    assert (keep.dtype, prob.dtype, alias.dtype) == (torch.float32, torch.float64, torch.int32)
    np.testing.assert_array_equal(alias.numpy(), s.alias)
    np.testing.assert_array_equal(prob.numpy(), s.prob)


def _args(V=6, d=4):
    s = AliasSampler.from_counts(np.arange(1, V + 1, dtype=float), 0.75)
    keep, prob, alias = tc.device_tables(np.ones(V), s, DEVICE)
    ids = torch.zeros(10, dtype=torch.int32, device=DEVICE)
    offsets = torch.tensor([0, 10], device=DEVICE)
    W = torch.zeros(V, d, device=DEVICE)
    return [ids, offsets, W, W.clone(), keep, prob, alias, 2, 3, 0.1, 0.01, 0]


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({0: lambda a: a.long()}, TypeError, "ids must have dtype int32"),
        ({1: lambda a: a.int()}, TypeError, "offsets must have dtype int64"),
        ({2: lambda a: a.double()}, TypeError, "W_in must have dtype float32"),
        ({3: lambda a: a[:3]}, ValueError, "W_out shape"),
        ({5: lambda a: a[:3]}, ValueError, "alias_prob has 3 entries"),
        ({2: lambda a: a.t()}, ValueError, "W_in must be contiguous"),
        ({1: lambda a: a[:0]}, ValueError, "offsets must hold at least one entry"),
        ({7: lambda a: 0}, ValueError, "window must be in"),
        ({8: lambda a: -1}, ValueError, "negative must be in"),
        ({9: lambda a: float("nan")}, ValueError, "alpha_start and alpha_end must be finite"),
        ({0: lambda a: a.numpy()}, TypeError, "ids must be a torch tensor"),
    ],
)
def test_bad_input_is_named(change, error, match):
    args = _args()
    for i, f in change.items():
        args[i] = f(args[i])
    with pytest.raises(error, match=match):
        tc.train_chunk(*args)


def test_cbow_with_shared_negatives_is_refused():
    with pytest.raises(ValueError, match="shared_negatives is a skip-gram option"):
        tc.train_chunk(*_args(), cbow=True, shared_negatives=True)


@pytest.mark.skipif(DEVICE != "cpu", reason="checks the refusal of CPU tensors without a device")
def test_cpu_tensors_are_refused_outside_the_interpreter(monkeypatch):
    monkeypatch.setattr(tc, "_INTERPRETED", False)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        tc.train_chunk(*_args())


# ----------------------------------------------------------------------------- on a device


@pytest.mark.gpu
@pytest.mark.parametrize("mode", sorted(MODES))
def test_cuda_one_program_matches_the_numba_kernel(mode):
    rng = np.random.default_rng(7)
    c = make_corpus(rng, V=50, d=100, n_sent=30, max_len=20)
    # the device's exp and summation order differ from the host's in the last bits
    assert_same_run(c, 5, 5, 3, MODES[mode], tol=(1e-4, 1e-5), programs=1)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", sorted(MODES))
def test_cuda_full_grid_step_without_host_sync(mode):
    """A 2M-word step on the whole device: the same words and pairs as numba, finite weights,
    and no host synchronisation inside the call."""
    rng = np.random.default_rng(1)
    V, d, n = 20_000, 100, 2_000_000
    counts = 1e7 / np.arange(1, V + 1)
    ids = rng.choice(V, size=n, p=counts / counts.sum()).astype(np.int32)
    offsets = np.arange(0, n + 1, 20, dtype=np.int64)
    f = counts / counts.sum()
    keep = np.minimum(1.0, (np.sqrt(f / 1e-3) + 1) * 1e-3 / f)
    s = AliasSampler.from_counts(counts, 0.75)
    W_in = ((rng.random((V, d)) - 0.5) / d).astype(np.float32)
    stats = hw.train_chunk(ids, offsets, W_in.copy(), np.zeros((V, d), np.float32),
                           keep.astype(np.float32), s.prob, s.alias, 5, 5, 0.025, 0.02, 9,
                           workers=os.cpu_count() or 2, **MODES[mode])  # fmt: skip
    dev = torch.device("cuda")
    tables = tc.device_tables(keep, s, dev)
    tensors = [torch.from_numpy(ids).to(dev), torch.from_numpy(offsets).to(dev)]
    tensors += [torch.from_numpy(W_in).to(dev), torch.zeros(V, d, device=dev), *tables]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = tc.train_chunk(*tensors, 5, 5, 0.025, 0.02, 9, **MODES[mode])
    finally:
        torch.cuda.set_sync_debug_mode(0)
    out = out.cpu().numpy()
    assert (out[1], out[2]) == (stats.n_pairs, stats.n_words)
    # thousands of programs race on the frequent rows: the mean loss, not the weights, compares
    assert out[0] / out[1] == pytest.approx(stats.loss_sum / stats.n_pairs, rel=0.1)
    assert torch.isfinite(tensors[2]).all() and torch.isfinite(tensors[3]).all()


# ----------------------------------------------------------------------------- GPU lowering

COMPILE_SCRIPT = r"""
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from ns_plugins.kernels import chunk_triton as T

target = GPUTarget("cuda", 90, 32)
sig = {"ids_ptr": "*i32", "off_ptr": "*i64", "win_ptr": "*fp32", "wout_ptr": "*fp32",
       "keep_ptr": "*fp32", "prob_ptr": "*fp64", "alias_ptr": "*i32", "part_ptr": "*fp64",
       "next_ptr": "*i32", "n_sent": "i32", "V": "i32", "D": "i32", "key_lo": "i64",
       "key_hi": "i64", "alpha_start": "fp32", "alpha_end": "fp32", "window": "i32",
       "negative": "i32"}
for mode in (0, 1, 2):
    consts = {"SHRINK": True, "MODE": mode, "LOSS": True, "SPAN": T.SPAN, "BLOCK_D": 128,
              "KP": 8, "WP": 8, "CP": 16, "BLK": T._BLK}
    s = {**sig, **dict.fromkeys(consts, "constexpr")}
    import triton
    triton.compile(ASTSource(T._chunk_kernel, s, consts), target=target)
print("compiled")
"""


@pytest.mark.slow
def test_chunk_kernel_compiles_for_the_gpu():
    from triton_compile import compile_in_subprocess

    compile_in_subprocess(COMPILE_SCRIPT)
