"""Imported first by the Chainer test modules: skips the module when the drop-in cannot load
(no Chainer), and applies the import fixes Chainer 7.8.1 needs on new setuptools."""

import pytest

pytest.importorskip(
    "ns_plugins.chainer",
    reason="needs Chainer: pip install '.[chainer]' (from the clone)",
    exc_type=ImportError,  # ns_plugins.chainer raises ImportError naming the extra
)
from ns_plugins.chainer import import_fixes  # noqa: E402

import_fixes.apply()
