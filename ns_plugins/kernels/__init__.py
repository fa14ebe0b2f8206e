"""The compiled kernels, one module per computation and device:

loss_numba, loss_torch, loss_triton, loss_cupy
                the negative-sampling loss and its gradients, each keeping the contract of
                ``core.reference`` (the float64 oracle)
chunk_numba, chunk_triton
                the chunk engine's step: skip-gram / CBOW over a chunk of the encoded corpus,
                trained in place, drawing the same counter-based random numbers
pairs_numba     skip-gram pairs for Keras's ``skipgrams``
merge           local SGD's bookkeeping (snapshot, delta, add), for threads and ranks
prefetch        a cache-line prefetch the numba kernels call
"""
