"""Word vectors with gensim 4's ``KeyedVectors`` interface: lookup, similarity, evaluation and the
word2vec text and binary formats.

``KeyedVectors`` is the one embeddings type of this package: runs export through it, the run
evaluation and the report score through it, and ``Word2Vec.wv`` is one. Results follow gensim's
definitions (3CosAdd analogies over the ``restrict_vocab`` most frequent words, Spearman and
Pearson correlations with two-sided p-values, upper-cased lookups for ``case_insensitive``).
Nothing here imports torch or scipy.

Modules, one concern each:

- :mod:`.keyed_vectors`: the ``KeyedVectors`` type;
- :mod:`.similarity`: unit-length rows, top-k, nearest neighbours and 3CosAdd arithmetic;
- :mod:`.scoring`: word-pair correlations and analogy accuracy of a set of vectors;
- :mod:`.statistics`: Pearson and Spearman correlations with p-values;
- :mod:`.eval_sets`: readers for word-pair (WordSim-353, SimLex-999) and analogy files;
- :mod:`.word2vec_format`: the word2vec C tool's text and binary files.
"""

from .eval_sets import load_analogies, load_similarity
from .keyed_vectors import KeyedVectors
from .scoring import analogy_answers, analogy_scores, pair_similarities
from .similarity import answer_3cosadd, as_matrix, unit_rows
from .statistics import Correlation, pearson, spearman
from .word2vec_format import load_word2vec, save_word2vec

__all__ = [
    "Correlation",
    "KeyedVectors",
    "analogy_answers",
    "analogy_scores",
    "answer_3cosadd",
    "as_matrix",
    "load_analogies",
    "load_similarity",
    "load_word2vec",
    "pair_similarities",
    "pearson",
    "save_word2vec",
    "spearman",
    "unit_rows",
]
