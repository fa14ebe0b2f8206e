"""Local SGD's bookkeeping: copies of a table trained apart, merged by adding up their deltas.

Between merges every worker (a thread of one process, or a rank) trains its own copy of the
weights; a merge sets every copy to ``anchor + sum of the workers' deltas since the last merge``
and moves the anchor there. Adding the deltas (not averaging the weights) keeps every worker's
updates at full size, as one process training all the words would make them. The same function
serves the threads of the chunk engine (``engines.chunk.ChunkTrainer``) and the ranks
(``app.local_sgd.WeightAveraging``, whose ``all_reduce`` adds the other ranks' deltas); it
works on numpy arrays and torch tensors alike.
"""

from __future__ import annotations

__all__ = ["merge_deltas"]


def merge_deltas(copies, anchor, all_reduce=None) -> None:
    """Merge the ``copies`` of one table (this process's workers) trained since ``anchor``.

    ``all_reduce(delta)``, when given, adds up in place the delta of every process (the ranks).
    Afterwards ``anchor`` and every copy hold the merged weights. One copy is merged in place (no
    table-sized temporary: a rank's weights at V = 1M are gigabytes)."""
    if len(copies) == 1:
        (copy,) = copies
        copy -= anchor  # this worker's delta since the last merge
        if all_reduce is not None:
            all_reduce(copy)
        copy += anchor
        anchor[...] = copy
        return
    delta = copies[0] - anchor
    for copy in copies[1:]:
        delta += copy
        delta -= anchor
    if all_reduce is not None:
        all_reduce(delta)
    anchor += delta
    del delta
    for copy in copies:
        copy[...] = anchor
