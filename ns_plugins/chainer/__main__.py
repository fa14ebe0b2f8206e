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

import os
import runpy
import sys

from ns_plugins.chainer import autoinstall

USAGE = __doc__.strip().splitlines()[2:6]


def _usage_error(message: str) -> int:
    sys.stderr.write(f"error: {message}\nusage:\n" + "\n".join(USAGE) + "\n")
    return 2


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
        sys.argv = args[1:]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        script = args[0]
        if not os.path.exists(script):
            return _usage_error(f"no such script: {script}")
        sys.argv = args
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
