"""The Lightning engines, on one base (``base.EngineModule``): ``chunk.ChunkModule`` trains corpus
chunks in place (``model.engine=chunk``, the default), ``batched.SGNSModule`` trains (center,
context) pairs through the loss op (``model.engine=batched``)."""
