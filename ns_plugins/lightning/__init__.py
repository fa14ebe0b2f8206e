"""Lightning training: SGNSModule, CorpusDataModule, callbacks, and the run behind ``ns-train``."""

from ns_plugins.lightning.datamodule import CorpusDataModule
from ns_plugins.lightning.module import SGNSModule, linear_decay

__all__ = ["CorpusDataModule", "SGNSModule", "linear_decay"]
