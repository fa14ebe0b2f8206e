"""Put the drop-ins into Chainer's own namespaces, take them out again, and look attributes up
the way Chainer's own code does."""

from __future__ import annotations

import dis
import importlib
import types

from ns_plugins.chainer import _fixed  # noqa: F401  (Chainer imports on new stacks after it)

# isort: split
from ns_plugins.chainer import cupy_support

# (module, attribute, drop-in as "module:name" under ns_plugins.chainer, part). The loss modules
# are patched too because Chainer's code reaches the loss, its nodes and the sampler through them.
_TARGETS = [
    ("chainer.functions", "negative_sampling", "functions:negative_sampling", "loss"),
    (
        "chainer.functions.loss.negative_sampling",
        "negative_sampling",
        "functions:negative_sampling",
        "loss",
    ),
    (
        "chainer.functions.loss.negative_sampling",
        "NegativeSamplingFunction",
        "functions:NegativeSamplingFunction",
        "loss",
    ),
    (
        "chainer.functions.loss.negative_sampling",
        "NegativeSamplingFunctionGrad",
        "functions:NegativeSamplingFunctionGrad",
        "loss",
    ),
    ("chainer.links", "NegativeSampling", "links:NegativeSampling", "link"),
    ("chainer.links.loss.negative_sampling", "NegativeSampling", "links:NegativeSampling", "link"),
    ("chainer.utils", "WalkerAlias", "walker_alias:WalkerAlias", "sampler"),
    ("chainer.utils.walker_alias", "WalkerAlias", "walker_alias:WalkerAlias", "sampler"),
]

PARTS = ("loss", "link", "sampler")

# Chainer's own objects, recorded when this module loads (before anything is replaced).
_CHAINER = {
    (module, attr): getattr(importlib.import_module(module), attr)
    for module, attr, _, _ in _TARGETS
}
_originals: dict[tuple[str, str], object] = {}  # what install() replaced
_recoded: dict[object, types.CodeType] = {}  # Chainer's methods install() rebound -> their code


def lookup(module, attr: str, ours):
    """``module.attr`` now, as Chainer's code reads it at call time, so that whatever a program
    or test put there (``mock.patch(..., wraps=...)``, a subclass, install()) is what runs.

    Chainer's own object there stands for ``ours`` while nothing is installed (the drop-ins used
    directly); while install() is active, a part it left out stays Chainer's."""
    found = getattr(module, attr)
    if not _originals and found is _CHAINER.get((module.__name__, attr)):
        return ours
    return found


def _drop_in(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(f"ns_plugins.chainer.{module}"), name)


def install(parts=PARTS) -> None:
    """Replace Chainer's negative sampling with the drop-ins, and let Chainer's GPU check say
    what cannot work on the installed CuPy (``cupy_support``). Idempotent.

    ``parts`` picks what is replaced: ``'loss'`` (``F.negative_sampling`` and its nodes),
    ``'link'`` (``L.NegativeSampling``), ``'sampler'`` (``chainer.utils.WalkerAlias``). The parts
    are independent: the drop-in link calls whatever loss and sampler Chainer's modules hold, so
    ``parts=('loss', 'link')`` keeps Chainer's sampler and reproduces a seeded plain-Chainer run's
    samples. Code that bound the originals before this call (``from chainer.utils import
    WalkerAlias``) keeps them, and they keep working (``_keep_own_name``): install before the
    program imports them for the drop-ins to be used there too.
    """
    parts = _check_parts(parts)
    replacements = [
        (module_name, attr, _drop_in(spec)) for module_name, attr, spec, part in _TARGETS
        if part in parts
    ]  # fmt: skip
    for module_name, attr, replacement in replacements:
        module = importlib.import_module(module_name)
        key = (module_name, attr)
        if key not in _originals:
            _originals[key] = getattr(module, attr)
            _keep_own_name(module, attr, _originals[key])
        setattr(module, attr, replacement)
    # GPU code on CuPy 13/14 learns what cannot work, and why, when it first asks for the GPU
    key = ("chainer.backends.cuda", "check_cuda_available")
    if key not in _originals:
        cuda = importlib.import_module(key[0])
        _originals[key] = cuda.check_cuda_available
        cuda.check_cuda_available = cupy_support.gate(cuda)


def uninstall() -> None:
    """Put Chainer's own objects back. Idempotent."""
    for (module_name, attr), original in list(_originals.items()):
        setattr(importlib.import_module(module_name), attr, original)
        del _originals[(module_name, attr)]
    for function, code in list(_recoded.items()):
        function.__code__ = code
        del _recoded[function]


def _keep_own_name(module, attr: str, original) -> None:
    """Let a Chainer class that ``module.attr`` is about to stop naming keep working.

    Chainer's ``WalkerAlias`` and ``NegativeSampling`` name themselves through their module's
    globals (``super(WalkerAlias, self).__init__()``), so once the module name is the drop-in,
    the class a program imported before install() would fail in ``__init__`` and
    ``device_resident_accept``. Its methods' own global lookups of that name are pointed at an
    extra module global holding the class itself; uninstall() restores their code."""
    if not (
        isinstance(original, type)
        and original.__module__ == module.__name__
        and original.__qualname__ == attr
    ):
        return  # a re-export (chainer.utils.WalkerAlias) or not a class: nothing names itself
    alias = f"_ns_plugins_chainer_own_{attr}"
    vars(module)[alias] = original  # kept after uninstall(): harmless, and no call can miss it
    for member in vars(original).values():
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        functions = (
            [member.fget, member.fset, member.fdel] if isinstance(member, property) else [member]
        )
        for function in functions:
            if isinstance(function, types.FunctionType) and function not in _recoded:
                code = _renamed_globals(function.__code__, attr, alias)
                if code is not function.__code__:
                    _recoded[function] = function.__code__
                    function.__code__ = code


def _renamed_globals(code: types.CodeType, name: str, alias: str) -> types.CodeType:
    """``code`` with its global lookups of ``name`` reading ``alias`` instead (nested code too);
    ``code`` itself when it has none, or when ``name`` is also an attribute or import name there
    (one entry of ``co_names`` serves them all, so it is left alone)."""
    consts = tuple(
        _renamed_globals(c, name, alias) if isinstance(c, types.CodeType) else c
        for c in code.co_consts
    )
    if consts != code.co_consts:
        code = code.replace(co_consts=consts)
    if name not in code.co_names:
        return code
    uses = {
        i.opname for i in dis.get_instructions(code) if i.opcode in dis.hasname and i.argval == name
    }
    if uses != {"LOAD_GLOBAL"}:
        return code
    return code.replace(co_names=tuple(alias if n == name else n for n in code.co_names))


def installed() -> tuple[str, ...]:
    """The parts currently replaced."""
    return tuple(
        p for p in PARTS if any((m, a) in _originals for m, a, _, part in _TARGETS if part == p)
    )


def _check_parts(parts) -> tuple[str, ...]:
    if isinstance(parts, str):
        parts = (parts,)
    parts = tuple(parts)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown part(s) {unknown}; choose from {list(PARTS)}")
    return parts
