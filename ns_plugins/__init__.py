"""ns_plugins: fast, exact negative sampling for Chainer, PyTorch and Lightning.

``from ns_plugins import Word2Vec`` gives gensim 4's Word2Vec interface on numpy and numba; it is
loaded on first use, so ``import ns_plugins`` stays light (no torch, no Hydra).
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "Word2Vec":
        from ns_plugins.word2vec import Word2Vec

        return Word2Vec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
