import importlib.util
import os
import sys

# Subprocesses that import Chainer 7.8.1 on Python 3.11 need the stdlib distutils on
# setuptools >= 74. Python 3.12 has none: there the variable would stop setuptools importing.
if sys.version_info < (3, 12):
    os.environ.setdefault("SETUPTOOLS_USE_DISTUTILS", "stdlib")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:  # the Chainer environment has no torch; its GPU tests run on cupy
        try:
            import cupy

            return cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:  # noqa: BLE001 - no cupy, no driver or no device
            return False
    return torch.cuda.is_available()


HAS_CUDA = _has_cuda()
if not HAS_CUDA:
    # Triton kernels run in its interpreter on CPU tensors; must be set before triton is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _has_chainer() -> bool:
    if importlib.util.find_spec("chainer") is None:
        return False
    try:
        from ns_plugins.chainer import import_fixes

        import_fixes.apply()  # Chainer 7.8.1 does not import on newer setuptools otherwise
        import chainer  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken install counts as missing
        return False
    return True


def pytest_collection_modifyitems(config, items):
    chainer_ok = None
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if "chainer" in item.keywords:
            if chainer_ok is None:
                chainer_ok = _has_chainer()
            if not chainer_ok:
                item.add_marker(pytest.mark.skip(reason="needs Chainer: pip install '.[chainer]'"))


@pytest.fixture
def rng(request):
    """A generator with a fresh seed per test, printed and recorded so that a failure can be
    replayed with NS_PLUGINS_TEST_SEED=<seed>."""
    fixed = os.environ.get("NS_PLUGINS_TEST_SEED")
    seed = int(fixed) if fixed else int(np.random.SeedSequence().entropy % 2**32)
    request.node.user_properties.append(("seed", seed))
    print(f"seed={seed}")
    return np.random.default_rng(seed)
