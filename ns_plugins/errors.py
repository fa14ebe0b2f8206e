"""The one exception type for bad input: settings, files, corpora, checkpoints.

The training app reports it as one line (``ns-train: error: ...``, exit 2) instead of a traceback;
library callers catch it as the ``ValueError`` it is.
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(ValueError):
    """Input or settings that cannot work, with a message naming the file or setting and why."""
