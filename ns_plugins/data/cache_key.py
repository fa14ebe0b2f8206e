"""The corpus cache's key: everything a corpus's encoded ids depend on, and its name.

A recipe is everything the encoded ids depend on; its directory is named by the source and the
first 20 hex digits of the sha256 of the recipe's JSON form (kept as ``recipe.json``), which holds
the cache's layout version and:

- the source: for a text corpus, every file (resolved path, size, modification time in ns and a
  content fingerprint: sha256 of the size, the first MiB and the last MiB, so a file rewritten with
  the same size and modification time is a new recipe, yet a multi-GB corpus costs two reads of
  1 MiB; a change confined to the middle of a file larger than 2 MiB that keeps its size and
  modification time goes unseen); for the synthetic corpus, its settings;
- ``min_count``, ``max_vocab_size``, ``max_final_vocab``, the tokenizer's name, a fixed vocabulary
  file's sha256, lowercasing and the sentence length.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ns_plugins.errors import UsageError

from .reader import Tokenizer, tokenizer_named
from .textfiles import CorpusNotFoundError, corpus_files

__all__ = ["FINGERPRINT_BYTES", "LAYOUT", "recipe_key", "recipe_of", "resolve_tokenizer"]

LAYOUT = "ns_plugins.corpus_cache/1"
FINGERPRINT_BYTES = 1 << 20  # hashed at each end of a source file


def resolve_tokenizer(
    tokenizer, lowercase: bool | None
) -> tuple[Tokenizer | None, bool, str | None]:
    """(the callable the reader takes, lowercase, its name in the recipe). A name (``words``,
    ``split``) sets lowercasing too unless ``lowercase`` is given; the name is ``None`` for a
    lambda or a local function, whose corpus is never reused."""
    tokenizer = getattr(tokenizer, "value", tokenizer)  # a config enum
    if tokenizer is None or isinstance(tokenizer, str):
        name = tokenizer or "words"
        try:
            fn, lower = tokenizer_named(name)
        except ValueError as err:
            raise UsageError(str(err)) from None
        return fn, lower if lowercase is None else bool(lowercase), name
    if not callable(tokenizer):
        raise TypeError(f"tokenizer must be a name or a callable str -> tokens, got {tokenizer!r}")
    lower = True if lowercase is None else bool(lowercase)
    qualname = getattr(tokenizer, "__qualname__", None)
    if qualname is None or "<lambda>" in qualname or "<locals>" in qualname:
        return tokenizer, lower, None
    return tokenizer, lower, f"{getattr(tokenizer, '__module__', '')}.{qualname}"


def _file_hash(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fingerprint(path, size: int) -> str:
    """sha256 of the size, the first and the last ``FINGERPRINT_BYTES`` of a file (all of it when
    it is no longer than both)."""
    h = hashlib.sha256(str(size).encode() + b"\0")
    with open(path, "rb") as f:
        if size <= 2 * FINGERPRINT_BYTES:
            h.update(f.read())
        else:
            h.update(f.read(FINGERPRINT_BYTES))
            f.seek(size - FINGERPRINT_BYTES)
            h.update(f.read(FINGERPRINT_BYTES))
    return h.hexdigest()


def _file_entry(f: Path) -> list:
    """[resolved path, size, mtime in ns, content fingerprint] of a source file."""
    try:
        st = f.stat()
        return [str(f.resolve()), st.st_size, st.st_mtime_ns, _fingerprint(f, st.st_size)]
    except FileNotFoundError:  # deleted since it was listed
        raise CorpusNotFoundError(f) from None
    except OSError as err:
        raise UsageError(f"cannot read corpus file {str(f)!r}: {err.strerror or err}") from None


def recipe_of(
    source: str,
    path,
    min_count: int,
    max_vocab_size: int | None,
    max_final_vocab: int | None,
    tokenizer_name: str | None,
    vocab_file,
    lowercase: bool,
    max_sentence_length: int,
    synthetic: dict | None,
) -> dict:
    recipe = {
        "layout": LAYOUT,
        "source": source,
        "min_count": int(min_count),
        "max_vocab_size": None if max_vocab_size is None else int(max_vocab_size),
        "max_final_vocab": None if max_final_vocab is None else int(max_final_vocab),
        "tokenizer": tokenizer_name,
        "vocab_file": None if vocab_file is None else _file_hash(vocab_file),
        "lowercase": bool(lowercase),
        "max_sentence_length": int(max_sentence_length),
    }
    if source == "text":
        recipe["files"] = [_file_entry(f) for f in corpus_files(path)]
    else:
        recipe["synthetic"] = synthetic
    return recipe


def recipe_key(recipe: dict) -> str:
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    return f"{recipe['source']}-{digest[:20]}"
