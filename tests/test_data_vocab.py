import numpy as np
import pytest

from ns_plugins.data import EncodedCorpus, Vocab, encode_corpus, read_sentences
from ns_plugins.data import reader as reader_mod


def _random_text(rng, n_lines=300, vocab=40):
    words = [f"w{i}" for i in range(vocab)]
    p = 1.0 / np.arange(1, vocab + 1)
    lines = []
    for _ in range(n_lines):
        n = int(rng.integers(0, 30))
        lines.append(" ".join(rng.choice(words, size=n, p=p / p.sum())))
    return "\n".join(lines) + "\n"


def test_build_counts_order_and_ties():
    sents = [["b", "a", "c"], ["a", "b", "d"], ["e", "c", "a"], ["b"]]
    v = Vocab.build(sents, min_count=2)
    assert v.words == ["a", "b", "c"]  # a:3, b:3 (tie broken by word), c:2
    assert v.counts.tolist() == [3, 3, 2] and v.counts.dtype == np.int64
    assert v.index == {"a": 0, "b": 1, "c": 2} and len(v) == 3 and "d" not in v
    assert v.raw_words == 10
    assert Vocab.build(sents, min_count=1, max_final_vocab=4).words == ["a", "b", "c", "d"]


def test_build_from_path_matches_sentences(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "c.txt"
    p.write_text(_random_text(rng))
    a = Vocab.build(p, min_count=3)
    b = Vocab.build(read_sentences(p), min_count=3)
    assert a == b
    assert a.raw_words == sum(len(s) for s in read_sentences(p))


def test_save_load_roundtrip(tmp_path):
    v = Vocab(["the", "zebra", "é"], [10, 3, 3])
    v.save(tmp_path / "v.tsv")
    assert (tmp_path / "v.tsv").read_text(encoding="utf-8") == "the\t10\nzebra\t3\né\t3\n"
    assert Vocab.load(tmp_path / "v.tsv") == v


def test_bad_vocab_input(tmp_path):
    with pytest.raises(ValueError, match="corpus is empty"):
        Vocab.build([[], []])
    with pytest.raises(ValueError, match="min_count=5.*'a'.*2 times"):
        Vocab.build([["a", "a", "b"]], min_count=5)
    with pytest.raises(TypeError, match="lists of tokens"):
        Vocab.build(["a b c"])
    with pytest.raises(ValueError, match="min_count"):
        Vocab.build([["a"]], min_count=0)
    (tmp_path / "bad.tsv").write_text("a\t1\nb 2\n")
    with pytest.raises(ValueError, match="bad.tsv:2"):
        Vocab.load(tmp_path / "bad.tsv")
    with pytest.raises(ValueError, match="duplicate"):
        Vocab(["a", "a"], [1, 1])
    with pytest.raises(ValueError, match="TSV"):
        Vocab(["a\tb"], [1]).save(tmp_path / "x.tsv")
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(ValueError, match="empty.txt' is empty"):
        Vocab.build(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        Vocab.build(tmp_path / "nope.txt")


@pytest.mark.parametrize("block_bytes", [64, 1 << 22])
def test_encode_matches_sentence_path(tmp_path, monkeypatch, block_bytes):
    rng = np.random.default_rng(1)
    text = _random_text(rng) + " ".join(f"w{i % 7}" for i in range(120))  # a long last line
    p = tmp_path / "c.txt"
    p.write_text(text)
    monkeypatch.setattr(reader_mod, "BLOCK_BYTES", block_bytes)
    vocab = Vocab.build(p, min_count=4)
    enc = encode_corpus(p, vocab, tmp_path / "enc", max_sentence_length=25)
    ref = EncodedCorpus.from_sentences(read_sentences(p, max_sentence_length=25), vocab)
    assert isinstance(enc.ids, np.memmap) and enc.ids.dtype == np.int32
    np.testing.assert_array_equal(np.asarray(enc.ids), ref.ids)
    np.testing.assert_array_equal(enc.offsets, ref.offsets)
    assert enc.raw_words == ref.raw_words == sum(len(s) for s in read_sentences(p))
    again = EncodedCorpus.open(tmp_path / "enc")
    np.testing.assert_array_equal(np.asarray(again.ids), ref.ids)
    assert again.vocab == vocab and again.n_sentences == ref.n_sentences


def test_encode_drops_unknown_and_empty_sentences(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("a b x\ny z\nb a a\n")
    vocab = Vocab(["a", "b"], [3, 2])
    enc = encode_corpus(p, vocab, tmp_path / "enc")
    assert np.asarray(enc.ids).tolist() == [0, 1, 1, 0, 0]
    assert enc.offsets.tolist() == [0, 2, 5]  # "y z" has no known word: no sentence
    assert enc.raw_words == 8 and enc.sentence(1).tolist() == [1, 0, 0]


def test_encode_counts_replaced_bytes(tmp_path):
    p = tmp_path / "c.txt"
    p.write_bytes(b"a b\xff a\n")
    enc = encode_corpus(p, Vocab(["a"], [2]), tmp_path / "enc")
    assert enc.replaced_bytes == 1 and np.asarray(enc.ids).tolist() == [0, 0]


def test_encode_errors(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("x y z\n")
    with pytest.raises(ValueError, match="no word of corpus"):
        encode_corpus(p, Vocab(["a"], [1]), tmp_path / "enc")
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        encode_corpus(tmp_path / "e.txt", Vocab(["a"], [1]), tmp_path / "enc")
    with pytest.raises(FileNotFoundError, match="meta.json"):
        EncodedCorpus.open(tmp_path / "nothing")
    with pytest.raises(ValueError, match="offsets"):
        EncodedCorpus(np.zeros(3, np.int32), [0, 2], Vocab(["a"], [3]))


def test_prepare_corpus_reuses_until_something_changes(tmp_path, monkeypatch):
    from ns_plugins.data import cache as encode_mod
    from ns_plugins.data import prepare_corpus

    p = tmp_path / "c.txt"
    p.write_text("a b a c\nb a\n")
    first = prepare_corpus(p, tmp_path / "enc", min_count=2)
    assert first.vocab.words == ["a", "b"] and np.asarray(first.ids).tolist() == [0, 1, 0, 1, 0]

    def fail(*args, **kwargs):
        raise AssertionError("encoded again")

    with monkeypatch.context() as m:
        m.setattr(encode_mod, "encode_corpus", fail)
        again = prepare_corpus(p, tmp_path / "enc", min_count=2)
        assert np.asarray(again.ids).tolist() == [0, 1, 0, 1, 0]
        with pytest.raises(AssertionError, match="encoded again"):
            prepare_corpus(p, tmp_path / "enc", min_count=1)
    p.write_text("c c d\n")
    assert prepare_corpus(p, tmp_path / "enc", min_count=2).vocab.words == ["c"]


def test_encoded_corpus_pickles_as_its_path(tmp_path):
    import pickle

    p = tmp_path / "c.txt"
    p.write_text("a b a c\nb a\n" * 200)
    enc = encode_corpus(p, Vocab.build(p, min_count=1), tmp_path / "enc")
    blob = pickle.dumps(enc)
    assert len(blob) < 1000  # the path, not 1,200 ids
    back = pickle.loads(blob)
    assert isinstance(back.ids, np.memmap)
    np.testing.assert_array_equal(np.asarray(back.ids), np.asarray(enc.ids))
    mem = EncodedCorpus.from_sentences([["a", "b"]], Vocab(["a", "b"], [1, 1]))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(mem)).ids, mem.ids)


# max_vocab_size = 3: after the 2nd sentence 4 words are held, those seen once (b, c, d) go and
# the threshold rises to 2; after the 4th, 4 again (a3 b2 e2 f1): b, e, f go (<= 2).
_PRUNED = [["a", "b", "c"], ["a", "d"], ["b", "b", "e"], ["a", "e", "f"], ["a", "a", "b"]]


def test_max_vocab_size_prunes_while_counting():
    full = Vocab.build(_PRUNED, min_count=1)
    assert dict(zip(full.words, full.counts.tolist())) == dict(a=5, b=4, e=2, c=1, d=1, f=1)
    capped = Vocab.build(_PRUNED, min_count=1, max_vocab_size=3)
    assert capped.words == ["a", "b"] and capped.counts.tolist() == [5, 1]
    assert capped.raw_words == 14  # every word read, pruned ones included
    assert Vocab.build(_PRUNED, min_count=1, max_vocab_size=6) == full  # never over the cap
    assert Vocab.build(_PRUNED, min_count=2, max_final_vocab=2).words == ["a", "b"]
    assert Vocab.build(_PRUNED, min_count=1, max_vocab_size=3, max_final_vocab=1).words == ["a"]


def test_max_vocab_size_prunes_per_block_of_a_file(tmp_path, monkeypatch):
    p = tmp_path / "c.txt"
    # one line per 10-byte block, so the file is pruned where the sentences above were
    p.write_text("".join(" ".join(s).ljust(9) + "\n" for s in _PRUNED))
    monkeypatch.setattr(reader_mod, "BLOCK_BYTES", 10)
    capped = Vocab.build(p, min_count=1, max_vocab_size=3)
    assert capped.words == ["a", "b"] and capped.counts.tolist() == [5, 1]
    assert capped.raw_words == 14
    assert Vocab.build(p, min_count=1) == Vocab.build(_PRUNED, min_count=1)
