"""gensim 4's ``Word2Vec`` as a library object, trained in this process by the chunk engine's step.

A gensim script runs with its import changed to ``from ns_plugins import Word2Vec``: the
constructor takes gensim's arguments and trains when given a corpus; ``build_vocab`` (with
``update=True`` for new words), ``train`` (continues from the current weights), ``save`` /
``Word2Vec.load`` (one ``.npz``, never pickled), ``model.wv`` (a
:class:`~ns_plugins.embeddings.KeyedVectors`) and ``CallbackAny2Vec``-style callbacks.

The corpus is encoded into vocabulary ids (sentences as given, once, in memory; a ``corpus_file``
read as gensim's ``LineSentence`` reads it: split on whitespace, case kept, lines cut at 10,000
words, and encoded again every epoch as it is trained, so it is never held whole) and trained
chunk by chunk with :class:`~ns_plugins.engines.chunk.ChunkTrainer`, the step the training
app runs under Lightning. On the CPU nothing here imports torch, Lightning or Hydra, and nothing is
written to disk unless asked (``save``, ``wv.save_word2vec_format``). Progress goes to the
``ns_plugins.word2vec`` logger, as gensim's to its own: nothing is shown unless logging is set up.
"""

from __future__ import annotations

import json
import logging
import math
import time
from types import SimpleNamespace

import numpy as np

from ns_plugins.data.sentences import SentenceCorpus
from ns_plugins.embeddings import KeyedVectors

__all__ = ["CallbackAny2Vec", "Word2Vec"]

log = logging.getLogger(__name__)

_FORMAT = "ns_plugins.word2vec/1"
# settings kept by save() and restored by load(), with gensim's names
_PARAMS = (
    "vector_size alpha window min_count max_vocab_size sample seed workers min_alpha sg hs "
    "negative ns_exponent cbow_mean epochs max_final_vocab shrink_windows device chunk_words"
).split()
_STATE = ("corpus_count", "corpus_total_words", "train_count")


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


class Word2Vec:
    """Skip-gram (``sg=1``) or CBOW (``sg=0``) with negative sampling, gensim 4's interface.

    Refused rather than ignored: hierarchical softmax (``hs=1``), ``negative=0``, CBOW summing its
    context (``cbow_mean=0``), several processes (``devices`` > 1: the training app runs those).
    ``max_vocab_size`` and ``max_final_vocab`` both keep that many most frequent words (the count
    is exact, so gensim's pruning while counting is not needed). Beyond gensim: ``device``
    (``"cpu"``, or ``"cuda"``/``"gpu"`` for the Triton kernel, which needs torch and triton) and
    ``chunk_words`` (words per training step; the learning rate decays per step).
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
        chunk_words: int = 100_000,
    ):
        if hs:
            raise ValueError("hs=1: hierarchical softmax is not implemented; use hs=0, negative>=1")
        if negative < 1:
            raise ValueError(
                "You must set either 'hs' or 'negative' to be positive for proper training; "
                "only negative sampling is implemented: negative >= 1"
            )
        if not sg and not cbow_mean:
            raise ValueError("cbow_mean=0 (summed contexts) is not implemented; use cbow_mean=1")
        if device not in ("cpu", "gpu", "cuda"):
            raise ValueError(f"device={device!r}: choose 'cpu' or 'cuda' ('gpu')")
        if int(devices) != 1:
            raise ValueError(
                f"devices={devices}: Word2Vec trains in this process on one device; several "
                "processes or GPUs are the training app's (ns-train +experiment=sgns_text "
                "data.path=... devices=N, see the README), whose vectors.bin loads with "
                "KeyedVectors.load_word2vec_format"
            )
        for name, value in (("vector_size", vector_size), ("window", window),
                            ("workers", workers), ("epochs", epochs), ("min_count", min_count),
                            ("chunk_words", chunk_words)):  # fmt: skip
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name, value in (("max_vocab_size", max_vocab_size),
                            ("max_final_vocab", max_final_vocab)):  # fmt: skip
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        for name, value in (("alpha", alpha), ("min_alpha", min_alpha), ("sample", sample),
                            ("ns_exponent", ns_exponent)):  # fmt: skip
            if not math.isfinite(float(value)):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if not 0 <= min_alpha <= alpha or alpha == 0:
            raise ValueError(
                f"need 0 <= min_alpha <= alpha and alpha > 0; got {min_alpha}, {alpha}"
            )
        if sample < 0:
            raise ValueError(f"sample must be >= 0, got {sample}")
        if not 0 <= int(seed) < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}")
        self.vector_size, self.alpha, self.window = int(vector_size), float(alpha), int(window)
        self.min_count, self.max_vocab_size = int(min_count), max_vocab_size
        self.sample, self.seed, self.workers = float(sample), int(seed), int(workers)
        self.min_alpha, self.sg, self.hs = float(min_alpha), int(sg), 0
        self.negative, self.ns_exponent = int(negative), float(ns_exponent)
        self.cbow_mean, self.epochs = int(cbow_mean), int(epochs)
        self.max_final_vocab, self.shrink_windows = max_final_vocab, bool(shrink_windows)
        self.callbacks = tuple(callbacks)
        self.compute_loss = bool(compute_loss)
        self.device, self.chunk_words = device, int(chunk_words)
        self.corpus_count = self.corpus_total_words = self.train_count = 0
        self.running_training_loss = 0.0
        self.wv = KeyedVectors(self.vector_size)
        self.syn1neg = np.zeros((0, self.vector_size), dtype=np.float32)  # output vectors
        self._encoded = None  # (corpus, vocabulary size, steps, raw words, arrays): last trained
        if sentences is not None or corpus_file is not None:
            self.build_vocab(sentences, corpus_file)
            self.train(sentences, corpus_file, total_examples=self.corpus_count,
                       epochs=self.epochs)  # fmt: skip

    def __repr__(self) -> str:
        return f"Word2Vec<vocab={len(self.wv)}, vector_size={self.vector_size}, alpha={self.alpha}>"

    # ------------------------------------------------------------------------------- vocabulary
    def build_vocab(self, corpus_iterable=None, corpus_file=None, update: bool = False, **kwargs):
        """Count the corpus and fix the vocabulary: words seen ``min_count`` times, at most
        ``max_final_vocab`` / ``max_vocab_size`` of the most frequent, by descending count (ties by
        the word). With ``update=True`` known words add the new counts and new frequent words are
        appended."""
        if kwargs:
            raise TypeError(f"build_vocab() got unsupported arguments: {sorted(kwargs)}")
        if update and not len(self.wv):
            raise RuntimeError(
                "You cannot do an online vocabulary-update of a model which has no prior "
                "vocabulary. First build the vocabulary of your model with a corpus before doing "
                "an online update."
            )
        corpus = SentenceCorpus(corpus_iterable, corpus_file, self.epochs + 1)
        # an update needs the counts of known words too; a new vocabulary only the frequent ones
        words, counts, total, n_sentences = corpus.count(1 if update else self.min_count)
        self.corpus_count, self.corpus_total_words = n_sentences, total
        caps = [c for c in (self.max_vocab_size, self.max_final_vocab) if c is not None]
        if not update:
            from ns_plugins.data.vocab import Vocab

            vocab = Vocab.from_counts(
                words, counts, self.min_count, min(caps) if caps else None, raw_words=total
            )
            self.wv = KeyedVectors.from_words(
                vocab.words, self._random_vectors(len(vocab.words)), vocab.counts
            )
            self.syn1neg = np.zeros_like(self.wv.vectors)
            self.train_count = 0
        else:
            count_of = dict(zip(words, counts.tolist()))
            new = sorted(
                ((w, c) for w, c in count_of.items() if c >= self.min_count and w not in self.wv),
                key=lambda wc: (-wc[1], wc[0]),
            )
            if caps:
                new = new[: max(0, min(caps) - len(self.wv))]
            known = np.array([count_of.get(w, 0) for w in self.wv.index_to_key], dtype=np.int64)
            self.wv.counts = self.wv.counts + known
            self.wv.add_vectors([w for w, _ in new], self._random_vectors(len(new)))
            self.wv.counts[len(self.wv) - len(new) :] = [c for _, c in new]
            self.syn1neg = np.concatenate(
                [self.syn1neg, np.zeros((len(new), self.vector_size), np.float32)]
            )
        self._encoded = None
        log.info(
            "vocabulary: %d words (%d sentences, %d raw words)%s",
            len(self.wv),
            n_sentences,
            total,
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
    def _steps(self, corpus: SentenceCorpus, engine):
        """(steps per epoch, raw words per epoch, ``steps``): ``steps()`` walks one epoch as the
        engine's steps, (ids, sentence offsets into them, the corpus position of ``ids[0]``).

        A ``corpus_file`` trained on the CPU is streamed: encoded again every epoch, a step at a
        time, as gensim reads its file every epoch, so the encoded corpus (4 bytes a word, 8 a
        sentence) is never held; one more pass counts the steps, since the learning rate decays
        per step. In-memory sentences, and any corpus on CUDA, are encoded once and kept. The same
        corpus (object or file) trained again is not encoded or counted again."""
        from ns_plugins.engines.chunk import chunk_bounds

        # the model's own word list and index, not copies of them (26k words: 2 MiB)
        vocab = SimpleNamespace(words=self.wv.index_to_key, index=self.wv.key_to_index)
        cached = self._encoded
        if cached is None or not corpus.same_as(cached[0]) or cached[1] != len(self.wv):
            if corpus.file is not None and not self._cuda:
                n_steps = sum(1 for _ in corpus.chunks(vocab, self.chunk_words))
                cached = (corpus, len(self.wv), n_steps, corpus.words_read, None)
            else:
                ids, offsets, raw = corpus.encode(vocab, self.corpus_total_words, self.corpus_count)
                bounds = chunk_bounds(offsets, self.chunk_words)
                cached = (corpus, len(self.wv), len(bounds) - 1, raw, (ids, offsets, bounds))
            self._encoded = cached
        n_steps, raw_words, arrays = cached[2:]
        if arrays is None:
            return n_steps, raw_words, lambda: corpus.chunks(vocab, self.chunk_words)
        ids, offsets, bounds = arrays
        if self._cuda:
            ids, offsets = self._to_cuda(engine, ids, offsets)

        def steps():
            for c in range(n_steps):
                yield ids, offsets[bounds[c] : bounds[c + 1] + 1], 0

        return n_steps, raw_words, steps

    @property
    def _cuda(self) -> bool:
        return self.device in ("gpu", "cuda")

    def train(
        self,
        corpus_iterable=None,
        corpus_file=None,
        total_examples=None,
        total_words=None,
        epochs=None,
        start_alpha=None,
        end_alpha=None,
        report_delay: float = 1.0,
        compute_loss=None,
        callbacks=(),
        **kwargs,
    ):
        """Train on the corpus for ``epochs``, starting from the current weights. As in gensim,
        ``total_examples`` or ``total_words`` and ``epochs`` must be given; words outside the
        vocabulary are skipped. ``callbacks`` join the model's for this call. Returns (effective
        words, raw words) over all epochs, as gensim does."""
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
        if compute_loss is not None:
            self.compute_loss = bool(compute_loss)
        corpus = SentenceCorpus(corpus_iterable, corpus_file, int(epochs))
        engine = self._engine(start_alpha, end_alpha)
        n_steps, raw_words, steps = self._steps(corpus, engine)
        callbacks = [*self.callbacks, *callbacks]
        for cb in callbacks:
            cb.on_train_begin(self)
        trained = self._epochs(engine, n_steps, raw_words, steps, int(epochs), callbacks,
                               float(report_delay))  # fmt: skip
        self.train_count += 1
        for cb in callbacks:
            cb.on_train_end(self)
        return trained, raw_words * int(epochs)

    def _engine(self, start_alpha, end_alpha):
        from ns_plugins.engines.chunk import ChunkSettings, ChunkTrainer

        settings = ChunkSettings(
            vector_size=self.vector_size,
            window=self.window,
            negative=self.negative,
            ns_exponent=self.ns_exponent,
            sample=self.sample,
            alpha=self.alpha if start_alpha is None else float(start_alpha),
            min_alpha=self.min_alpha if end_alpha is None else float(end_alpha),
            cbow=not self.sg,
            shrink_windows=self.shrink_windows,
            workers=self.workers,
            # a new stream of draws for every training call
            seed=self.seed + (self.train_count << 32),
        )
        return ChunkTrainer(self.wv.counts, settings, (self.wv.vectors, self.syn1neg))

    def _epochs(self, engine, n_chunks, raw_words, steps, epochs, callbacks, report_delay) -> int:
        """The training loop: every epoch walks the corpus in ``n_chunks`` steps of about
        ``chunk_words`` words."""
        total_steps = epochs * n_chunks
        cuda = self._cuda
        self.running_training_loss = 0.0
        trained = 0
        start = time.perf_counter()
        for epoch in range(epochs):
            for cb in callbacks:
                cb.on_epoch_begin(self)
            t0 = last_report = time.perf_counter()
            words = c = 0
            for ids, offsets, first in steps():
                if c == n_chunks:  # a streamed file grew: refused below
                    c += 1
                    break
                loss, _, kept = engine.step(ids, offsets, epoch * n_chunks + c, total_steps,
                                            compute_loss=self.compute_loss,
                                            check_every=1 if not cuda else 64,
                                            first_position=first)  # fmt: skip
                if cuda:
                    loss, kept = float(loss), int(kept)
                self.running_training_loss += loss
                words += kept
                now = time.perf_counter()
                if now - last_report >= report_delay and c + 1 < n_chunks:
                    log.info("EPOCH %d - PROGRESS: at %.2f%% examples, %.0f words/s", epoch,
                             100.0 * (c + 1) / n_chunks, words / (now - t0))  # fmt: skip
                    last_report = now
                c += 1
            if c != n_chunks:
                self._encoded = None
                raise RuntimeError(
                    f"the corpus changed during training: epoch {epoch} did not have the "
                    f"{n_chunks} steps its first pass counted; the weights hold the steps trained"
                )
            seconds = time.perf_counter() - t0
            trained += words
            log.info("EPOCH %d: training on %d raw words (%d effective words) took %.1fs, "
                     "%.0f effective words/s", epoch, raw_words, words, seconds,
                     words / max(seconds, 1e-9))  # fmt: skip
            if cuda:
                self._from_cuda(engine)
            else:
                engine.sync()  # the threads' copies into wv.vectors and syn1neg
            for cb in callbacks:
                cb.on_epoch_end(self)
        engine.release_copies()
        seconds = time.perf_counter() - start
        log.info("training on %d raw words (%d effective words) took %.1fs, %.0f effective "
                 "words/s", raw_words * epochs, trained, seconds,
                 trained / max(seconds, 1e-9))  # fmt: skip
        return trained

    def _to_cuda(self, engine, ids, offsets):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"device={self.device!r} but torch sees no CUDA device")
        engine.W_in = torch.from_numpy(self.wv.vectors).to("cuda")
        engine.W_out = torch.from_numpy(self.syn1neg).to("cuda")
        return engine.to_device(ids, offsets, "cuda")

    def _from_cuda(self, engine) -> None:
        """The device's weights into ``wv.vectors`` and ``syn1neg`` (in place)."""
        self.wv.vectors[...] = engine.W_in.cpu().numpy()
        self.syn1neg[...] = engine.W_out.cpu().numpy()
        self.wv.norms = None

    def get_latest_training_loss(self) -> float:
        """The summed loss of the latest ``train`` call (0.0 unless ``compute_loss=True``)."""
        return self.running_training_loss

    # ------------------------------------------------------------------------------- files
    def save(self, fname) -> None:
        """The model (vocabulary, counts, both weight tables, settings) as one ``.npz`` written to
        ``fname`` exactly; ``Word2Vec.load`` reads it with ``allow_pickle=False``."""
        params = {k: getattr(self, k) for k in (*_PARAMS, *_STATE)}
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
    def load(cls, fname, callbacks=()) -> Word2Vec:
        """A model written by ``save``; anything else (a gensim pickle, a truncated file) raises
        one ``ValueError`` naming the file."""
        import zipfile

        try:
            with np.load(fname, allow_pickle=False) as z:
                if str(z["format"]) != _FORMAT:
                    raise KeyError("format")
                params = json.loads(str(z["params"]))
                words, counts = z["words"].tolist(), z["counts"]
                vectors, syn1neg = z["vectors"], z["syn1neg"]
            state = {k: params.pop(k) for k in _STATE}
            params.pop("devices", None)  # written by 0.1.0, always 1 in a model file
            unknown = sorted(set(params) - set(_PARAMS))
            if unknown:
                raise KeyError(", ".join(unknown))
            model = cls(**params, callbacks=callbacks)
            if vectors.shape != syn1neg.shape or vectors.shape != (len(words), model.vector_size):
                raise ValueError(f"arrays of shapes {vectors.shape} and {syn1neg.shape}")
            model.wv = KeyedVectors.from_words(words, np.ascontiguousarray(vectors), counts)
        except (KeyError, ValueError, TypeError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{fname}: not a model saved by Word2Vec.save ({err})") from None
        model.syn1neg = np.ascontiguousarray(syn1neg)
        for k, v in state.items():
            setattr(model, k, v)
        return model
