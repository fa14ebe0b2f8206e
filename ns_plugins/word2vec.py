"""gensim 4's ``Word2Vec``, trained by this package's run skeleton.

A gensim script runs with its import changed to ``from ns_plugins import Word2Vec``: the
constructor takes gensim's arguments and trains when given a corpus; ``build_vocab`` (with
``update=True`` for new words), ``train`` (continues from the current weights), ``save`` /
``Word2Vec.load`` (one ``.npz``, never pickled), ``model.wv`` (an
:class:`~ns_plugins.embeddings.KeyedVectors`) and ``CallbackAny2Vec``-style callbacks.

Every training call is one run of ``ns_plugins.runs.train`` (the run skeleton behind ``train.py``)
with a config composed from the app's Hydra configs: ``+experiment=sgns_text`` plus overrides for
the arguments. The corpus goes in as a file: ``sentences`` (any restartable iterable of token
lists) are written once to ``corpus_<n>.txt`` in the model's work directory, one sentence per line,
and read back with ``data.tokenizer=split`` (``str.split``, no lowercasing), as gensim reads a
``corpus_file``. The vocabulary fixed by ``build_vocab`` goes in as ``data.vocab_file``; the
weights of earlier training as ``init_vectors``. Each run's directory (vectors, metrics, report) is
kept under the work directory until the next run; ``model.run_dir`` names it.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ns_plugins.embeddings import KeyedVectors

__all__ = ["CallbackAny2Vec", "Word2Vec"]

log = logging.getLogger(__name__)

_FORMAT = "ns_plugins.word2vec/1"
# settings kept by save() and restored by load(), with gensim's names
_PARAMS = (
    "vector_size alpha window min_count max_vocab_size sample seed workers min_alpha sg hs "
    "negative ns_exponent cbow_mean epochs max_final_vocab shrink_windows device devices "
    "corpus_count corpus_total_words train_count"
).split()


class CallbackAny2Vec:
    """Base class for training callbacks, as gensim's: override the events you need. Each gets
    the model; during training ``model.wv`` holds the weights as of the event."""

    def on_train_begin(self, model):
        pass

    def on_epoch_begin(self, model):
        pass

    def on_epoch_end(self, model):
        pass

    def on_train_end(self, model):
        pass


def _restartable(corpus, passes: int) -> None:
    """Refuse a generator or iterator: gensim reads the corpus once per epoch plus once for the
    vocabulary, so scripts written for it pass restartable iterables; we keep that contract."""
    if isinstance(corpus, (str, bytes)):
        raise TypeError("sentences must be an iterable of token lists, not a string")
    if not isinstance(corpus, Iterable):
        raise TypeError(
            f"The corpus_iterable must be an iterable of lists of strings, got {corpus!r} instead"
        )
    if isinstance(corpus, Iterator):
        raise TypeError(
            f"Using a generator as corpus_iterable can't support {passes} passes: the corpus "
            "must be restartable. Try a re-iterable sequence (a list, or an object whose "
            "__iter__ starts a new pass)."
        )


def _quote(value) -> str:
    """A Hydra override value for any path: single-quoted, quotes escaped."""
    return "'" + str(value).replace("'", "\\'") + "'"


class Word2Vec:
    """Skip-gram (``sg=1``) or CBOW (``sg=0``) with negative sampling, gensim 4's interface.

    Differences from gensim, all refused loudly rather than ignored: hierarchical softmax
    (``hs=1``) is not implemented and ``negative`` must be >= 1. ``max_vocab_size`` and
    ``max_final_vocab`` both cap the vocabulary at that many most frequent words (the count is
    exact, so gensim's pruning while counting is not needed). Beyond gensim's arguments:
    ``device`` (``"cpu"`` or ``"gpu"``), ``devices`` (processes or GPUs), ``work_dir`` (default: a
    temporary directory removed with the model) and ``overrides`` (further config overrides, e.g.
    ``["model.shared_negatives=true"]``).
    """

    def __init__(
        self,
        sentences=None,
        corpus_file=None,
        vector_size: int = 100,
        alpha: float = 0.025,
        window: int = 5,
        min_count: int = 5,
        max_vocab_size: int | None = None,
        sample: float = 1e-3,
        seed: int = 1,
        workers: int = 3,
        min_alpha: float = 0.0001,
        sg: int = 0,
        hs: int = 0,
        negative: int = 5,
        ns_exponent: float = 0.75,
        cbow_mean: int = 1,
        *,
        epochs: int = 5,
        max_final_vocab: int | None = None,
        shrink_windows: bool = True,
        callbacks=(),
        compute_loss: bool = False,
        device: str = "cpu",
        devices: int = 1,
        work_dir=None,
        overrides=(),
    ):
        if hs:
            raise ValueError("hs=1: hierarchical softmax is not implemented; use hs=0, negative>=1")
        if negative < 1:
            raise ValueError(
                "You must set either 'hs' or 'negative' to be positive for proper training; "
                "only negative sampling is implemented: negative >= 1"
            )
        if device not in ("cpu", "gpu"):
            raise ValueError(f"device={device!r}: choose 'cpu' or 'gpu'")
        if int(devices) < 1:
            raise ValueError(f"devices must be >= 1, got {devices}")
        self.vector_size, self.alpha, self.window = int(vector_size), float(alpha), int(window)
        self.min_count, self.max_vocab_size = int(min_count), max_vocab_size
        self.sample, self.seed, self.workers = float(sample), int(seed), int(workers)
        self.min_alpha, self.sg, self.hs = float(min_alpha), int(sg), 0
        self.negative, self.ns_exponent = int(negative), float(ns_exponent)
        self.cbow_mean, self.epochs = int(cbow_mean), int(epochs)
        self.max_final_vocab, self.shrink_windows = max_final_vocab, bool(shrink_windows)
        self.callbacks = tuple(callbacks)
        self.compute_loss = bool(compute_loss)  # the loss is always computed and logged
        self.device, self.devices = device, int(devices)
        self.overrides = list(overrides)
        self.corpus_count = self.corpus_total_words = self.train_count = 0
        self.wv = KeyedVectors(self.vector_size)
        self.syn1neg = np.zeros((0, self.vector_size), dtype=np.float32)  # output vectors
        self.run_dir: Path | None = None
        self.metrics: dict = {}
        self._written = None  # (sentences object, the file they were written to)
        self._n_files = 0
        if work_dir is None:
            work_dir = tempfile.mkdtemp(prefix="ns_word2vec_")
            weakref.finalize(self, shutil.rmtree, work_dir, True)
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if sentences is not None or corpus_file is not None:
            self.build_vocab(sentences, corpus_file)
            self.train(sentences, corpus_file, total_examples=self.corpus_count,
                       epochs=self.epochs)  # fmt: skip

    def __repr__(self) -> str:
        return f"Word2Vec<vocab={len(self.wv)}, vector_size={self.vector_size}, alpha={self.alpha}>"

    # ------------------------------------------------------------------------------- corpus
    def _next_file(self, stem: str, suffix: str) -> Path:
        self._n_files += 1
        return self.work_dir / f"{stem}_{self._n_files}{suffix}"

    def _corpus_file(self, corpus_iterable, corpus_file, passes: int) -> Path:
        """The file to train from: ``corpus_file``, or the sentences written once to a file in the
        work directory (the same corpus object again reuses its file)."""
        if (corpus_iterable is None) == (corpus_file is None):
            raise TypeError(
                "Either one of corpus_file or corpus_iterable value must be provided"
                if corpus_iterable is None
                else "Both corpus_file and corpus_iterable must not be provided at the same time"
            )
        if corpus_file is not None:
            from ns_plugins.data.reader import corpus_files

            corpus_files(corpus_file)  # a missing path fails here, naming it
            return Path(corpus_file)
        if self._written is not None and self._written[0] is corpus_iterable:
            return self._written[1]
        _restartable(corpus_iterable, passes)
        path = self._next_file("corpus", ".txt")
        n_sentences = n_tokens = 0
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for sentence in corpus_iterable:
                if isinstance(sentence, str):
                    raise TypeError("sentences must be lists of tokens, got a str; split it first")
                f.write(" ".join(sentence))
                f.write("\n")
                n_sentences += 1
                n_tokens += len(sentence)
        if n_sentences == 0:
            path.unlink()
            raise ValueError(
                "the corpus is empty (if not intended, be sure to provide a corpus that offers "
                "restartable iteration = an iterable)"
            )
        if self._written is not None:
            self._written[1].unlink(missing_ok=True)
        self._written = (corpus_iterable, path, n_tokens)
        return path

    @staticmethod
    def _count(path: Path) -> tuple[Counter, int]:
        """Word counts and the number of lines of a corpus file, read as training reads it."""
        from ns_plugins.data.reader import NEWLINE, token_blocks

        counts: Counter = Counter()
        for toks in token_blocks(path, tokenizer=str.split, lowercase=False):
            counts.update(toks)
        return counts, counts.pop(NEWLINE, 0)

    # ------------------------------------------------------------------------------- vocabulary
    def build_vocab(self, corpus_iterable=None, corpus_file=None, update: bool = False, **kwargs):
        """Count the corpus and fix the vocabulary: words seen ``min_count`` times, at most
        ``max_final_vocab`` / ``max_vocab_size`` of the most frequent, by descending count. With
        ``update=True`` known words add the new counts and new frequent words are appended."""
        if kwargs:
            raise TypeError(f"build_vocab() got unsupported arguments: {sorted(kwargs)}")
        if update and not len(self.wv):
            raise RuntimeError(
                "You cannot do an online vocabulary-update of a model which has no prior "
                "vocabulary. First build the vocabulary of your model with a corpus before doing "
                "an online update."
            )
        path = self._corpus_file(corpus_iterable, corpus_file, self.epochs + 1)
        counts, n_sentences = self._count(path)
        if corpus_iterable is not None and sum(counts.values()) != self._written[2]:
            # a token the file cannot carry: the reader split it, or dropped an empty one
            bad = next(t for s in corpus_iterable for t in s if not t or t.split() != [t])
            raise ValueError(f"token {bad!r} is empty or holds whitespace; split it first")
        self.corpus_count, self.corpus_total_words = n_sentences, int(sum(counts.values()))
        caps = [c for c in (self.max_vocab_size, self.max_final_vocab) if c is not None]
        if not update:
            from ns_plugins.data import Vocab

            vocab = Vocab.from_counter(counts, self.min_count, min(caps) if caps else None)
            self.wv = KeyedVectors.from_words(
                vocab.words, self._random_vectors(len(vocab.words)), vocab.counts
            )
            self.syn1neg = np.zeros_like(self.wv.vectors)
            self.train_count = 0
        else:
            new = sorted(
                ((w, c) for w, c in counts.items() if c >= self.min_count and w not in self.wv),
                key=lambda wc: (-wc[1], wc[0]),
            )
            if caps:
                new = new[: max(0, min(caps) - len(self.wv))]
            known = np.array([counts.get(w, 0) for w in self.wv.index_to_key], dtype=np.int64)
            self.wv.counts = self.wv.counts + known
            self.wv.add_vectors([w for w, _ in new], self._random_vectors(len(new)))
            self.wv.counts[len(self.wv) - len(new) :] = [c for _, c in new]
            self.syn1neg = np.concatenate(
                [self.syn1neg, np.zeros((len(new), self.vector_size), np.float32)]
            )
        log.info(
            "vocabulary: %d words (%d sentences, %d raw words)%s",
            len(self.wv),
            n_sentences,
            self.corpus_total_words,
            " after the update" if update else "",
        )

    def _random_vectors(self, n: int) -> np.ndarray:
        # gensim 4's start: uniform in +-1/vector_size
        rng = np.random.default_rng([self.seed, len(self.wv), n])
        out = rng.random((n, self.vector_size), dtype=np.float32)
        out -= 0.5
        out *= 2.0 / self.vector_size
        return out

    # ------------------------------------------------------------------------------- training
    def config(self, corpus_path, vocab_file, init_vectors=None, epochs=None, alpha=None,
               min_alpha=None):  # fmt: skip
        """The run config for one training call, composed from the app's Hydra configs."""
        from hydra import compose, initialize_config_dir

        from ns_plugins.config import config_dir

        o = [
            "+experiment=sgns_text",
            *([] if self.sg else ["model=cbow", "model.init_scale=1.0"]),
            f"data.path={_quote(corpus_path)}",
            "data.tokenizer=split",
            f"data.vocab_file={_quote(vocab_file)}",
            "min_count=1",  # the vocabulary file is already cut
            f"vector_size={self.vector_size}",
            f"window={self.window}",
            f"sample={self.sample!r}",
            f"negative={self.negative}",
            f"ns_exponent={self.ns_exponent!r}",
            f"alpha={(self.alpha if alpha is None else alpha)!r}",
            f"min_alpha={(self.min_alpha if min_alpha is None else min_alpha)!r}",
            f"epochs={self.epochs if epochs is None else int(epochs)}",
            f"workers={self.workers}",
            f"seed={self.seed}",
            f"shrink_windows={str(self.shrink_windows).lower()}",
            f"model.cbow_mean={str(bool(self.cbow_mean)).lower()}",
            "trainer.enable_progress_bar=false",
        ]
        if init_vectors is not None:
            o.append(f"init_vectors={_quote(init_vectors)}")
        if self.device == "gpu":
            o.append("device=ddp" if self.devices > 1 else "device=gpu")
        elif self.devices > 1:
            o.append("device=ddp_cpu")
        if self.devices > 1:
            o.append(f"devices={self.devices}")
        from hydra.core.global_hydra import GlobalHydra
        from hydra.initialize import get_gh_backup, restore_gh_from_backup

        # Inside a Hydra app: compose from our configs, then give the app its state back.
        backup = get_gh_backup()
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(str(config_dir()), version_base=None, job_name="word2vec"):
                return compose("train", overrides=[*o, *self.overrides])
        finally:
            restore_gh_from_backup(backup)

    def train(
        self,
        corpus_iterable=None,
        corpus_file=None,
        total_examples=None,
        total_words=None,
        epochs=None,
        start_alpha=None,
        end_alpha=None,
        callbacks=(),
        compute_loss=None,
        **kwargs,
    ):
        """Train on the corpus for ``epochs``, starting from the current weights after the first
        call. As in gensim, ``total_examples`` or ``total_words`` and ``epochs`` must be given
        (the learning rate schedule follows the corpus as read); words outside the vocabulary
        are skipped. ``callbacks`` join the model's for this call."""
        if kwargs:
            raise TypeError(f"train() got unsupported arguments: {sorted(kwargs)}")
        if not len(self.wv):
            raise RuntimeError("you must first build vocabulary before training the model")
        if total_examples is None and total_words is None:
            raise ValueError(
                "You must specify either total_examples or total_words, for proper learning-rate "
                "and progress calculations. If you've just built the vocabulary using the same "
                "corpus, using the count cached in the model is sufficient: "
                "total_examples=model.corpus_count."
            )
        if epochs is None or epochs <= 0:
            raise ValueError(
                "You must specify an explicit epochs count. The usual value is epochs=model.epochs."
            )
        from ns_plugins.data import Vocab
        from ns_plugins.runs import train as run_train

        path = self._corpus_file(corpus_iterable, corpus_file, int(epochs))
        vocab_file = self._next_file("vocab", ".tsv")
        Vocab(self.wv.index_to_key, self.wv.counts).save(vocab_file)
        init = None
        if self.train_count:  # continue from the trained weights (new words start random)
            init = self._next_file("weights", ".npz")
            with open(init, "wb") as f:
                np.savez(f, words=np.array(self.wv.index_to_key, dtype=str),
                         in_embed=self.wv.vectors, out_embed=self.syn1neg)  # fmt: skip
        cfg = self.config(path, vocab_file, init, epochs, start_alpha, end_alpha)
        previous, run_dir = self.run_dir, self._next_file("run", "")
        adapter = _lightning_callbacks(self, [*self.callbacks, *callbacks])
        metrics = run_train(cfg, run_dir, extra_callbacks=[adapter])
        if not metrics:
            # another rank of a multi-process run (the script re-run by the launcher): rank 0
            # writes the run directory and holds the result
            return 0, 0
        self._read_run(run_dir)
        self.metrics, self.run_dir = metrics, run_dir
        self.train_count += 1
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        for stale in (init, vocab_file):
            if stale is not None:
                stale.unlink(missing_ok=True)
        if metrics.get("interrupted"):
            raise KeyboardInterrupt(f"training interrupted; the vectors so far are in {run_dir}")
        words = int(metrics.get("words") or 0)
        return words, words  # (trained, raw) words as gensim returns them; both are raw here

    def _read_run(self, run_dir: Path) -> None:
        """Take the trained input and output vectors from a finished run directory, by word."""
        from ns_plugins.data import Vocab

        words = Vocab.load(run_dir / "vocab.tsv").words
        kv = KeyedVectors.load_word2vec_format(run_dir / "vectors.bin", binary=True)
        if kv.index_to_key != words:
            raise RuntimeError(f"{run_dir}: vectors.bin and vocab.tsv list different words")
        out = _output_vectors(run_dir, kv.vectors.shape)
        if words == self.wv.index_to_key:
            self.wv.vectors, self.syn1neg = kv.vectors, out
        else:
            # A run that left out words of its vocabulary file (absent from this corpus, say):
            # those keep their vectors; a word the model does not know would be a bug upstream.
            rows = np.array([self.wv.get_index(w, -1) for w in words], dtype=np.int64)
            if (rows < 0).any():
                raise RuntimeError(f"{run_dir}: the run trained words outside data.vocab_file")
            if len(words) != len(self.wv):
                log.warning(
                    "%s: the run trained %d of the %d words of its vocabulary file",
                    run_dir,
                    len(words),
                    len(self.wv),
                )
            self.wv.vectors[rows], self.syn1neg[rows] = kv.vectors, out
        self.wv.norms = None

    def _refresh(self, vectors) -> None:
        """Take the current input vectors during training (for callbacks)."""
        if vectors is not None and vectors.shape == self.wv.vectors.shape:
            self.wv.vectors = np.asarray(vectors, dtype=np.float32)
            self.wv.norms = None

    def get_latest_training_loss(self) -> float:
        """The mean loss per trained pair over the last logged steps of the latest run."""
        loss = self.metrics.get("final_loss")
        return float(loss) if loss is not None else math.nan

    # ------------------------------------------------------------------------------- files
    def save(self, fname) -> None:
        """The model (vocabulary, counts, both weight tables, settings) as one ``.npz`` written to
        ``fname`` exactly; ``Word2Vec.load`` reads it with ``allow_pickle=False``."""
        params = {k: getattr(self, k) for k in _PARAMS}
        counts = self.wv.counts if self.wv.counts is not None else np.zeros(len(self.wv), np.int64)
        with open(fname, "wb") as f:
            np.savez(
                f,
                format=np.array(_FORMAT),
                params=np.array(json.dumps(params)),
                words=np.array(self.wv.index_to_key, dtype=str),
                counts=counts,
                vectors=self.wv.vectors,
                syn1neg=self.syn1neg,
            )

    @classmethod
    def load(cls, fname, work_dir=None, callbacks=()) -> Word2Vec:
        try:
            with np.load(fname, allow_pickle=False) as z:
                if str(z["format"]) != _FORMAT:
                    raise KeyError("format")
                params = json.loads(str(z["params"]))
                words, counts = z["words"].tolist(), z["counts"]
                vectors, syn1neg = z["vectors"], z["syn1neg"]
        except (KeyError, ValueError, OSError) as err:
            raise ValueError(f"{fname}: not a model saved by Word2Vec.save ({err})") from None
        state = {k: params.pop(k) for k in ("corpus_count", "corpus_total_words", "train_count")}
        model = cls(**params, work_dir=work_dir, callbacks=callbacks)
        model.wv = KeyedVectors.from_words(words, vectors, counts)
        model.syn1neg = syn1neg
        for k, v in state.items():
            setattr(model, k, v)
        return model


def _output_vectors(run_dir: Path, shape) -> np.ndarray:
    """The output (context) vectors of a run from its last checkpoint: a Lightning ``.ckpt`` read
    with ``weights_only=True`` (plain tensors, never unpickled objects) or an ``.npz``."""
    ckpts = run_dir / "checkpoints"
    npz, ckpt = ckpts / "last.npz", ckpts / "last.ckpt"
    if ckpt.is_file():
        import torch

        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        out = state["out_embed.weight"].float().numpy()
    elif npz.is_file():
        with np.load(npz, allow_pickle=False) as z:
            out = np.asarray(z["out_embed"], dtype=np.float32)
    else:
        raise RuntimeError(f"{run_dir}: no checkpoints/last.ckpt or last.npz to continue from")
    if out.shape != tuple(shape):
        raise RuntimeError(f"{run_dir}: output vectors {out.shape}, input vectors {shape}")
    return np.ascontiguousarray(out)


def _lightning_callbacks(model: Word2Vec, callbacks):
    """One Lightning callback that logs a line per epoch and calls the gensim-style callbacks."""
    import pytorch_lightning as pl

    def metric(trainer, name):
        value = trainer.callback_metrics.get(name)
        return float(value) if value is not None else math.nan

    class GensimEvents(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            if trainer.is_global_zero:
                for cb in callbacks:
                    cb.on_train_begin(model)

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.is_global_zero:
                for cb in callbacks:
                    cb.on_epoch_begin(model)

        def on_train_epoch_end(self, trainer, pl_module):
            if not trainer.is_global_zero:
                return
            log.info(
                "EPOCH %d: loss %.4f, %.0f words/s",
                trainer.current_epoch,
                metric(trainer, "train/loss"),
                metric(trainer, "train/words_per_sec"),
            )
            if callbacks:
                vectors = getattr(pl_module, "vectors", None)
                model._refresh(vectors() if callable(vectors) else None)
                for cb in callbacks:
                    cb.on_epoch_end(model)

        def on_train_end(self, trainer, pl_module):
            if trainer.is_global_zero:
                for cb in callbacks:
                    cb.on_train_end(model)

    return GensimEvents()
