"""The word2vec file functions under their former name; they live in
:mod:`ns_plugins.embeddings.word2vec_format` (import them from :mod:`ns_plugins.embeddings`).

Kept while ``ns_plugins.runs`` and scripts outside the package still import from here.
"""

from ns_plugins.embeddings.word2vec_format import load_word2vec, save_word2vec

__all__ = ["load_word2vec", "save_word2vec"]
