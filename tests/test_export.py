import gzip

import numpy as np
import pytest

from ns_plugins.embeddings import load_word2vec, save_word2vec


def _random_embeddings(seed, n=50, dim=7):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(n - 3)] + ["naïve", "日本", "x-y_z"]
    scale = 10.0 ** rng.integers(-6, 6)
    vectors = (rng.standard_normal((n, dim)) * scale).astype(np.float32)  # float32 in numpy 1 and 2
    return words, vectors


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_is_exact(tmp_path, binary, suffix):
    words, vectors = _random_embeddings(1)
    path = tmp_path / ("vectors.bin" if binary else "vectors.txt")
    path = path.with_name(path.name + suffix)
    save_word2vec(path, words, vectors, binary=binary)
    got_words, got = load_word2vec(path, binary=binary)
    assert got_words == words
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, vectors)


def test_format_detected_from_contents(tmp_path):
    words, vectors = _random_embeddings(2)
    for binary in (False, True):
        path = tmp_path / f"emb_{binary}.w2v"
        save_word2vec(path, words, vectors, binary=binary)
        got_words, got = load_word2vec(path)
        assert got_words == words
        np.testing.assert_array_equal(got, vectors)


def test_text_layout(tmp_path):
    path = save_word2vec(tmp_path / "v.txt", ["a", "b"], np.array([[1.0, -0.5], [0.25, 3.0]]))
    assert path.read_text() == "2 2\na 1 -0.5\nb 0.25 3\n"


def test_binary_layout(tmp_path):
    vec = np.array([[1.0, 2.0]], dtype=np.float32)
    path = save_word2vec(tmp_path / "v.bin", ["ab"], vec, binary=True)
    assert path.read_bytes() == b"1 2\nab " + vec.astype("<f4").tobytes() + b"\n"


@pytest.mark.parametrize("binary", [False, True])
def test_gensim_reads_ours_and_we_read_gensims(tmp_path, binary):
    gensim_kv = pytest.importorskip("gensim.models.keyedvectors")
    words, vectors = _random_embeddings(3)
    ours = save_word2vec(tmp_path / "ours", words, vectors, binary=binary)
    kv = gensim_kv.KeyedVectors.load_word2vec_format(ours, binary=binary)
    assert kv.index_to_key == words
    np.testing.assert_array_equal(kv.vectors, vectors)

    theirs = tmp_path / "theirs"
    kv.save_word2vec_format(theirs, binary=binary)
    got_words, got = load_word2vec(theirs)
    assert got_words == words
    np.testing.assert_array_equal(got, vectors)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no word2vec file"):
        load_word2vec(tmp_path / "nope.txt")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello world\n", "first line must be"),
        (b"", "first line must be"),
        (b"3 2\na 1 2\nb 3 4\n", "truncated"),
        (b"2 2\na 1 2\nb 3\n", "line 3 has 1 values"),
        (b"2 2\na 1 2\nb 3 x\n", "not a number"),
        (b"2 2\na 1 2\na 3 4\n", "duplicate word 'a'"),
    ],
)
def test_malformed_text(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_word2vec(path)


def test_truncated_binary(tmp_path):
    words, vectors = _random_embeddings(4)
    path = save_word2vec(tmp_path / "v.bin", words, vectors, binary=True)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match="truncated"):
        load_word2vec(path)


def test_gz_file_is_really_compressed(tmp_path):
    words, vectors = _random_embeddings(5)
    path = save_word2vec(tmp_path / "v.txt.gz", words, vectors)
    assert gzip.decompress(path.read_bytes()).startswith(b"50 7\n")


@pytest.mark.parametrize(
    "words, vectors, message",
    [
        (["a b"], np.zeros((1, 2)), "whitespace"),
        ([""], np.zeros((1, 2)), "empty"),
        (["a", "a"], np.zeros((2, 2)), "duplicate"),
        (["a"], np.zeros((2, 2)), "2 vectors"),
        (["a"], np.zeros(2), "2-D"),
        (["a"], np.array([[np.nan, 1.0]]), "NaN"),
    ],
)
def test_save_rejects_bad_input(tmp_path, words, vectors, message):
    with pytest.raises(ValueError, match=message):
        save_word2vec(tmp_path / "v.txt", words, vectors)
    assert not list(tmp_path.iterdir())
