"""Let Chainer 7.8.1 import on stacks it predates.

Chainer 7.8.1 breaks at import time on three things that have moved on:

* setuptools >= 74 (Python <= 3.11): ``chainer._environment_check`` imports
  ``numpy.distutils``, which needs ``distutils.msvccompiler``, gone from setuptools' copy;
* setuptools without ``pkg_resources`` (removed in setuptools 81): the same module and
  ``chainer.testing`` import it;
* numpy 2 (and Python 3.12, which has no numpy 1.x wheels for current setups): a few
  removed numpy aliases are read at import time (``numpy.sctypes``).

``apply()`` fixes these without touching Chainer's files. It must run before ``chainer`` is
imported; it imports neither Chainer nor torch. Nothing here is active unless called.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import sys
import types
import warnings

_applied = False


class ChainerImportError(ImportError):
    """A Chainer code path that cannot work on this stack, with the reason."""


def _environment_check_module() -> types.ModuleType:
    """Stand-in for ``chainer._environment_check``.

    The original only emits warnings (macOS BLAS, optional package versions) and needs
    ``numpy.distutils`` and ``pkg_resources`` for that. This one keeps the version warnings,
    read through ``importlib.metadata``.
    """
    mod = types.ModuleType("chainer._environment_check")
    mod.__file__ = __file__

    def check() -> None:
        if sys.version_info[:3] == (3, 5, 0):  # kept from the original
            raise ChainerImportError("Chainer does not work with Python 3.5.0.")
        chainer = sys.modules.get("chainer")
        deps = getattr(getattr(chainer, "_version", None), "_optional_dependencies", [])
        for dep in deps:
            for pkg in dep["packages"]:
                try:
                    version = importlib.metadata.version(pkg)
                except importlib.metadata.PackageNotFoundError:
                    continue
                if not _version_matches(version, dep["specifier"]):
                    warnings.warn(
                        f"{dep['name']} ({pkg}) version {version} may not be compatible with "
                        f"this version of Chainer (wants {dep['specifier']}); see {dep['help']}",
                        stacklevel=2,
                    )

    mod.check = check
    return mod


def _version_matches(version: str, specifier: str) -> bool:
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # without packaging, say nothing rather than guess
        return True
    return SpecifierSet(specifier).contains(version, prereleases=True)


def _pkg_resources_module() -> types.ModuleType:
    """Minimal ``pkg_resources`` for ``chainer.testing`` (``with_requires``) when setuptools
    no longer ships one. Only the names Chainer uses exist."""
    mod = types.ModuleType("pkg_resources")
    mod.__file__ = __file__

    class ResolutionError(Exception):
        pass

    class DistributionNotFound(ResolutionError):
        pass

    class VersionConflict(ResolutionError):
        pass

    def require(*requirements):
        from packaging.requirements import Requirement

        for text in requirements:
            req = Requirement(text)
            try:
                version = importlib.metadata.version(req.name)
            except importlib.metadata.PackageNotFoundError:
                raise DistributionNotFound(text) from None
            if not req.specifier.contains(version, prereleases=True):
                raise VersionConflict(f"{req.name} {version} does not satisfy {text}")
        return []

    class WorkingSet:
        def require(self, *requirements):
            return require(*requirements)

    def get_distribution(name):
        return types.SimpleNamespace(project_name=name, version=importlib.metadata.version(name))

    mod.ResolutionError = ResolutionError
    mod.DistributionNotFound = DistributionNotFound
    mod.VersionConflict = VersionConflict
    mod.require = require
    mod.WorkingSet = WorkingSet
    mod.get_distribution = get_distribution
    return mod


class _FallbackFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves a stand-in module only when no real one can be found (last on sys.meta_path)."""

    def __init__(self, name: str, factory):
        self.name = name
        self.factory = factory

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return self.factory()

    def exec_module(self, module):
        pass


# numpy 2 removed these; Chainer 7.8.1 reads them (numpy.sctypes at import time).
def _numpy_sctypes() -> dict:
    import numpy

    return {
        "int": [numpy.int8, numpy.int16, numpy.int32, numpy.int64],
        "uint": [numpy.uint8, numpy.uint16, numpy.uint32, numpy.uint64],
        "float": [numpy.float16, numpy.float32, numpy.float64, numpy.longdouble],
        "complex": [numpy.complex64, numpy.complex128, numpy.clongdouble],
        "others": [bool, object, bytes, str, numpy.void],
    }


def _fix_numpy() -> None:
    import numpy

    if "sctypes" not in vars(numpy):
        numpy.sctypes = _numpy_sctypes()


def _fix_environment_check() -> None:
    if "chainer._environment_check" in sys.modules:
        return
    # The original imports numpy.distutils (gone in numpy 2 and Python 3.12, broken by
    # setuptools >= 74) and pkg_resources; only its warnings are lost by replacing it.
    sys.modules["chainer._environment_check"] = _environment_check_module()


def _fix_pkg_resources() -> None:
    if "pkg_resources" in sys.modules:
        return
    if any(isinstance(f, _FallbackFinder) and f.name == "pkg_resources" for f in sys.meta_path):
        return
    try:
        found = importlib.util.find_spec("pkg_resources") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        sys.meta_path.append(_FallbackFinder("pkg_resources", _pkg_resources_module))


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def explain(exc: BaseException) -> ChainerImportError:
    """An error naming the Chainer module that failed on this stack, and why."""
    where = "chainer"
    tb = exc.__traceback__
    while tb is not None:  # the innermost frame inside Chainer names the broken part
        path = tb.tb_frame.f_code.co_filename.replace(os.sep, "/")
        if "/chainer/" in path:
            where = "chainer/" + path.rsplit("/chainer/", 1)[1]
        tb = tb.tb_next
    stack = (
        f"Python {sys.version.split()[0]}, numpy {_version('numpy')}, "
        f"setuptools {_version('setuptools')}"
    )
    return ChainerImportError(
        f"Chainer {_version('chainer')} fails in {where} on {stack}, which ns_plugins' import "
        f"fixes do not cover: {type(exc).__name__}: {exc}"
    )


def apply() -> None:
    """Make ``import chainer`` work here. Idempotent; must run before Chainer is imported."""
    global _applied
    if _applied:
        return
    if "chainer" in sys.modules:
        _applied = True  # already imported (so it worked); nothing left to fix
        return
    # Children started by the program (they may import distutils themselves) get the setting
    # Chainer needs on Python <= 3.11 with new setuptools.
    os.environ.setdefault("SETUPTOOLS_USE_DISTUTILS", "stdlib")
    _fix_numpy()
    _fix_environment_check()
    _fix_pkg_resources()
    _applied = True
