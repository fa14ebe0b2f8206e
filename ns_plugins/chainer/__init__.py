"""Drop-ins for Chainer 7's negative sampling, computed by the shared ns_plugins kernels.

``negative_sampling`` (for ``chainer.functions.negative_sampling``), ``NegativeSampling`` (for
``chainer.links.NegativeSampling``) and ``WalkerAlias`` (for ``chainer.utils.WalkerAlias``);
``install()`` / ``uninstall()`` put them into Chainer's own namespaces, and
``python -m ns_plugins.chainer script.py`` runs an unchanged program with them installed.
"""

from __future__ import annotations

import importlib
import importlib.util

if importlib.util.find_spec("chainer") is None:
    raise ImportError(
        "ns_plugins.chainer needs Chainer 7.8.1, which is not installed. "
        "Install the extra: pip install '.[chainer]' (from the clone)"
    )

__all__ = ["negative_sampling", "NegativeSampling", "WalkerAlias", "install", "uninstall"]

# Attributes load on first use, so that the auto-install hook can import this package before
# Chainer (and torch) are imported.
_LAZY = {
    "negative_sampling": "functions",
    "NegativeSamplingFunction": "functions",
    "NegativeSampling": "links",
    "WalkerAlias": "walker_alias",
    "install": "installer",
    "uninstall": "installer",
    "installed": "installer",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ns_plugins.chainer import import_fixes

    import_fixes.apply()  # Chainer must import on this stack before the drop-ins load
    module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
    return getattr(module, name)


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
