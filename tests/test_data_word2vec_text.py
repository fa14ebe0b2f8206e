"""The text vectors file: the same bytes as gensim's save_word2vec_format, from the compiled kernel
and from the small-array path."""

import numpy as np
import pytest

from ns_plugins.embeddings import save_word2vec, word2vec_format
from ns_plugins.embeddings.word2vec_format import float32_text

TRICKY = [
    0.0, -0.0, 1e-8, -1e-8, 1e20, 1e16, 9.999999e15, 1e15, 1e-4, -1e-4, 1.0001e-4, 9.9999e-5,
    1e-45, -1e-45, 1.4e-45, 2.0**-126, 2.0**-127, 1.1754942e-38, 3.4028235e38, -3.4028235e38,
    0.1, 0.5, 1.0, -1.0, 2.0, 100.0, 65504.0, 123456789.0, 1076999936.0, 16777216.0, 16777218.0,
    1e9, 1e10, 99999.99, 0.3, 1.0 / 3.0, 2.0**-20, 2.0**30, 2.0**100, 1e-40,
]  # fmt: skip


def _numpy_text(values):
    return [str(v) for v in np.asarray(values, dtype=np.float32)]  # numpy 1's repr, gensim's text


# The reference is numpy 1's float32 text, which gensim 4.3.3 (numpy < 2 only) writes; numpy 2
# prints large and small values another way, so there the comparison has no reference.
numpy1_reference = pytest.mark.skipif(
    int(np.__version__.split(".")[0]) >= 2, reason="the reference text is numpy 1's (gensim's)"
)


def _powers_of_two_and_neighbours():
    p = np.ldexp(np.float32(1), np.arange(-149, 128)).astype(np.float32)
    up = np.nextafter(p, np.float32(np.inf))
    down = np.nextafter(p, np.float32(0))
    return np.concatenate([p, up, down, -p])


@numpy1_reference
def test_float_text_is_numpys_on_tricky_values():
    values = np.array(TRICKY + [np.nan, np.inf, -np.inf], dtype=np.float32)
    assert float32_text(values) == _numpy_text(values)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(_powers_of_two_and_neighbours(), id="powers-of-two"),
        pytest.param(
            np.random.default_rng(0)
            .integers(0, 2**32, 200_000, dtype=np.uint64)
            .astype(np.uint32)
            .view(np.float32),
            id="any-bits",
        ),
        pytest.param(
            (np.random.default_rng(1).standard_normal(200_000) * 0.1).astype(np.float32),
            id="normal",
        ),
        pytest.param(np.arange(-3000, 3000, dtype=np.float32) / np.float32(16), id="sixteenths"),
        pytest.param(
            np.arange(0x00000001, 0x00000001 + 50_000, dtype=np.uint32).view(np.float32),
            id="subnormals",
        ),
        pytest.param(  # every float32 from 0.5 on (a run of neighbours: all digit counts)
            np.arange(0x3F000000, 0x3F000000 + 100_000, dtype=np.uint32).view(np.float32),
            id="neighbours",
        ),
    ],
)
@numpy1_reference
def test_float_text_is_numpys(values):
    assert float32_text(values) == _numpy_text(values)


def test_float_text_of_empty():
    assert float32_text(np.zeros(0, dtype=np.float32)) == []


def _gensim_bytes(tmp_path, words, vectors):
    kv_mod = pytest.importorskip("gensim.models.keyedvectors")
    kv = kv_mod.KeyedVectors(vectors.shape[1])
    kv.add_vectors(words, vectors)
    path = tmp_path / "gensim.txt"
    kv.save_word2vec_format(str(path))
    return path.read_bytes()


@pytest.mark.parametrize("compiled, block", [(True, None), (True, 100), (False, None)])
def test_text_file_is_gensims(tmp_path, monkeypatch, compiled, block):
    if block:  # blocks of 2 rows: the writer thread and the alternating buffers
        monkeypatch.setattr(word2vec_format, "_BLOCK_VALUES", block)
    rng = np.random.default_rng(2)
    vectors = ((rng.random((300, 37)) - 0.5) / 37).astype(np.float32)
    finite = np.array(TRICKY, dtype=np.float32)
    vectors.reshape(-1)[: finite.size] = finite
    vectors[5:9] *= np.float32(1e-3)  # some rows below 1e-4: scientific
    vectors[9:12] *= np.float32(1e9)
    words = [f"w{i}" for i in range(vectors.shape[0] - 3)] + ["naïve", "日本", "x-y_z"]
    ours = save_word2vec(tmp_path / "ours.txt", words, vectors, compiled=compiled)
    assert ours.read_bytes() == _gensim_bytes(tmp_path, words, vectors)


def test_text_file_of_float64_input_is_gensims_of_the_float32_values(tmp_path):
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((20, 4))
    words = [f"w{i}" for i in range(20)]
    ours = save_word2vec(tmp_path / "ours.txt", words, vectors, compiled=True)
    assert ours.read_bytes() == _gensim_bytes(tmp_path, words, vectors.astype(np.float32))


def test_text_layout_as_gensim(tmp_path):
    path = save_word2vec(tmp_path / "v.txt", ["a", "b"], np.array([[1.0, -0.5], [0.25, 3.0]]))
    assert path.read_text() == "2 2\na 1.0 -0.5\nb 0.25 3.0\n"


@pytest.mark.parametrize("compiled", [True, False])
def test_a_full_disk_leaves_no_file(tmp_path, monkeypatch, compiled):
    import builtins
    import errno

    monkeypatch.setattr(word2vec_format, "_BLOCK_VALUES", 60)
    real_open = builtins.open

    class Full:
        def __init__(self, f):
            self.f, self.writes = f, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def full_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return Full(f) if str(path).endswith(".part") else f

    monkeypatch.setattr(word2vec_format, "open", full_open, raising=False)
    vectors = np.random.default_rng(4).standard_normal((40, 30)).astype(np.float32)
    with pytest.raises(OSError, match="No space left"):
        save_word2vec(tmp_path / "v.txt", [f"w{i}" for i in range(40)], vectors, compiled=compiled)
    assert not list(tmp_path.iterdir())


def test_numpy1_text_without_numpy1():
    """The small-array path's text under numpy 2 is numpy 1's (gensim's), as the kernel's is."""
    values = np.array(TRICKY + [np.nan, np.inf, -np.inf], dtype=np.float32)
    assert [word2vec_format._numpy1_text(v) for v in values] == float32_text(values)


@pytest.mark.parametrize("threads", [2, 4])
def test_threads_write_the_bytes_of_one_thread(tmp_path, monkeypatch, threads):
    """Blocks formatted on several threads and written in turn: the file of one thread (and of
    numpy's path). Blocks of 500 rows, the last one short, the kernel's chunks of 16384 values
    (442 rows) ending inside them: boundaries of both mid-file."""
    rng = np.random.default_rng(11)
    rows, dim = 1201, 37
    scale = 10.0 ** rng.integers(-7, 18, (rows, 1))  # plain and scientific, many digit counts
    vectors = (rng.standard_normal((rows, dim)) * scale).astype(np.float32)
    vectors[rng.random((rows, dim)) < 0.01] = 0.0
    words = [f"w{i}" + "é" * (i % 5) for i in range(rows)]
    monkeypatch.setattr(word2vec_format, "_BLOCK_VALUES", 500 * dim)
    files = {}
    for n in (1, threads):
        monkeypatch.setattr(word2vec_format, "usable_threads", lambda n=n: n)
        files[n] = save_word2vec(tmp_path / f"t{n}.txt", words, vectors, compiled=True).read_bytes()
    reference = save_word2vec(tmp_path / "numpy.txt", words, vectors, compiled=False).read_bytes()
    assert files[threads] == files[1] == reference
    assert files[1].count(b"\n") == rows + 1
