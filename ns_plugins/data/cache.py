"""The corpus cache: a corpus encoded once per recipe, shared by runs and processes.

A recipe is everything the encoded ids depend on (``cache_key`` lists it); its directory is named
by the source and a hash of the recipe.

Each recipe has its own directory under the cache directory::

    CACHE/
      .text-1f2e....lock        one lock per recipe, across processes (filelock)
      text-1f2e.../             ids.int32, offsets.npy, vocab.tsv, meta.json,
                                ground_truth.json (synthetic corpora), recipe.json
      latest                    name of the recipe directory prepared last
      ground_truth.json         a copy of the latest one's (synthetic corpora)

A recipe directory is built in a temporary directory next to it, ``recipe.json`` written last,
and renamed into place: it is complete or absent, so a crash or a full disk while encoding leaves
nothing a later run would use or reject (the next run removes the leftover and builds again). Two
processes asking for the same recipe take its lock: one encodes, the other waits and reuses it.
Recipes never replace each other, so a run keeps the corpus it opened while others use the cache.
A recipe directory found damaged when it is reused (a file missing, truncated or overwritten, sizes
that disagree with ``meta.json``, an id outside the vocabulary, a ``recipe.json`` that is not the
recipe) is logged, removed under its lock and encoded again. Delete the cache directory to clear it.

A recipe is encoded by ``encode.encode_corpus``: one pass over the text on ``workers`` processes
(one per CPU by default), the vocabulary counted in the same pass, memory flat in the corpus's size
(it follows the vocabulary), progress logged at INFO every few seconds; the files are the same
for any number of workers, so the number is not part of the recipe. With ``max_vocab_size`` the
vocabulary is counted first by one reader (gensim's pruning depends on the order of the text),
then the text is encoded on the workers.

The source files are needed to compute the key, so ``prepare_cached_corpus`` refuses a corpus
path that no longer exists (one line) even when an earlier run encoded it; ``open_cached_corpus``
reads the cache only, so a complete, valid recipe directory is used even when its source is gone.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from ns_plugins.errors import UsageError

from .cache_key import recipe_key, recipe_of, resolve_tokenizer
from .encode import MIN_PART_BYTES, encode_corpus
from .encoded import EncodedCorpus
from .parallel import can_fork, usable_cpus
from .reader import MAX_SENTENCE_LENGTH, Tokenizer
from .split import split_corpus
from .textfiles import Piece
from .vocab import Vocab

__all__ = ["open_cached_corpus", "prepare_cached_corpus", "prepare_corpus", "prepare_corpus_shard"]

log = logging.getLogger(__name__)

RECIPE = "recipe.json"
LATEST = "latest"
TRUTH = "ground_truth.json"


def _cache_root(cache_dir) -> Path:
    root = Path(cache_dir)
    if root.exists() and not root.is_dir():
        raise UsageError(
            f"corpus cache {str(root)!r} is a file, not a directory: remove it or choose another "
            "directory (data.cache_dir)"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = tempfile.TemporaryFile(dir=root)
        probe.close()
    except OSError as err:
        raise UsageError(
            f"cannot write the corpus cache {str(root)!r}: {err.strerror or err}; choose a "
            "writable directory (data.cache_dir)"
        ) from None
    return root


def _lock(path: Path):
    from filelock import FileLock

    return FileLock(str(path))


# recipe directories verified by this process, with the signature of their files then: opening
# one again (setup after prepare_data) skips the pass over its ids
_verified: dict[str, tuple] = {}


def _signature(directory: Path) -> tuple:
    names = (RECIPE, "meta.json", "ids.int32", "offsets.npy", "vocab.tsv")
    return tuple(
        (st.st_ino, st.st_size, st.st_mtime_ns) for st in (os.stat(directory / n) for n in names)
    )


def _verify(directory: Path, recipe: dict | None = None) -> EncodedCorpus:
    """The corpus of a recipe directory, checked (see ``EncodedCorpus.open``), and its
    ``recipe.json`` equal to ``recipe`` when given; ``ValueError`` or ``OSError`` saying what is
    wrong otherwise."""
    try:
        found = json.loads((directory / RECIPE).read_text())
    except ValueError as err:
        raise ValueError(f"{RECIPE} is not valid JSON ({err})") from None
    if recipe is not None and found != recipe:
        raise ValueError(f"{RECIPE} holds another recipe")
    key = str(directory.resolve())
    signature = _signature(directory)
    corpus = EncodedCorpus.open(directory, check=_verified.get(key) != signature)
    _verified[key] = signature
    return corpus


def _reusable(directory: Path, recipe: dict) -> bool:
    """Whether ``directory`` holds this recipe's corpus, complete and valid; a damaged one is
    removed (the caller holds the recipe's lock)."""
    recipe_file = directory / RECIPE
    if not recipe_file.is_file():
        if directory.exists():  # no recipe: not finished (only a rename creates it, so foreign)
            log.warning("corpus cache %s has no %s; building it again", directory, RECIPE)
            shutil.rmtree(directory, ignore_errors=True)
        return False
    try:
        _verify(directory, recipe)
        return True
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("corpus cache %s is damaged (%s); building it again", directory, err)
        _verified.pop(str(directory.resolve()), None)
        shutil.rmtree(directory, ignore_errors=True)
        return False


def _write_text(path: Path, text: str) -> None:
    """Replace ``path`` atomically (no partial file is ever seen, none is left behind)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _build(
    out: Path,
    recipe: dict,
    path,
    tokenizer: Tokenizer | None,
    vocab_file,
    synthetic: dict | None,
    workers: int | None = None,
    shard: tuple | None = None,
) -> None:
    """Encode into a temporary directory beside ``out``, ``recipe.json`` last, then rename.
    ``shard``: (rank, world size, gather) of ``prepare_corpus_shard``."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        if synthetic is not None:
            from .synthetic import synthetic_corpus

            synth = synthetic_corpus(synthetic["seed"], n_sentences=synthetic["sentences"])
            path = synth.write(tmp / "synthetic.txt")
            truth = {"clusters": synth.clusters, "analogies": synth.analogies}
            (tmp / TRUTH).write_text(json.dumps(truth))
        mc, cap, final = recipe["min_count"], recipe["max_vocab_size"], recipe["max_final_vocab"]
        lowercase, max_len = recipe["lowercase"], recipe["max_sentence_length"]
        vocab = None  # counted while encoding
        if vocab_file is not None:
            fixed = Vocab.load(vocab_file)
            counts = Counter(dict(zip(fixed.words, fixed.counts.tolist())))
            vocab = Vocab.from_counter(counts, mc, final, source=vocab_file)
        elif cap is not None and shard is None:  # gensim's pruning follows the text: one reader
            vocab = Vocab.build(path, mc, cap, tokenizer, lowercase, max_final_vocab=final)
        elif cap is not None:  # rank 0 counts (reading it all), the others wait for its vocabulary
            vocab = _counted_on_rank_0(path, mc, cap, tokenizer, lowercase, final, shard)
        options = dict(min_count=mc, max_final_vocab=final, workers=workers)
        if shard is not None:
            rank, world, gather = shard
            parts = split_corpus(path, world)
            if len(parts) < world:
                raise UsageError(
                    f"corpus {os.fspath(path)!r} cannot be cut into {world} shards at line ends "
                    f"(only {len(parts)}); use fewer ranks or more files"
                )
            mine = split_corpus(parts[rank], _local_workers(parts[rank], workers))
            options.update(parts=mine, gather=gather, rank=rank)
            bytes_read = sum(_piece_bytes(p) for p in parts[rank])
            options["extra_meta"] = {"shard": rank, "shards": world, "shard_bytes": bytes_read}
        encode_corpus(path, vocab, tmp, tokenizer, lowercase, max_len, **options)
        if synthetic is not None:
            (tmp / "synthetic.txt").unlink()  # regenerated from its settings when needed
        (tmp / RECIPE).write_text(json.dumps(recipe, indent=1))  # last: the directory is complete
        os.replace(tmp, out)
    except UsageError:  # bad data, already one line (a corpus deleted meanwhile is one too)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        cause = "no space left on device" if err.errno == errno.ENOSPC else str(err)
        raise UsageError(f"encoding the corpus into {str(out.parent)!r} failed: {cause}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _piece_bytes(piece: Piece) -> int:
    end = os.stat(piece.file).st_size if piece.end is None else piece.end
    return end - piece.start


def _local_workers(part: list[Piece], workers: int | None) -> int:
    """Workers for one shard (``workers`` None: one per CPU, fewer for a small shard)."""
    if workers is not None:
        return max(1, int(workers))
    size = sum(_piece_bytes(p) for p in part)
    return min(usable_cpus(), max(1, size // MIN_PART_BYTES)) if can_fork() else 1


def _counted_on_rank_0(path, min_count, cap, tokenizer, lowercase, final, shard) -> Vocab:
    """``max_vocab_size`` across ranks: rank 0 counts the whole text in order (gensim's pruning),
    every rank gets its vocabulary."""
    rank, world, gather = shard
    mine = None
    if rank == 0:
        try:
            vocab = Vocab.build(path, min_count, cap, tokenizer, lowercase, max_final_vocab=final)
            mine = (vocab.words, vocab.counts, vocab.raw_words)
        except Exception as err:
            mine = f"{type(err).__name__}: {err}"
    got = gather(mine)[0]
    if isinstance(got, str):
        raise UsageError(f"counting the corpus on rank 0 failed: {got}")
    vocab = Vocab(got[0], got[1])
    vocab.raw_words = got[2]
    return vocab


def prepare_cached_corpus(
    cache_dir,
    source: str = "text",
    path=None,
    min_count: int = 5,
    max_vocab_size: int | None = None,
    max_final_vocab: int | None = None,
    tokenizer=None,
    vocab_file=None,
    lowercase: bool | None = None,
    max_sentence_length: int = MAX_SENTENCE_LENGTH,
    synthetic_seed: int = 0,
    synthetic_sentences: int = 40000,
    reuse: bool = True,
    *,
    workers: int | None = None,
) -> Path:
    """The directory of this recipe's encoded corpus under ``cache_dir``, encoding it first unless
    a run (this process or another) already did. ``source`` is ``text`` (``path``: a file or a
    directory of files, plain or compressed) or ``synthetic``. ``vocab_file`` (``word<TAB>count``
    lines, as a run's vocab.tsv) fixes the vocabulary instead of counting: its counts go through
    ``min_count`` and ``max_final_vocab``, and corpus words outside it are dropped.

    The recipe's key is computed from the source files, so they must exist: a missing corpus path
    raises ``CorpusNotFoundError`` (a ``UsageError``, one line) even when an earlier run encoded
    it. A recipe directory found damaged is removed and encoded again. ``workers``: processes that
    read the text (None: one per CPU, fewer for a small corpus); not part of the recipe, as the
    files are the same for any number."""
    source = getattr(source, "value", source)
    if source not in ("text", "synthetic"):
        raise UsageError(f"unknown corpus source {source!r}; valid: text, synthetic")
    if source == "text" and not path:
        raise UsageError("a text corpus needs a path (data.path=/path/to/corpus.txt(.gz))")
    if max_sentence_length < 1:
        raise ValueError(f"max_sentence_length must be >= 1, got {max_sentence_length}")
    tokenize, lowercase, tokenizer_name = resolve_tokenizer(tokenizer, lowercase)
    if vocab_file is not None and not Path(vocab_file).is_file():
        raise UsageError(f"vocabulary file not found: {os.fspath(vocab_file)!r}")
    synthetic = None
    if source == "synthetic":
        synthetic = {"seed": int(synthetic_seed), "sentences": int(synthetic_sentences)}
    recipe = recipe_of(
        source,
        path,
        min_count,
        max_vocab_size,
        max_final_vocab,
        tokenizer_name,
        vocab_file,
        lowercase,
        max_sentence_length,
        synthetic,
    )
    reuse = reuse and tokenizer_name is not None
    root = _cache_root(cache_dir)
    out = root / recipe_key(recipe)
    with _lock(root / f".{out.name}.lock"):
        for stale in root.glob(f".{out.name}.*.tmp"):  # left by a crash; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        if not (reuse and _reusable(out, recipe)):
            if out.exists():  # asked not to reuse: move the old one aside, then drop it
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=root))
                os.replace(out, old / "old")
                shutil.rmtree(old, ignore_errors=True)
            _build(out, recipe, path, tokenize, vocab_file, synthetic, workers)
            _verified[str(out.resolve())] = _signature(out)  # written here just now
    try:  # for readers that ask for the latest corpus of a cache
        _write_text(root / LATEST, out.name)
        if (out / TRUTH).is_file():
            _write_text(root / TRUTH, (out / TRUTH).read_text())
        else:
            (root / TRUTH).unlink(missing_ok=True)
    except OSError as err:
        raise UsageError(f"cannot write into the corpus cache {str(root)!r}: {err}") from None
    return out


def open_cached_corpus(directory) -> tuple[EncodedCorpus, dict | None]:
    """(corpus, ground truth or None) of a recipe directory, or of the latest one of a cache.

    Only the cache is read, never the corpus's source: a complete recipe directory that passes
    the checks (files present, sizes and shapes as recorded, every id within the vocabulary) is
    used even when its source files were deleted since it was encoded. A missing or damaged one
    raises a one-line ``UsageError`` (``prepare_cached_corpus`` encodes it again)."""
    d = Path(directory)
    if not (d / RECIPE).is_file() and (d / LATEST).is_file():
        d = d / (d / LATEST).read_text().strip()
    if not (d / RECIPE).is_file():
        raise UsageError(f"no encoded corpus in the corpus cache {str(d)!r}")
    try:
        corpus = _verify(d)
        truth = d / TRUTH
        return corpus, (json.loads(truth.read_text()) if truth.is_file() else None)
    except (OSError, ValueError, KeyError, TypeError) as err:
        _verified.pop(str(d.resolve()), None)
        raise UsageError(
            f"corpus cache {str(d)!r} is damaged ({err}); prepare it again (a training run "
            "does) or delete it"
        ) from None


def prepare_corpus(
    path,
    out_dir,
    min_count: int = 5,
    max_vocab_size: int | None = None,
    tokenizer=None,
    lowercase: bool | None = None,
    max_sentence_length: int = MAX_SENTENCE_LENGTH,
    reuse: bool = True,
    *,
    max_final_vocab: int | None = None,
    vocab_file=None,
    workers: int | None = None,
) -> EncodedCorpus:
    """Build the vocabulary and encode the text corpus ``path`` under the cache ``out_dir``, or
    open what an earlier call with the same recipe left there (see the module's docstring). A
    tokenizer is ``words`` (lowercased), ``split`` (case kept) or a module-level function
    (lowercased unless ``lowercase=False``); a lambda's corpus is never reused. ``workers``:
    processes that read the text (None: one per CPU, at most one per 32 MiB of text); the files
    are the same for any number."""
    directory = prepare_cached_corpus(
        out_dir,
        "text",
        path,
        min_count,
        max_vocab_size,
        max_final_vocab,
        tokenizer,
        vocab_file,
        lowercase,
        max_sentence_length,
        reuse=reuse,
        workers=workers,
    )
    return EncodedCorpus.open(directory)


def prepare_corpus_shard(
    path,
    cache_dir,
    rank: int,
    world_size: int,
    all_gather,
    min_count: int = 5,
    max_vocab_size: int | None = None,
    tokenizer=None,
    lowercase: bool | None = None,
    max_sentence_length: int = MAX_SENTENCE_LENGTH,
    reuse: bool = True,
    *,
    max_final_vocab: int | None = None,
    vocab_file=None,
    workers: int | None = None,
) -> EncodedCorpus:
    """This rank's shard of the text corpus ``path``, encoded under the cache ``cache_dir``: the
    vocabulary of the whole corpus, the ids of the rank's part only. Every rank of a run calls it,
    with ``all_gather`` = ``torch.distributed.all_gather_object`` (or any function with its
    signature: fills a list of ``world_size`` slots with every rank's object); this module does not
    import torch.

    The corpus is cut as ``reader.split_corpus(path, world_size)`` cuts it (byte ranges of about
    equal size at line ends; compressed files whole): rank ``r`` reads part ``r`` alone, on its
    own ``workers`` processes, counts its words, and the counts go to every rank (one
    ``all_gather``), so all build the same vocabulary (the one ``prepare_corpus`` builds); then it
    encodes its part. The shards, in rank order, are the one-node encoding: their ids back to
    back, their sentences one after the other (a sentence that a cut inside a line splits becomes
    two; cuts fall at line ends wherever a line end is within ``reader.SPLIT_SEARCH_BYTES``).

    The cache keeps one directory per shard (the recipe with ``shard: [rank, world_size]``),
    complete or absent, under a lock; ranks reuse their shards only when all of them can (one
    ``all_gather`` first), otherwise all encode again. ``max_vocab_size`` (gensim's pruning,
    defined on the order of the whole text) is counted by rank 0 reading the whole corpus, the
    others waiting for its vocabulary. A rank that fails reading its part tells the others, which
    raise too (no rank waits forever for it). ``meta.json`` has ``shard``, ``shards`` and
    ``shard_bytes`` (the bytes of the corpus this rank read)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if not path:
        raise UsageError("a text corpus needs a path (data.path=/path/to/corpus.txt(.gz))")
    tokenize, lowercase, tokenizer_name = resolve_tokenizer(tokenizer, lowercase)
    if vocab_file is not None and not Path(vocab_file).is_file():
        raise UsageError(f"vocabulary file not found: {os.fspath(vocab_file)!r}")
    recipe = recipe_of(
        "text",
        path,
        min_count,
        max_vocab_size,
        max_final_vocab,
        tokenizer_name,
        vocab_file,
        lowercase,
        max_sentence_length,
        None,
    )
    recipe["shard"] = [int(rank), int(world_size)]

    def gather(obj) -> list:
        everyone = [None] * world_size
        all_gather(everyone, obj)
        return everyone

    root = _cache_root(cache_dir)
    out = root / recipe_key(recipe)
    with _lock(root / f".{out.name}.lock"):
        for stale in root.glob(f".{out.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        have = reuse and tokenizer_name is not None and _reusable(out, recipe)
        if not all(gather(have)):
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=root))
                os.replace(out, old / "old")
                shutil.rmtree(old, ignore_errors=True)
            _build(
                out, recipe, path, tokenize, vocab_file, None, workers, (rank, world_size, gather)
            )
            _verified[str(out.resolve())] = _signature(out)
    return EncodedCorpus.open(out)
