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
    assert path.read_text() == "2 2\na 1.0 -0.5\nb 0.25 3.0\n"  # gensim's text of float32


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


@pytest.mark.parametrize("binary", [False, True])
def test_limit_keeps_the_first_rows_and_refuses_a_negative_one(tmp_path, binary):
    from ns_plugins.embeddings import KeyedVectors

    words, vectors = _random_embeddings(6, n=5)
    path = save_word2vec(tmp_path / "v", words, vectors, binary=binary)
    for limit, n in ((None, 5), (0, 5), (2, 2), (9, 5)):  # as gensim: 0 and None mean all
        got_words, got = load_word2vec(path, binary=binary, limit=limit)
        assert got_words == words[:n]
        np.testing.assert_array_equal(got, vectors[:n])
        kv = KeyedVectors.load_word2vec_format(path, binary=binary, limit=limit)
        assert kv.index_to_key == words[:n]
    # gensim 4.3.3 fails here too, with numpy's "negative dimensions are not allowed"
    for limit in (-1, -5):
        with pytest.raises(ValueError, match=f"limit must be >= 0.*got {limit}"):
            KeyedVectors.load_word2vec_format(path, binary=binary, limit=limit)
        with pytest.raises(ValueError, match="limit must be >= 0"):
            load_word2vec(path, binary=binary, limit=limit)


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize(
    "count, dim, rows",
    [(10**12, 3, 2), (2, 10**11, 1), (10**15, 10**6, 0)],
)
def test_header_promising_more_than_the_file_holds(tmp_path, suffix, binary, count, dim, rows):
    """Nothing is allocated for rows the file does not hold: a lying header used to ask numpy
    for count x dim floats (terabytes) before the first row was read."""
    vec = np.arange(rows * min(dim, 3), dtype=np.float32).reshape(rows, min(dim, 3))
    body = b"".join(
        (f"w{i} " + " ".join(map(str, r.tolist())) + "\n").encode()
        if not binary
        else f"w{i} ".encode() + r.astype("<f4").tobytes() + b"\n"
        for i, r in enumerate(vec)
    )
    path = tmp_path / (("v.bin" if binary else "v.txt") + suffix)
    data = f"{count} {dim}\n".encode() + body
    path.write_bytes(gzip.compress(data) if suffix else data)
    with pytest.raises(ValueError) as info:
        load_word2vec(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    if rows and dim > 3 and not binary:  # the first line is too short for the header's dim
        assert f"line 2 has 3 values, header says {dim}" in message
    else:  # the file ends before the header's count (or before a record of dim floats)
        found = rows if dim == 3 else 0
        assert f"truncated: header says {count} vectors of {dim} dimensions" in message
        assert message.endswith(f"the file holds {found}")


@pytest.mark.parametrize("binary", [None, False, True])
@pytest.mark.parametrize(
    "header, message",
    [
        (b"3 two\n", "first line must be '<count> <dim>'"),
        (b"2.5 3\n", "first line must be '<count> <dim>'"),
        (b"3\n", "first line must be '<count> <dim>'"),
        (b"1 2 3\n", "first line must be '<count> <dim>'"),
        (b"2 0\n", "dimension 0"),
        (b"-1 3\n", "count -1"),
    ],
)
def test_bad_header(tmp_path, binary, header, message):
    path = tmp_path / "v.w2v"
    path.write_bytes(header + b"a 1 2 3\n")
    with pytest.raises(ValueError, match=message) as info:
        load_word2vec(path, binary=binary)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
