"""Chainer 7.8.1 on CuPy 13 and 14: say what cannot work, and why, before GPU code runs.

Chainer 7.8.1 was written for CuPy 7, which does not run on current GPUs. Its CUDA backend
imports on CuPy 13 and 14, and the paths a word2vec program uses (EmbedID, Linear, the
negative-sampling loss, optimizers, Trainer, ``to_gpu`` / ``to_device``) use only CuPy APIs that
both still have. What does not work is reported when the program first asks for the GPU
(Chainer's ``check_cuda_available``), so CPU programs stay quiet:

* Chainer's CUDA backend off (CuPy or a CUDA library it loads missing): a RuntimeError naming
  the library, instead of Chainer's generic "not correctly set up";
* CuPy 14 has no cuDNN module: Chainer's cuDNN paths are off and its own CUDA kernels run
  (``use_cudnn='always'`` cannot work); Chainer's advice to reinstall CuPy with cuDNN is dropped;
* a CuPy major version other than 13 or 14: a warning that it is not one these paths were
  checked with.
"""

from __future__ import annotations

import sys
import warnings

CHECKED = (13, 14)


def cupy_version() -> str | None:
    """The version of the CuPy Chainer imported (None when it did not import)."""
    cupy = sys.modules.get("cupy")
    return getattr(cupy, "__version__", None)


def findings(cuda) -> tuple[list[str], list[str]]:
    """(errors, notes) for Chainer's CUDA backend module ``cuda``: errors stop GPU code, notes
    are warnings."""
    version = cupy_version()
    if version is None:
        return [
            "CuPy is not installed or does not import "
            f"({getattr(cuda, '_resolution_error', 'no cupy module')}): pip install "
            "'.[cuda]' from the clone (cupy-cuda12x) or cupy-cuda13x"
        ], []
    major = int(version.split(".")[0])
    errors, notes = [], []
    if not cuda.available:
        reason = " ".join(str(getattr(cuda, "_resolution_error", "unknown")).split())
        errors.append(
            f"Chainer's CUDA backend did not start on CuPy {version}: {reason} (Chainer loads "
            "cupy.cuda.cublas, cupyx.scipy.linalg and cupyx.scipy.special; install the CUDA "
            "libraries CuPy names: a CUDA toolkit, or with CuPy 14 pip install "
            "'cupy-cuda12x[ctk]')"
        )
    if major not in CHECKED:
        notes.append(
            f"CuPy {version} is not a version the runner's GPU paths were checked with "
            f"({' or '.join(map(str, CHECKED))}); Chainer 7.8.1 itself expects CuPy 7"
        )
    if cuda.available and not cuda.cudnn_enabled and major >= 14:
        notes.append(
            f"CuPy {version} has no cuDNN module: Chainer's cuDNN paths are off and its own CUDA "
            "kernels run instead (chainer.config.use_cudnn='always' cannot work)"
        )
    return errors, notes


def gate(cuda):
    """A ``check_cuda_available`` for Chainer's module ``cuda`` that reports ``findings``
    (errors as RuntimeError, notes as one warning each, once) before Chainer's own check."""
    original = cuda.check_cuda_available
    reported = []

    def check_cuda_available():
        errors, notes = findings(cuda)
        if errors:
            raise RuntimeError("; ".join(errors))
        if not reported:
            reported.append(True)
            for note in notes:
                warnings.warn(note, stacklevel=3)
            if int(cupy_version().split(".")[0]) >= 14:
                # Chainer would advise reinstalling CuPy with cuDNN, which CuPy 14 cannot do;
                # its check reads the flag from the module's (now this) check_cuda_available
                check_cuda_available._already_warned = True
        original()

    check_cuda_available.__doc__ = original.__doc__
    check_cuda_available.__wrapped__ = original
    return check_cuda_available


def report() -> int:
    """Print what GPU code under the runner would meet here; 0 when it can run."""
    from chainer.backends import cuda

    errors, notes = findings(cuda)
    print(f"chainer CUDA backend: {'on' if cuda.available else 'off'}, CuPy {cupy_version()}")
    if not errors:
        try:
            count = cuda.cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # noqa: BLE001 - the driver's own error says why
            count = 0
            errors.append(f"no usable CUDA device: {type(exc).__name__}: {exc}")
        else:
            if count == 0:
                errors.append("no CUDA device")
        print(f"CUDA devices: {count}")
    for note in notes:
        print(f"note: {note}")
    for error in errors:
        print(f"error: {error}")
    return 1 if errors else 0
