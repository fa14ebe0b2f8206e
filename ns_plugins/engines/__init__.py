"""Engines: what trains the weights, below every face that drives them.

``base`` holds what every engine shares (initial weights, the learning-rate schedule, per-step
seeds, the vocabulary fingerprint and the resume check); ``chunk`` the chunk engine's step on numpy
arrays (numba threads) or CUDA tensors (Triton). Nothing here imports torch on the CPU, so the
gensim-style ``ns_plugins.Word2Vec`` and the Lightning ``ChunkModule`` run the same step.
"""
