"""Chainer 7.8.1 on CuPy 13/14 under the runner: the version and import gates, checked on a CPU
(a CuPy module of a given version stands in; no device is needed)."""

import subprocess
import sys
import types
import warnings

import chainer_setup  # noqa: F401  (skips without Chainer, applies the import fixes)
import pytest

# isort: split

from chainer.backends import cuda

import ns_plugins.chainer as nsc

pytestmark = pytest.mark.chainer


@pytest.fixture
def stack(monkeypatch):
    """Set the CuPy version Chainer sees and the state of its CUDA backend."""

    def set_stack(version, available=True, cudnn=True, reason=None):
        if version is None:
            monkeypatch.setitem(sys.modules, "cupy", None)
        else:
            monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(__version__=version))
        monkeypatch.setattr(cuda, "available", available)
        monkeypatch.setattr(cuda, "cudnn_enabled", cudnn)
        monkeypatch.setattr(cuda, "_cudnn_disabled_by_user", False, raising=False)
        monkeypatch.setattr(cuda, "_resolution_error", reason, raising=False)

    return set_stack


@pytest.fixture
def installed():
    nsc.install()
    try:
        yield
    finally:
        nsc.uninstall()


def test_gate_is_installed_and_removed():
    original = cuda.check_cuda_available
    try:
        nsc.install()
        nsc.install()
        assert cuda.check_cuda_available is not original
        assert cuda.check_cuda_available.__wrapped__ is original
    finally:
        nsc.uninstall()
    assert cuda.check_cuda_available is original


@pytest.mark.parametrize("version", ["13.6.0", "14.2.0"])
def test_checked_versions_run_quietly(stack, installed, version):
    stack(version, cudnn=version.startswith("13"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if version.startswith("13"):
            cuda.check_cuda_available()
            return
    with pytest.warns(UserWarning) as record:
        cuda.check_cuda_available()
        cuda.check_cuda_available()  # once only
    messages = [str(w.message) for w in record]
    assert len(messages) == 1
    assert "CuPy 14.2.0 has no cuDNN module" in messages[0]
    # Chainer's own advice (reinstall CuPy with cuDNN) does not apply to CuPy 14
    assert not any("reinstall CuPy" in m for m in messages)


def test_backend_that_did_not_start_names_the_library(stack, installed):
    reason = 'Failure finding "libcublasLt.so.12": No such file'
    stack("14.2.0", available=False, reason=ImportError(reason))
    with pytest.raises(RuntimeError) as info:
        cuda.check_cuda_available()
    message = str(info.value)
    assert "\n" not in message
    assert "CuPy 14.2.0" in message and "libcublasLt.so.12" in message


def test_missing_cupy(stack, installed):
    stack(None, available=False, reason=ImportError("No module named 'cupy'"))
    with pytest.raises(RuntimeError, match=r"CuPy is not installed.*'\.\[cuda\]' from the clone"):
        cuda.check_cuda_available()


@pytest.mark.parametrize("version", ["7.8.0", "12.3.0", "15.0.0"])
def test_unchecked_versions_warn(stack, installed, version):
    stack(version)
    with pytest.warns(UserWarning, match=f"CuPy {version} is not a version .* checked with"):
        cuda.check_cuda_available()


def test_check_gpu_command():
    """Here (no GPU, maybe no CuPy) the command says why GPU code cannot run, and exits 1."""
    proc = subprocess.run(
        [sys.executable, "-m", "ns_plugins.chainer", "--check-gpu"],
        capture_output=True,
        text=True,
    )
    if proc.returncode == 0:
        assert "CUDA devices: " in proc.stdout and "error:" not in proc.stdout
        return
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "error: " in proc.stdout and "Traceback" not in proc.stderr
