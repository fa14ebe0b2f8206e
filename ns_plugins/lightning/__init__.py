"""Lightning training: SGNSModule, CorpusDataModule, callbacks, and the batched run behind
``ns-train``."""

from ns_plugins.lightning.datamodule import CorpusDataModule
from ns_plugins.lightning.module import SGNSModule

__all__ = ["CorpusDataModule", "SGNSModule"]
