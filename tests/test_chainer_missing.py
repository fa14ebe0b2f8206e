"""Without Chainer, importing ns_plugins.chainer says how to get it."""

import importlib
import sys

import pytest


def test_import_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "chainer", None)  # find_spec("chainer") -> None
    for name in [
        m for m in sys.modules if m == "ns_plugins.chainer" or m.startswith("ns_plugins.chainer.")
    ]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=r"pip install '\.\[chainer\]' \(from the clone\)"):
        importlib.import_module("ns_plugins.chainer")
