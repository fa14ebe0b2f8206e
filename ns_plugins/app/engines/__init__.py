"""The Lightning engines, on one base (``base.EngineModule``): ``chunk.ChunkModule`` trains corpus
chunks in place (``engine=chunk``, the default), ``batched.BatchedModule`` trains (center,
context) pairs through the loss op (``engine=batched``)."""
