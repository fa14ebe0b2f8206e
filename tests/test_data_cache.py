"""The corpus cache: one encoding per recipe, crash-safe, shared by processes."""

import json
import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from ns_plugins.data import (
    EncodedCorpus,
    Vocab,
    open_cached_corpus,
    prepare_cached_corpus,
    prepare_corpus,
)
from ns_plugins.data import cache as cache_mod
from ns_plugins.data import cache_key as cache_key_mod
from ns_plugins.data import encode as encode_mod
from ns_plugins.data import reader as reader_mod
from ns_plugins.errors import UsageError

TEXT = "the cat sat on the mat\nthe dog sat on the log\nA cat, a dog.\n"


def _corpus(tmp_path, text=TEXT, name="c.txt"):
    p = tmp_path / name
    p.write_text(text)
    return p


def _leftovers(root):
    """Temporary files or directories under the cache root (none may survive a build)."""
    return sorted(p.name for p in root.iterdir() if p.name.endswith(".tmp"))


def _crash_after_first_block(exc):
    real = encode_mod.token_blocks

    def blocks(*args, **kwargs):
        for i, block in enumerate(real(*args, **kwargs)):
            if i == 1:
                raise exc
            yield block

    return blocks


def test_recipe_keys_reuse_and_rebuild(tmp_path, monkeypatch):
    p = _corpus(tmp_path)
    root = tmp_path / "cache"
    first = prepare_cached_corpus(root, "text", p, min_count=2)
    recipe = json.loads((first / "recipe.json").read_text())
    assert recipe["files"][0][0] == str(p.resolve()) and recipe["tokenizer"] == "words"
    corpus, truth = open_cached_corpus(first)
    assert truth is None and corpus.vocab.words == ["the", "a", "cat", "dog", "on", "sat"]
    assert open_cached_corpus(root)[0].path == first  # the cache root opens the latest

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again")

    with monkeypatch.context() as m:
        m.setattr(cache_mod, "encode_corpus", no_encoding)
        assert prepare_cached_corpus(root, "text", p, min_count=2) == first
        for changed in (
            dict(min_count=1),
            dict(max_vocab_size=3),
            dict(max_final_vocab=2),
            dict(tokenizer="split"),
        ):
            with pytest.raises(AssertionError, match="encoded again"):
                prepare_cached_corpus(root, "text", p, **{"min_count": 2, **changed})
    second = prepare_cached_corpus(root, "text", p, min_count=1, tokenizer="split")
    assert second != first and first.is_dir()  # recipes live side by side
    assert "dog." in open_cached_corpus(second)[0].vocab.words  # whitespace split keeps "."
    time.sleep(0.01)
    p.write_text(TEXT + "the end\n")  # size and mtime change
    third = prepare_cached_corpus(root, "text", p, min_count=2)
    assert third not in (first, second) and open_cached_corpus(third)[0].vocab.counts[0] == 5
    assert _leftovers(root) == []


def test_crash_while_encoding_leaves_a_cache_the_next_run_accepts(tmp_path, monkeypatch):
    p = _corpus(tmp_path, TEXT * 50)
    root = tmp_path / "cache"
    kept = prepare_cached_corpus(root, "text", p, min_count=1)  # another recipe, already there
    monkeypatch.setattr(reader_mod, "BLOCK_BYTES", 64)
    with monkeypatch.context() as m:
        m.setattr(encode_mod, "token_blocks", _crash_after_first_block(RuntimeError("crash")))
        with pytest.raises(RuntimeError, match="crash"):
            prepare_cached_corpus(root, "text", p, min_count=2)
    assert _leftovers(root) == []
    assert open_cached_corpus(kept)[0].n_tokens == 50 * 16  # untouched by the failed recipe
    again = prepare_cached_corpus(root, "text", p, min_count=51)  # mat, log: 50 each
    corpus, _ = open_cached_corpus(again)
    assert corpus.n_tokens == 50 * 14 and corpus.vocab.words[0] == "the"


def _die_while_encoding(root, path):
    """A process killed halfway through encoding (no exception handler runs)."""
    real = encode_mod.token_blocks

    def blocks(*args, **kwargs):
        for i, block in enumerate(real(*args, **kwargs, block_bytes=64)):
            if i == 2:
                os._exit(3)
            yield block

    encode_mod.token_blocks = blocks
    prepare_cached_corpus(root, "text", path, min_count=1)


def test_killed_process_leaves_nothing_that_is_used_or_refused(tmp_path):
    p = _corpus(tmp_path, TEXT * 50)
    root = tmp_path / "cache"
    proc = mp.get_context("spawn").Process(target=_die_while_encoding, args=(root, p))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 3
    assert len(_leftovers(root)) == 1  # the half-written temporary directory
    assert not any((d / "recipe.json").exists() for d in root.iterdir() if d.is_dir())
    corpus, _ = open_cached_corpus(prepare_cached_corpus(root, "text", p, min_count=1))
    assert corpus.n_tokens == 50 * 16
    assert _leftovers(root) == []  # removed under the recipe's lock


def test_directory_corpus(tmp_path):
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("one two two\n")
    (d / "sub" / "b.txt").write_text("two three\n")
    (d / ".hidden").write_text("never read\n")
    root = tmp_path / "cache"
    corpus, _ = open_cached_corpus(prepare_cached_corpus(root, "text", d, min_count=1))
    assert corpus.vocab.words == ["two", "one", "three"]
    assert [
        corpus.vocab.words[i] for i in np.asarray(corpus.ids)
    ] == "one two two two three".split()
    recipe = json.loads((corpus.path / "recipe.json").read_text())
    assert [os.path.basename(f[0]) for f in recipe["files"]] == ["a.txt", "b.txt"]
    time.sleep(0.01)
    (d / "sub" / "b.txt").write_text("two three three\n")  # a file inside changed
    again, _ = open_cached_corpus(prepare_cached_corpus(root, "text", d, min_count=1))
    assert again.path != corpus.path and again.vocab.counts.tolist() == [3, 2, 1]


def _prepare_slowly(root, path, log):
    real = cache_mod.encode_corpus

    def encode(*args, **kwargs):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(2.0)  # the other process arrives while this one encodes
        return real(*args, **kwargs)

    cache_mod.encode_corpus = encode
    directory = prepare_cached_corpus(root, "text", path, min_count=1)
    corpus, _ = open_cached_corpus(directory)
    with open(log, "a") as f:
        f.write(f"done {directory.name} {int(np.asarray(corpus.ids).sum())}\n")


def test_two_processes_share_one_cache(tmp_path):
    p = _corpus(tmp_path, TEXT * 20)
    root, log = tmp_path / "cache", tmp_path / "log"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_prepare_slowly, args=(root, p, log)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    lines = log.read_text().splitlines()
    encoders = [line for line in lines if not line.startswith("done")]
    done = {line for line in lines if line.startswith("done")}
    assert len(encoders) == 1 and len(done) == 1  # one encoded, the other waited and reused it


def test_fixed_vocabulary_file(tmp_path):
    p = _corpus(tmp_path)
    vocab_file = tmp_path / "vocab.tsv"
    Vocab(["sat", "cat", "zebra"], [9, 5, 1]).save(vocab_file)
    root = tmp_path / "cache"
    corpus = prepare_corpus(p, root, min_count=1, vocab_file=vocab_file)
    assert corpus.vocab.words == ["sat", "cat", "zebra"]  # the file's order and counts
    assert corpus.vocab.counts.tolist() == [9, 5, 1]
    assert [corpus.vocab.words[i] for i in np.asarray(corpus.ids)] == "cat sat sat cat".split()
    assert prepare_corpus(p, root, min_count=2, vocab_file=vocab_file).vocab.words == ["sat", "cat"]
    first = corpus.path
    Vocab(["sat", "cat"], [9, 5]).save(vocab_file)  # same corpus, another vocabulary file
    assert prepare_corpus(p, root, min_count=1, vocab_file=vocab_file).path != first
    (tmp_path / "bad.tsv").write_text("cat 3\n")
    with pytest.raises(UsageError, match=r"bad.tsv:1: expected 'word<TAB>count'"):
        prepare_corpus(p, root, vocab_file=tmp_path / "bad.tsv")


def test_synthetic_recipe_and_ground_truth(tmp_path):
    root = tmp_path / "cache"
    d = prepare_cached_corpus(root, "synthetic", min_count=1, synthetic_sentences=300)
    corpus, truth = open_cached_corpus(d)
    assert set(truth) == {"clusters", "analogies"} and corpus.n_sentences == 300
    assert json.loads((root / "ground_truth.json").read_text()) == truth
    assert not (d / "synthetic.txt").exists()
    other = prepare_cached_corpus(root, "synthetic", min_count=1, synthetic_sentences=200)
    assert other != d and open_cached_corpus(other)[0].n_sentences == 200


# ------------------------------------------------------------------------------- faults: one line
def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, UsageError), message
    return message


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz"])
@pytest.mark.parametrize("fault", ["corrupt", "truncated"])
def test_corrupt_or_truncated_compressed_corpus(tmp_path, suffix, fault):
    import bz2
    import gzip
    import lzma

    compress = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}[suffix]
    data = compress(("the quick brown fox jumps\n" * 5000).encode())
    if fault == "truncated":
        data = data[: len(data) // 2]
    else:
        data = data[:40] + bytes(b ^ 0x5A for b in data[40:200]) + data[200:]
    p = tmp_path / f"c.txt{suffix}"
    p.write_bytes(data)
    root = tmp_path / "cache"
    with pytest.raises(UsageError) as err:
        prepare_cached_corpus(root, "text", p, min_count=1)
    message = _one_line(err)
    assert f"cannot read corpus file {str(p)!r}" in message
    if fault == "truncated":
        assert "truncated" in message or "end-of-stream" in message
    assert _leftovers(root) == []


@pytest.mark.parametrize("text", ["", "   \n\t\n\n  ", "... --- !!!\n"])
def test_empty_or_whitespace_corpus(tmp_path, text):
    p = _corpus(tmp_path, text)
    with pytest.raises(UsageError) as err:
        prepare_cached_corpus(tmp_path / "cache", "text", p)
    assert f"corpus {str(p)!r} is empty" in _one_line(err)


def test_min_count_empties_the_vocabulary(tmp_path):
    p = _corpus(tmp_path)
    with pytest.raises(UsageError) as err:
        prepare_cached_corpus(tmp_path / "cache", "text", p, min_count=50)
    message = _one_line(err)
    assert str(p) in message and "min_count=50" in message and "'the', occurs 4 times" in message


def test_cache_path_is_a_file(tmp_path):
    p = _corpus(tmp_path)
    (tmp_path / "cache").write_text("not a directory")
    with pytest.raises(UsageError) as err:
        prepare_cached_corpus(tmp_path / "cache", "text", p)
    assert "is a file, not a directory" in _one_line(err) and "data.cache_dir" in str(err.value)


def test_unwritable_cache_directory(tmp_path, monkeypatch):
    p = _corpus(tmp_path)
    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: refuse the write the way the kernel would
        import errno

        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(root))

        monkeypatch.setattr(cache_mod.tempfile, "TemporaryFile", refuse)
    try:
        with pytest.raises(UsageError) as err:
            prepare_cached_corpus(root, "text", p)
    finally:
        root.chmod(0o700)
    message = _one_line(err)
    assert f"cannot write the corpus cache {str(root)!r}: Permission denied" in message


def test_full_disk_leaves_no_partial_files(tmp_path, monkeypatch):
    import errno

    p = _corpus(tmp_path, TEXT * 30)
    root = tmp_path / "cache"
    calls = []

    def full(*args, **kwargs):
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(encode_mod.np, "save", full)  # ids written, then the disk is full
    with pytest.raises(UsageError) as err:
        prepare_cached_corpus(root, "text", p, min_count=1)
    assert calls
    message = _one_line(err)
    assert f"encoding the corpus into {str(root)!r} failed: no space left on device" in message
    assert (
        _leftovers(root) == [] and not list(root.rglob("*.part")) and not list(root.rglob("ids*"))
    )
    monkeypatch.undo()
    assert open_cached_corpus(prepare_cached_corpus(root, "text", p, min_count=1))[0].n_tokens


def test_encode_corpus_removes_its_partial_ids_file(tmp_path, monkeypatch):
    import errno

    p = _corpus(tmp_path, TEXT * 30)
    monkeypatch.setattr(reader_mod, "BLOCK_BYTES", 64)
    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(encode_mod, "token_blocks", _crash_after_first_block(full))
    with pytest.raises(OSError):
        encode_mod.encode_corpus(p, Vocab(["the"], [1]), tmp_path / "enc")
    assert list((tmp_path / "enc").iterdir()) == []
    with pytest.raises(FileNotFoundError):
        EncodedCorpus.open(tmp_path / "enc")


# ------------------------------------------------------------ reliability: content, damage, source
def test_same_size_and_mtime_but_new_content_is_a_new_recipe(tmp_path):
    p = _corpus(tmp_path, TEXT)
    root = tmp_path / "cache"
    first = prepare_cached_corpus(root, "text", p, min_count=1)
    st = p.stat()
    p.write_text(TEXT.replace("cat", "cow"))  # same size
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same modification time
    assert p.stat().st_size == st.st_size and p.stat().st_mtime_ns == st.st_mtime_ns
    second = prepare_cached_corpus(root, "text", p, min_count=1)
    assert second != first
    words = open_cached_corpus(second)[0].vocab.words
    assert "cow" in words and "cat" not in words


def test_fingerprint_reads_both_ends_of_a_large_file(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_key_mod, "FINGERPRINT_BYTES", 1000)
    p = tmp_path / "big.txt"
    data = bytearray(b"word " * 1000)  # 5000 bytes: the first and last 1000 are hashed
    p.write_bytes(data)
    entry = cache_key_mod._file_entry(p)
    for at in (10, len(data) - 10):
        changed = bytearray(data)
        changed[at] = ord("x")
        p.write_bytes(changed)
        assert cache_key_mod._file_entry(p)[3] != entry[3]
    assert entry[:3] == [str(p.resolve()), 5000, entry[2]] and len(entry[3]) == 64


def _rewrite(path, data: bytes):
    """Overwrite a file in place (same inode), as a stray write or a disk fault would."""
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)


def _damage(directory, kind):
    ids = directory / "ids.int32"
    if kind == "ids out of range":
        values = np.fromfile(ids, dtype="<i4")
        values[len(values) // 2] = 10**6
        _rewrite(ids, values.tobytes())
    elif kind == "negative id":
        values = np.fromfile(ids, dtype="<i4")
        values[0] = -5
        _rewrite(ids, values.tobytes())
    elif kind == "ids truncated":
        _rewrite(ids, ids.read_bytes()[:-8])
    elif kind == "ids missing":
        ids.unlink()
    elif kind == "offsets truncated":
        offsets = directory / "offsets.npy"
        _rewrite(offsets, offsets.read_bytes()[:-16])
    elif kind == "offsets header cut":
        offsets = directory / "offsets.npy"
        _rewrite(offsets, offsets.read_bytes()[:20])
    elif kind == "vocabulary truncated":
        vocab = directory / "vocab.tsv"
        _rewrite(vocab, "".join(vocab.read_text().splitlines(True)[:2]).encode())
    elif kind == "recipe not JSON":
        _rewrite(directory / "recipe.json", b'{"layout": "ns_plugins.corpus')
    elif kind == "meta not JSON":
        _rewrite(directory / "meta.json", b"\x00\x01garbage")
    else:
        raise AssertionError(kind)


DAMAGE = [
    "ids out of range",
    "negative id",
    "ids truncated",
    "ids missing",
    "offsets truncated",
    "offsets header cut",
    "vocabulary truncated",
    "recipe not JSON",
    "meta not JSON",
]


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_recipe_is_rebuilt(tmp_path, monkeypatch, caplog, kind):
    p = _corpus(tmp_path, TEXT * 20)
    root = tmp_path / "cache"
    first = prepare_cached_corpus(root, "text", p, min_count=1)
    expected = np.asarray(open_cached_corpus(first)[0].ids).copy()
    _damage(first, kind)
    monkeypatch.setattr(cache_mod, "_verified", {})  # a new run: nothing verified yet
    with pytest.raises(UsageError) as err:  # reading the cache alone: one line, no traceback
        open_cached_corpus(first)
    assert f"corpus cache {str(first)!r} is damaged" in _one_line(err)
    caplog.set_level("WARNING", logger=cache_mod.__name__)
    again = prepare_cached_corpus(root, "text", p, min_count=1)
    assert again == first  # the same recipe, encoded again
    warnings = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(warnings) == 1 and str(first) in warnings[0], warnings
    corpus, _ = open_cached_corpus(again)
    assert np.array_equal(np.asarray(corpus.ids), expected)
    assert _leftovers(root) == []
    caplog.clear()
    monkeypatch.setattr(cache_mod, "_verified", {})
    prepare_cached_corpus(root, "text", p, min_count=1)  # valid now: reused without a warning
    assert not [r for r in caplog.records if "is damaged" in r.getMessage()]


def test_damage_message_says_what_is_wrong(tmp_path, monkeypatch):
    p = _corpus(tmp_path, TEXT * 20)
    root = tmp_path / "cache"
    first = prepare_cached_corpus(root, "text", p, min_count=1)
    n_words = len(open_cached_corpus(first)[0].vocab)
    _damage(first, "ids out of range")
    monkeypatch.setattr(cache_mod, "_verified", {})
    with pytest.raises(UsageError, match=rf"ids from 0 to 1000000, outside .* {n_words} words"):
        open_cached_corpus(first)
    _damage(first, "ids truncated")
    with pytest.raises(UsageError, match=r"ids.int32 holds \d+ bytes, meta.json says \d+ ids"):
        open_cached_corpus(first)


def test_source_deleted_after_encoding(tmp_path):
    p = _corpus(tmp_path, TEXT * 20)
    root = tmp_path / "cache"
    first = prepare_cached_corpus(root, "text", p, min_count=1)
    p.unlink()
    corpus, _ = open_cached_corpus(first)  # complete and valid: the cache alone is enough
    assert corpus.n_tokens == 20 * 16
    assert open_cached_corpus(root)[0].path == first
    with pytest.raises(FileNotFoundError) as err:  # the recipe's key needs the source
        prepare_cached_corpus(root, "text", p, min_count=1)
    assert _one_line(err) == f"corpus not found: {str(p)!r}"
    with pytest.raises(UsageError) as err:
        prepare_corpus(p, root, min_count=1)
    assert _one_line(err) == f"corpus not found: {str(p)!r}"


def test_source_deleted_while_encoding(tmp_path, monkeypatch):
    p = _corpus(tmp_path, TEXT * 20)
    root = tmp_path / "cache"
    real = cache_mod.encode_corpus

    def encode_after_deletion(path, *args, **kwargs):
        p.unlink()  # the vocabulary is counted, then the corpus goes
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cache_mod, "encode_corpus", encode_after_deletion)
    with pytest.raises(UsageError) as err:
        prepare_cached_corpus(root, "text", p, min_count=1)
    assert _one_line(err) == f"corpus not found: {str(p)!r}"
    assert _leftovers(root) == [] and not [d for d in root.iterdir() if d.is_dir()]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_interrupted_encoding_leaves_nothing_and_releases_the_lock(tmp_path, monkeypatch, exc):
    from filelock import FileLock

    p = _corpus(tmp_path, TEXT * 50)
    root = tmp_path / "cache"
    monkeypatch.setattr(reader_mod, "BLOCK_BYTES", 64)
    with monkeypatch.context() as m:
        m.setattr(encode_mod, "token_blocks", _crash_after_first_block(exc()))
        with pytest.raises(exc):
            prepare_cached_corpus(root, "text", p, min_count=1)
    assert _leftovers(root) == []
    assert not [d for d in root.iterdir() if d.is_dir()]
    locks = list(root.glob(".*.lock"))
    assert len(locks) == 1
    lock = FileLock(str(locks[0]), timeout=0)  # another holder would make this fail at once
    lock.acquire()
    lock.release()
    corpus, _ = open_cached_corpus(prepare_cached_corpus(root, "text", p, min_count=1))
    assert corpus.n_tokens == 50 * 16


@pytest.mark.timeout(30)
def test_fifo_in_a_directory_corpus_is_refused(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "a.txt").write_text(TEXT)
    os.mkfifo(d / "b.fifo")
    root = tmp_path / "cache"
    with pytest.raises(UsageError) as err:
        prepare_cached_corpus(root, "text", d, min_count=1)
    assert f"{str(d / 'b.fifo')!r} is a FIFO (named pipe), not a regular file" in _one_line(err)
    assert not root.exists()  # refused while the recipe is worked out, before anything is written
