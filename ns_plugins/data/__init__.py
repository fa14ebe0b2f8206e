"""Corpus pipeline: text -> vocabulary -> ids on disk -> subsampled skip-gram / CBOW batches,
Keras-compatible ``skipgrams``, and a synthetic corpus with planted structure. Its modules, from
the text up:

    textfiles       a corpus path's files as checked UTF-8 byte streams (``CorpusStats``)
    reader          token blocks and the tokenizers; ``sentences``: ``read_sentences`` and
                    ``Word2Vec``'s input (``SentenceCorpus``)
    split           a corpus cut into byte ranges, one part per process
    vocab           word counts -> ``Vocab``
    token_codes     token blocks -> int32 codes, counted or looked up (compiled table for ASCII)
    encode          ``encode_corpus``: one parallel pass, text -> ids on disk (forks and progress
                    in ``parallel``, its compiled steps in ``wordtable``)
    encoded         ``EncodedCorpus``: the encoded directory's format, opened and checked
    cache           one encoded directory per recipe (``prepare_corpus``), named by ``cache_key``
    pairs, sampling, keras, synthetic

Names load on first use, so a program that only reads and encodes a corpus never imports torch
(the batch iterators are torch ``IterableDataset``s).
"""

import importlib

_EXPORTS = {
    "cache": (
        "open_cached_corpus",
        "prepare_cached_corpus",
        "prepare_corpus",
        "prepare_corpus_shard",
    ),
    "encode": ("encode_corpus",),
    "encoded": ("EncodedCorpus",),
    "keras": ("make_sampling_table", "skipgrams"),
    "pairs": ("CBOWBatches", "SkipGramBatches"),
    "sampling": ("keep_probability", "negative_sampler"),
    "reader": ("simple_tokenize",),
    "sentences": ("read_sentences",),
    "textfiles": ("CorpusStats",),
    "synthetic": ("SyntheticCorpus", "analogy_accuracy", "neighbour_purity", "synthetic_corpus"),
    "vocab": ("Vocab",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
