"""Opt-in installation of the drop-ins through the ``NS_PLUGINS_CHAINER`` environment variable.

``NS_PLUGINS_CHAINER=1`` (or ``all``) replaces everything; a comma list such as ``loss,link``
replaces only those parts (see ``installer.PARTS``); unset, empty or ``0`` does nothing. The
variable is read at interpreter start by ``ns_plugins_chainer.pth`` (installed with the package)
and, for processes started under ``python -m ns_plugins.chainer``, by the ``sitecustomize`` the
runner puts on ``PYTHONPATH``; children inherit both, so programs that spawn workers are covered.

Nothing is imported eagerly: a finder waits for ``import chainer``, applies the import fixes
before it and installs the drop-ins right after it.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import warnings

ENV = "NS_PLUGINS_CHAINER"
PARTS = ("loss", "link", "sampler")  # same as installer.PARTS, which imports Chainer
# Set once a bad value has been reported, so that the processes inheriting it stay quiet.
_REPORTED = "NS_PLUGINS_CHAINER_REPORTED"


def requested_parts(value: str | None = None, source: str = ENV) -> tuple[str, ...]:
    """The parts asked for by ``value`` (default: the environment variable); ``source`` names
    where the value came from in error messages."""
    value = os.environ.get(ENV, "") if value is None else value
    value = value.strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return ()
    if value in ("1", "true", "yes", "on", "all"):
        return PARTS
    parts = tuple(p.strip() for p in value.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(
            f"{source}={value!r}: unknown part(s) {unknown}; use 1 (all parts), 0 (none) or a "
            f"comma list of {', '.join(PARTS)}"
        )
    return parts


class _ChainerImportHook(importlib.abc.MetaPathFinder):
    """Runs the import fixes before ``chainer`` loads and installs the drop-ins after."""

    def __init__(self, parts):
        self.parts = parts

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "chainer":
            return None
        sys.meta_path.remove(self)
        from ns_plugins.chainer import import_fixes

        import_fixes.apply()
        spec = importlib.util.find_spec("chainer")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module
        parts = self.parts

        def exec_then_install(module):
            try:
                exec_module(module)
            except Exception as exc:
                raise import_fixes.explain(exc) from exc
            from ns_plugins.chainer.installer import install

            install(parts)

        spec.loader.exec_module = exec_then_install
        return spec


def activate(parts=PARTS) -> None:
    """Install now if Chainer is loaded, else as soon as it is imported."""
    if not parts:
        return
    if "chainer" in sys.modules:
        from ns_plugins.chainer.installer import install

        install(parts)
        return
    if not any(isinstance(f, _ChainerImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _ChainerImportHook(tuple(parts)))


def activate_from_env() -> None:
    """Install what ``NS_PLUGINS_CHAINER`` asks for. A value that names no parts installs nothing
    and warns once (not in every process that inherits it), instead of failing start-up."""
    try:
        parts = requested_parts()
    except ValueError as exc:
        value = os.environ.get(ENV, "")
        if os.environ.get(_REPORTED) != value:
            os.environ[_REPORTED] = value
            warnings.warn(f"{exc}; the Chainer drop-ins are not installed", stacklevel=2)
        return
    activate(parts)
