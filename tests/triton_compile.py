"""Compiling Triton kernels for sm_90 without a GPU: the tests' shared subprocess runner (the
interpreter must be off, which a process that imported Triton under it cannot undo)."""

import os
import subprocess
import sys
from pathlib import Path


def compile_in_subprocess(script: str) -> None:
    """Run ``script`` (which prints ``compiled`` at its end) in a fresh Python without
    ``TRITON_INTERPRET``, with this checkout first on the path."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-4000:]
