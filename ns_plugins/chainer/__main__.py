"""Run an unchanged Chainer program with the drop-ins installed.

    python -m ns_plugins.chainer [--parts loss,link,sampler] SCRIPT [ARGS...]
    python -m ns_plugins.chainer [--parts ...] -m MODULE [ARGS...]
    python -m ns_plugins.chainer --check-gpu     (what GPU code would meet here; exit 1 if it
                                                  cannot run)

Chainer's import problems on new stacks are fixed first (see ``import_fixes``), and
``NS_PLUGINS_CHAINER`` is exported so that Python processes the program starts get the
drop-ins too.
"""

from __future__ import annotations

import importlib.util
import os
import pkgutil
import runpy
import sys

from ns_plugins.chainer import autoinstall

USAGE = __doc__.strip().splitlines()[2:6]
PROG = "ns_plugins.chainer"


def _error(message: str) -> int:
    """One line naming the problem, last on stderr, and exit status 2 (as argparse does)."""
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return 2


def _usage_error(message: str) -> int:
    sys.stderr.write("usage:\n" + "\n".join(USAGE) + "\n")
    return _error(message)


def _container(script: str):
    """The importer of a directory or zip file that ``python SCRIPT`` runs the ``__main__`` of
    (as ``runpy.run_path`` finds it), or None for a script file."""
    return pkgutil.get_importer(os.path.abspath(script))


def _module_problem(name: str) -> str | None:
    """Why ``python -m NAME`` could not start NAME, or None. Finding it imports its parent
    packages, as ``python -m`` does."""
    if name.startswith("."):
        return f"relative module names are not supported: {name}"
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:  # a parent package missing, or not a package
        return f"no module named {name!r} ({type(exc).__name__}: {exc})"
    if spec is None:
        return f"no module named {name!r}"
    if spec.submodule_search_locations is not None:  # a package runs its __main__
        try:
            main = importlib.util.find_spec(f"{name}.__main__")
        except (ImportError, ValueError):
            main = None
        if main is None:
            return f"no module named '{name}.__main__'; {name!r} is a package and cannot be run"
    return None


def _export_to_children(parts) -> None:
    os.environ[autoinstall.ENV] = ",".join(parts)
    boot = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_boot")
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = [boot, package_root] + [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p
    ]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parts = autoinstall.PARTS
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if args == ["--check-gpu"]:
        autoinstall.activate(autoinstall.PARTS)
        from ns_plugins.chainer import cupy_support

        return cupy_support.report()
    if args and args[0].startswith("--parts"):
        value = args.pop(0).partition("=")[2] or (args.pop(0) if args else "")
        try:
            parts = autoinstall.requested_parts(value, source="--parts")
        except ValueError as exc:
            return _usage_error(str(exc))
    if not args:
        return _usage_error("no script given")

    _export_to_children(parts)
    autoinstall.activate(parts)

    if args[0] == "-m":
        if len(args) < 2:
            return _usage_error("-m needs a module name")
        sys.argv = args[1:]  # (finding the module imports its parents, as python -m does)
        problem = _module_problem(args[1])
        if problem:
            return _error(problem)
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        script = args[0]
        if not os.path.exists(script):
            return _usage_error(f"no such script: {script}")
        container = _container(script)
        if container is not None and container.find_spec("__main__") is None:
            return _error(f"can't find '__main__' module in {script!r}")
        sys.argv = args
        # as python does: the script's directory, or the directory or zip file itself
        where = os.path.abspath(script)
        sys.path[0] = where if container is not None else os.path.dirname(where)
        runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
