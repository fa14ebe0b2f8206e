"""Corpus pipeline: text -> vocabulary -> ids on disk -> subsampled skip-gram / CBOW batches,
Keras-compatible ``skipgrams``, and a synthetic corpus with planted structure."""

from .encode import EncodedCorpus, encode_corpus, prepare_corpus
from .keras import make_sampling_table, skipgrams
from .pairs import CBOWBatches, SkipGramBatches, keep_probability, negative_sampler
from .reader import CorpusStats, read_sentences, simple_tokenize
from .synthetic import SyntheticCorpus, analogy_accuracy, neighbour_purity, synthetic_corpus
from .vocab import Vocab

__all__ = [
    "CBOWBatches",
    "CorpusStats",
    "EncodedCorpus",
    "SkipGramBatches",
    "SyntheticCorpus",
    "Vocab",
    "analogy_accuracy",
    "encode_corpus",
    "keep_probability",
    "make_sampling_table",
    "negative_sampler",
    "neighbour_purity",
    "prepare_corpus",
    "read_sentences",
    "simple_tokenize",
    "skipgrams",
    "synthetic_corpus",
]
