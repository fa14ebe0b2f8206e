# Put first on PYTHONPATH by ``python -m ns_plugins.chainer`` so that Python processes the
# program starts install the drop-ins too; then runs the sitecustomize this one shadows.
import importlib.machinery
import importlib.util
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))

try:
    from ns_plugins.chainer.autoinstall import activate_from_env

    activate_from_env()
except ImportError as exc:  # Chainer or ns_plugins missing in this interpreter
    sys.stderr.write(f"ns_plugins.chainer: auto-install skipped: {exc}\n")

_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here]
)
if _spec is not None and _spec.loader is not None:
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
