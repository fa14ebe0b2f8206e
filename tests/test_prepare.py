"""Preparing a corpus on several processes: the same files for any number of workers, the parts
of a corpus, the compiled tokenizer against the reader's, progress in the log, failures."""

import filecmp
import gzip
import logging
import multiprocessing as mp
import os
import signal

import numpy as np
import pytest

from ns_plugins.data import EncodedCorpus, Vocab, encode_corpus, prepare_corpus, read_sentences
from ns_plugins.data import encode as encode_mod
from ns_plugins.data import parallel as parallel_mod
from ns_plugins.data import reader as reader_mod
from ns_plugins.data import split as split_mod
from ns_plugins.data.reader import token_blocks
from ns_plugins.data.split import split_corpus
from ns_plugins.data.textfiles import Piece
from ns_plugins.data.wordtable import SPLIT, WORDS, WordTable, merge_counts
from ns_plugins.errors import UsageError

FILES = ("ids.int32", "offsets.npy", "vocab.tsv", "meta.json")
WORDS_POOL = [f"w{i}" for i in range(300)] + [
    "Don't", "rock'n'roll", "a''b", "x'", "'y", "naïve", "Éclair", "日本", "A-B", "c.d", "e_f",
]  # fmt: skip


def _text(rng, n_lines, ascii_only=False, max_words=30):
    p = 1.0 / np.arange(1, len(WORDS_POOL) + 1)
    lines = []
    for _ in range(n_lines):
        words = rng.choice(WORDS_POOL, size=int(rng.integers(0, max_words)), p=p / p.sum())
        words = [w for w in words if w.isascii()] if ascii_only else list(words)
        seps = rng.choice([" ", "  ", " , ", "\t", " \r "], size=len(words))
        lines.append("".join(w + s for w, s in zip(words, seps)).rstrip(" "))
    return "\n".join(lines)


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    """A directory corpus: ASCII, mixed, no final newline, \\r\\n, gzip, a text8-like single
    line (cut inside, at spaces), an empty file; small blocks and short searches for cuts."""
    rng = np.random.default_rng(7)
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text(_text(rng, 1500, ascii_only=True) + "\n")
    (d / "b.txt").write_text(_text(rng, 800))
    (d / "c.txt").write_text(_text(rng, 600, ascii_only=True).replace("\n", "\r\n"))
    (d / "sub" / "d.txt.gz").write_bytes(gzip.compress((_text(rng, 700) + "\n").encode()))
    one_line = " ".join(rng.choice(WORDS_POOL[:300], size=6000))
    (d / "sub" / "e.txt").write_text(one_line)
    (d / "sub" / "f.txt").write_text("")
    monkeypatch.setattr(reader_mod, "BLOCK_BYTES", 2048)
    monkeypatch.setattr(split_mod, "SPLIT_SEARCH_BYTES", 512)
    return d


def _same_files(a, b):
    for name in FILES:
        assert filecmp.cmp(a / name, b / name, shallow=False), name


def _custom(line):
    return [t for t in line.replace("\r", " ").replace("\t", " ").split(",") if t.strip()]


@pytest.mark.parametrize(
    "tokenizer, lowercase",
    [(None, True), (None, False), (str.split, False), (str.split, True), (_custom, True)],
    ids=["words", "words-case", "split", "split-lower", "custom"],
)
def test_same_files_for_any_number_of_workers(tmp_path, corpus, tokenizer, lowercase):
    outs = []
    for workers in (1, 2, 3, 6):
        out = tmp_path / f"enc{workers}"
        encode_corpus(corpus, None, out, tokenizer, lowercase, 50, min_count=2, workers=workers)
        outs.append(out)
    for out in outs[1:]:
        _same_files(outs[0], out)
    assert len(split_corpus(corpus, 6)) >= 4  # the corpus really was read in parts
    enc = EncodedCorpus.open(outs[0], check=True)
    sentences = read_sentences(corpus, tokenizer, lowercase, max_sentence_length=50)
    ref = EncodedCorpus.from_sentences(sentences, enc.vocab)
    np.testing.assert_array_equal(np.asarray(enc.ids), ref.ids)
    np.testing.assert_array_equal(enc.offsets, ref.offsets)
    assert enc.vocab == Vocab.build(corpus, 2, None, tokenizer, lowercase)
    assert enc.raw_words == ref.raw_words


def test_fixed_vocabulary_same_files_for_any_number_of_workers(tmp_path, corpus):
    counted = encode_corpus(corpus, None, tmp_path / "counted", min_count=2, workers=1)
    words = counted.vocab.words[::3] + ["never", "ünï"]
    fixed = Vocab(words, [1] * len(words))
    outs = []
    for workers in (1, 4):
        out = tmp_path / f"fixed{workers}"
        encode_corpus(corpus, fixed, out, max_sentence_length=40, workers=workers)
        outs.append(out)
    _same_files(*outs)
    enc = EncodedCorpus.open(outs[0], check=True)
    ref = EncodedCorpus.from_sentences(read_sentences(corpus, max_sentence_length=40), fixed)
    np.testing.assert_array_equal(np.asarray(enc.ids), ref.ids)
    np.testing.assert_array_equal(enc.offsets, ref.offsets)
    assert enc.vocab == fixed


def test_max_vocab_size_is_counted_in_order_and_encoded_in_parts(tmp_path, corpus):
    first = prepare_corpus(corpus, tmp_path / "c1", min_count=1, max_vocab_size=50, workers=1)
    again = prepare_corpus(corpus, tmp_path / "c4", min_count=1, max_vocab_size=50, workers=4)
    _same_files(first.path, again.path)
    assert first.vocab == Vocab.build(corpus, 1, 50)  # gensim's pruning, as documented


def test_streamed_offsets_are_the_saved_ones(tmp_path, corpus, monkeypatch):
    saved = encode_corpus(corpus, None, tmp_path / "saved", min_count=2, workers=2)
    monkeypatch.setattr(encode_mod, "OFFSETS_IN_MEMORY", 10)
    streamed = encode_corpus(corpus, None, tmp_path / "streamed", min_count=2, workers=2)
    _same_files(saved.path, streamed.path)
    assert isinstance(streamed.offsets, np.memmap)


# ------------------------------------------------------------------------------- the parts
def _bytes_of(part):
    out = b""
    for piece in part:
        with open(piece.file, "rb") as f:
            f.seek(piece.start)
            out += f.read() if piece.end is None else f.read(piece.end - piece.start)
    return out


def test_parts_are_the_corpus_cut_at_line_ends(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    lines = [f"line {i} " + "x" * (i % 50) for i in range(3000)]
    (d / "a.txt").write_text("\n".join(lines) + "\n")
    (d / "b.txt.gz").write_bytes(gzip.compress(b"zipped words\n" * 500))
    (d / "c.txt").write_bytes(b"\xff\xfe" + "wide text\n".encode("utf-16-le") * 100)
    (d / "d.txt").write_text("\n".join(lines[:500]))
    whole = b"".join((d / n).read_bytes() for n in ("a.txt", "b.txt.gz", "c.txt", "d.txt"))
    for n in (1, 2, 3, 5, 9):
        parts = split_corpus(d, n)
        assert 1 <= len(parts) <= n and all(parts)
        assert b"".join(_bytes_of(p) for p in parts) == whole
        for part in parts[1:]:  # a part starts a file or a line
            first = part[0]
            if first.start:
                with open(first.file, "rb") as f:
                    f.seek(first.start - 1)
                    assert f.read(1) == b"\n"
        for part in parts:  # compressed and UTF-16 files are never cut
            for piece in part:
                if piece.file.endswith(("b.txt.gz", "c.txt")):
                    assert piece == Piece(piece.file)
    sizes = [len(_bytes_of(p)) for p in split_corpus(d / "a.txt", 4)]
    assert max(sizes) < 1.2 * min(sizes)  # about equal


def test_parts_read_as_the_whole(tmp_path, corpus):
    whole = [t for block in token_blocks(corpus) for t in block]
    for n in (2, 5):
        got = [t for part in split_corpus(corpus, n) for b in token_blocks(part) for t in b]
        assert got == whole


# ---------------------------------------------------------------------- the compiled tokenizer
ALPHABET = list("abcdefghijklmnopqrstuvwxyzAZ0189") + list(" \t\r\x0b\x0c\x1c\x1f'\"-_.,!\x00\x7f")


@pytest.mark.parametrize("seed", range(5))
def test_word_table_cuts_ascii_as_the_reader_does(seed):
    rng = np.random.default_rng(seed)
    lines = ["".join(rng.choice(ALPHABET, size=int(rng.integers(0, 60)))) for _ in range(300)]
    text = "\n".join(lines) + "\n"
    for mode, cut in ((WORDS, reader_mod.simple_tokenize), (SPLIT, str.split)):
        table = WordTable(mode)
        codes = table.encode(text.encode("ascii"))
        words = table.words()
        got = [[]]
        for code in codes.tolist():
            if code == -2:
                got.append([])
            else:
                got[-1].append(words[code])
        assert got[:-1] == [cut(line) for line in lines]
        counts = dict(zip(words, table.word_counts().tolist()))
        expected = {}
        for line in lines:
            for w in cut(line):
                expected[w] = expected.get(w, 0) + 1
        assert counts == expected


def test_word_table_grows_and_freezes():
    words = [f"word{i}" for i in range(20000)]
    table = WordTable(SPLIT)
    codes = table.encode((" ".join(words) + "\n" + " ".join(words[::-1])).encode())
    assert len(table) == 20000 and table.words() == words
    assert codes[:20000].tolist() == list(range(20000)) and codes[20000] == -2
    frozen, ids = WordTable.of_words(WORDS, ["b", "naïve", "a b", "a", ""])
    assert ids.tolist() == [0, 3] and frozen.words() == ["b", "a"]
    assert frozen.encode(b"a b c\n").tolist() == [1, 0, -1, -2] and len(frozen) == 2


def test_merge_counts_sums_words_met_by_the_table_and_by_python():
    a, b = WordTable(SPLIT), WordTable(SPLIT)
    a.encode(b"x y x\n")
    b.encode(b"y z\n")
    merged, maps = merge_counts([a.counted(["x", "é"], [2, 1]), b.counted(["é", "a b"], [4, 1])])
    words, counts = merged.words(), merged.all_counts().tolist()
    assert dict(zip(words, counts)) == {"x": 4, "y": 2, "z": 1, "é": 5, "a b": 1}
    assert [words[i] for i in maps[0]] == ["x", "y", "x", "é"]
    assert [words[i] for i in maps[1]] == ["y", "z", "é", "a b"]


# -------------------------------------------------------------------------- progress, failures
def test_progress_in_the_log(tmp_path, corpus, monkeypatch, caplog):
    monkeypatch.setattr(parallel_mod, "PROGRESS_SECONDS", 0.0)
    caplog.set_level(logging.INFO, logger="ns_plugins.data")
    for workers in (1, 3):
        caplog.clear()
        encode_corpus(corpus, None, tmp_path / f"e{workers}", min_count=1, workers=workers)
        lines = [r.getMessage() for r in caplog.records if "words/s" in r.getMessage()]
        assert lines, workers
        assert all(f"reading {corpus}" in m and "left" in m and "read (" in m for m in lines)


def test_a_bad_file_in_a_worker_is_one_line_and_leaves_nothing(tmp_path, corpus):
    (corpus / "sub" / "z.txt.gz").write_bytes(gzip.compress(b"fine words\n" * 2000)[:-30])
    root = tmp_path / "cache"
    with pytest.raises(UsageError) as err:
        prepare_corpus(corpus, root, min_count=1, workers=3)
    message = str(err.value)
    assert "\n" not in message and "z.txt.gz" in message
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp") or p.is_dir()]


def test_a_killed_worker_is_an_error_naming_it(tmp_path, corpus, monkeypatch):
    parent = os.getpid()
    real = encode_mod.token_blocks

    def blocks(*args, **kwargs):
        for i, block in enumerate(real(*args, **kwargs)):
            if i == 1 and os.getpid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)
            yield block

    monkeypatch.setattr(encode_mod, "token_blocks", blocks)
    root = tmp_path / "cache"
    with pytest.raises(RuntimeError, match=r"corpus worker \d of \d was killed by signal 9"):
        prepare_corpus(corpus, root, min_count=1, workers=3)
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp") or p.is_dir()]


def _prepare_in_daemon(corpus, root, queue):
    corpus = prepare_corpus(corpus, root, min_count=2, workers=3)
    queue.put(str(corpus.path))


def test_workers_inside_a_daemonic_process(tmp_path, corpus):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_prepare_in_daemon, args=(corpus, tmp_path / "d", queue), daemon=True)
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0
    ref = encode_corpus(corpus, None, tmp_path / "ref", min_count=2, workers=1)
    _same_files(ref.path, type(ref.path)(queue.get(timeout=5)))


@pytest.mark.parametrize("workers", [1, 3])
def test_same_words_and_counts_as_gensims_build_vocab(tmp_path, workers):
    word2vec = pytest.importorskip("gensim.models.word2vec")
    rng = np.random.default_rng(11)
    path = tmp_path / "c.txt"
    path.write_text(_text(rng, 4000) + "\n" + " ".join(["long"] * 25000) + "\n")
    model = word2vec.Word2Vec(vector_size=10, min_count=5, workers=1)
    model.build_vocab(word2vec.LineSentence(str(path)))
    theirs = {w: model.wv.get_vecattr(w, "count") for w in model.wv.index_to_key}
    ours = prepare_corpus(path, tmp_path / "cache", min_count=5, tokenizer="split", workers=workers)
    assert dict(zip(ours.vocab.words, ours.vocab.counts.tolist())) == theirs
    assert ours.raw_words == model.corpus_total_words


def test_progress_while_counting_with_max_vocab_size(tmp_path, corpus, monkeypatch, caplog):
    monkeypatch.setattr(parallel_mod, "PROGRESS_SECONDS", 0.0)
    caplog.set_level(logging.INFO, logger="ns_plugins.data")
    prepare_corpus(corpus, tmp_path / "cache", min_count=1, max_vocab_size=100, workers=2)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"counting {corpus}") and "words/s" in m for m in messages)
    assert any(m.startswith(f"reading {corpus}") and "words/s" in m for m in messages)
