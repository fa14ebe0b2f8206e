"""Run reports: a self-contained ``report.html`` (figures inlined) for a training run.

``build_report(PATH)`` or ``python -m ns_plugins.report PATH`` with a run directory, a vectors
file (.txt/.bin) or a checkpoint (Lightning .ckpt, hogwild .npz).
"""

from ns_plugins.report.build import build_report
from ns_plugins.report.run import Run, load_run

__all__ = ["build_report", "load_run", "Run"]
