import bz2
import codecs
import gzip
import lzma
import os
import struct
import zlib

import numpy as np
import pytest

from ns_plugins.data import read_sentences, simple_tokenize
from ns_plugins.data import reader as reader_mod
from ns_plugins.errors import UsageError

TEXT = "The cat sat.\nOn the MAT, the cat's hat!\n\n  dogs   don't bark\n"
EXPECTED = [
    ["the", "cat", "sat"],
    ["on", "the", "mat", "the", "cat's", "hat"],
    ["dogs", "don't", "bark"],
]


def _dictzip(data: bytes) -> bytes:
    """A dictzip file: gzip with an FEXTRA 'RA' random-access field, as dictzip writes it."""
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = raw.compress(data) + raw.flush()
    ra = b"RA" + struct.pack("<H", 10) + struct.pack("<HHHH", 1, 58315, 1, len(body))
    header = b"\x1f\x8b\x08\x04" + b"\0\0\0\0" + b"\x02\x03" + struct.pack("<H", len(ra)) + ra
    trailer = struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)
    return header + body + trailer


@pytest.mark.parametrize("suffix", [".txt", ".gz", ".bz2", ".dz", ".xz"])
def test_formats(tmp_path, suffix):
    data = TEXT.encode()
    p = tmp_path / f"corpus{suffix}"
    writers = {
        ".txt": lambda b: b,
        ".gz": gzip.compress,
        ".bz2": bz2.compress,
        ".dz": _dictzip,
        ".xz": lzma.compress,
    }
    p.write_bytes(writers[suffix](data))
    assert list(read_sentences(p)) == EXPECTED


def test_reiterable_and_next(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text(TEXT)
    s = read_sentences(p)
    assert list(s) == list(s) == EXPECTED
    assert s.stats.lines == 4 and s.stats.words == 12
    assert next(s) == EXPECTED[0] and next(s) == EXPECTED[1]


def test_directory_sorted_and_hidden_skipped(tmp_path):
    (tmp_path / "b.txt").write_text("b1 b2\n")
    (tmp_path / "a.txt").write_text("a1")  # no final newline: still a line of its own
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt.gz").write_bytes(gzip.compress(b"c1\n"))
    (tmp_path / ".hidden").write_text("nope\n")
    assert list(read_sentences(tmp_path)) == [["a1"], ["b1", "b2"], ["c1"]]


def test_long_line_chunked_across_blocks(tmp_path, monkeypatch):
    words = [f"w{i}" for i in range(2500)]
    p = tmp_path / "text8"
    p.write_text(" " + " ".join(words))  # text8 style: one line, no newline
    monkeypatch.setattr(reader_mod, "BLOCK_BYTES", 100)  # many blocks, cut at spaces
    got = list(read_sentences(p, max_sentence_length=1000))
    assert [len(s) for s in got] == [1000, 1000, 500]
    assert sum(got, []) == words


def test_lowercase_and_custom_tokenizer(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("Hello, World!\nA-B c\n")
    assert list(read_sentences(p, lowercase=False)) == [["Hello", "World"], ["A", "B", "c"]]
    assert list(read_sentences(p, tokenizer=str.split)) == [["hello,", "world!"], ["a-b", "c"]]
    assert simple_tokenize("it's 2 o'clock_now") == ["it's", "2", "o'clock", "now"]
    with pytest.raises(TypeError, match="tokenizer"):
        list(read_sentences(p, tokenizer="split"))


def test_undecodable_bytes_replaced_and_counted(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"caf\xc3\xa9 ok\nbad\xff\xfe word\n")
    s = read_sentences(p)
    got = list(s)
    assert got[0] == ["café", "ok"]
    assert got[1][-1] == "word" and len(got) == 2
    assert s.stats.replaced_bytes == 2


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_sentences(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="contains no files"):
        read_sentences(tmp_path / "empty")
    with pytest.raises(ValueError, match="max_sentence_length"):
        read_sentences(tmp_path, max_sentence_length=0)
    broken = tmp_path / "broken.gz"
    full = gzip.compress(" ".join(f"w{i}" for i in range(5000)).encode())
    broken.write_bytes(full[: len(full) // 2])
    with pytest.raises(ValueError, match="broken.gz"):
        list(read_sentences(broken))


@pytest.mark.parametrize("punctuation", [False, True])
def test_default_tokenizer_is_simple_tokenize_per_line(tmp_path, punctuation):
    # plain ASCII blocks take a faster path than text with punctuation; both must agree
    rng = np.random.default_rng(0)
    alphabet = list("abcXYZ019") + [" ", " ", "\t", "\r", "\x0b", "\x0c", "\n"]
    if punctuation:
        alphabet += [",", "'", "é", "_"]
    text = "".join(rng.choice(alphabet, size=20000))
    p = tmp_path / "c.txt"
    p.write_bytes(text.encode())
    expected = [t for t in (simple_tokenize(line.lower()) for line in text.split("\n")) if t]
    assert list(read_sentences(p)) == expected


# ------------------------------------------------------------------ encodings and special files
def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, UsageError), message
    return message


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be", "utf-8"])
def test_byte_order_mark_decodes_the_file(tmp_path, monkeypatch, encoding):
    boms = {
        "utf-16-le": codecs.BOM_UTF16_LE,
        "utf-16-be": codecs.BOM_UTF16_BE,
        "utf-32-le": codecs.BOM_UTF32_LE,
        "utf-32-be": codecs.BOM_UTF32_BE,
        "utf-8": codecs.BOM_UTF8,
    }
    text = "Naïve café\n" + TEXT * 40  # several blocks, split inside characters
    p = tmp_path / "c.txt"
    p.write_bytes(boms[encoding] + text.encode(encoding))
    monkeypatch.setattr(reader_mod, "BLOCK_BYTES", 101)
    s = read_sentences(p, tokenizer=str.split, lowercase=False)
    expected = [line.split() for line in text.split("\n") if line.split()]
    assert list(s) == expected  # no BOM glued to the first word, no single letters
    assert s.stats.replaced_bytes == 0


@pytest.mark.parametrize(
    "encoding, name",
    [
        ("utf-16-le", "UTF-16LE"),
        ("utf-16-be", "UTF-16BE"),
        ("utf-32-le", "UTF-32LE"),
        ("utf-32-be", "UTF-32BE"),
    ],  # fmt: skip
)
def test_wide_text_without_byte_order_mark_is_refused(tmp_path, encoding, name):
    p = tmp_path / "wide.txt"
    p.write_bytes((TEXT * 20).encode(encoding))
    with pytest.raises(UsageError) as err:
        list(read_sentences(p))
    message = _one_line(err)
    assert f"corpus file {str(p)!r} is not UTF-8 text" in message
    assert "NUL" in message and f"{name} text without a byte-order mark" in message


@pytest.mark.parametrize(
    "data, likely",
    [
        ("中文的文本，一些词。\n".encode("gbk") * 30, "legacy encoding"),
        (gzip.compress(TEXT.encode() * 30), "gzip-compressed data: name it .gz"),
        (bytes(range(256)) * 20, "binary data"),
    ],
    ids=["gbk", "gzip", "binary"],
)
def test_text_that_is_mostly_not_utf8_is_refused(tmp_path, data, likely):
    p = tmp_path / "c.txt"
    p.write_bytes(data)
    with pytest.raises(UsageError) as err:
        list(read_sentences(p))
    message = _one_line(err)
    assert f"corpus file {str(p)!r} is not UTF-8 text" in message and likely in message


def test_occasional_bad_bytes_still_read(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes(("Naïve café au lait\n" + TEXT).encode("latin-1") * 50)  # 2 bad bytes a line
    s = read_sentences(p)
    assert len(list(s)) == 200 and s.stats.replaced_bytes == 100


@pytest.mark.timeout(30)
@pytest.mark.parametrize("where", ["file", "in a directory"])
def test_fifo_is_refused_before_it_is_opened(tmp_path, where):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(TEXT)
    fifo = corpus / "z.fifo"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: never
    path = fifo if where == "file" else corpus
    with pytest.raises(UsageError) as err:
        list(read_sentences(path))
    assert f"corpus file {str(fifo)!r} is a FIFO (named pipe), not a regular file" in _one_line(err)


def test_device_and_missing_paths(tmp_path):
    if os.path.exists("/dev/null"):
        with pytest.raises(UsageError, match="'/dev/null' is a character device"):
            read_sentences("/dev/null")
    with pytest.raises(FileNotFoundError) as err:  # also a UsageError: one line
        read_sentences(tmp_path / "missing.txt")
    assert _one_line(err) == f"corpus not found: {str(tmp_path / 'missing.txt')!r}"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text(TEXT)
    (tmp_path / "d" / "b.txt").symlink_to(tmp_path / "gone.txt")
    with pytest.raises(UsageError) as err:
        read_sentences(tmp_path / "d")
    assert "b.txt' is a broken symbolic link" in _one_line(err)
