"""Put the drop-ins into Chainer's own namespaces, and take them out again."""

from __future__ import annotations

import importlib

from ns_plugins.chainer.functions import NegativeSamplingFunction, negative_sampling
from ns_plugins.chainer.links import NegativeSampling
from ns_plugins.chainer.walker_alias import WalkerAlias

# (module, attribute, replacement, part). The loss modules are patched too because Chainer's
# link calls ``negative_sampling.negative_sampling`` and ``walker_alias.WalkerAlias`` through them.
_TARGETS = [
    ("chainer.functions", "negative_sampling", negative_sampling, "loss"),
    ("chainer.functions.loss.negative_sampling", "negative_sampling", negative_sampling, "loss"),
    (
        "chainer.functions.loss.negative_sampling",
        "NegativeSamplingFunction",
        NegativeSamplingFunction,
        "loss",
    ),
    ("chainer.links", "NegativeSampling", NegativeSampling, "link"),
    ("chainer.links.loss.negative_sampling", "NegativeSampling", NegativeSampling, "link"),
    ("chainer.utils", "WalkerAlias", WalkerAlias, "sampler"),
    ("chainer.utils.walker_alias", "WalkerAlias", WalkerAlias, "sampler"),
]

PARTS = ("loss", "link", "sampler")

_originals: dict[tuple[str, str], object] = {}


def install(parts=PARTS) -> None:
    """Replace Chainer's negative sampling with the drop-ins. Idempotent.

    ``parts`` picks what is replaced: ``'loss'`` (``F.negative_sampling``), ``'link'``
    (``L.NegativeSampling``), ``'sampler'`` (``chainer.utils.WalkerAlias``). Keeping Chainer's
    sampler (``parts=('loss', 'link')``) reproduces a seeded plain-Chainer run's samples.
    Code that bound the originals before this call (``from chainer.functions import
    negative_sampling``) keeps them: install before the program imports them. While installed,
    Chainer's original ``NegativeSampling`` and ``WalkerAlias`` classes cannot be instantiated
    from such old references (their ``__init__`` calls ``super(Name, self)`` through the patched
    module name).
    """
    parts = _check_parts(parts)
    for module_name, attr, replacement, part in _TARGETS:
        if part not in parts:
            continue
        module = importlib.import_module(module_name)
        key = (module_name, attr)
        if key not in _originals:
            _originals[key] = getattr(module, attr)
        setattr(module, attr, replacement)


def uninstall() -> None:
    """Put Chainer's own objects back. Idempotent."""
    for (module_name, attr), original in list(_originals.items()):
        setattr(importlib.import_module(module_name), attr, original)
        del _originals[(module_name, attr)]


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
