"""``ns-train``: the Hydra training app (``python train.py`` runs the same thing)."""

from __future__ import annotations

import errno
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ns_plugins.app.config import config_dir

__all__ = ["main"]

log = logging.getLogger("ns_plugins.train")

# OS errors that are the machine's state, not a bug: reported as one line
_FILE_FAULTS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT,
                errno.ENOTDIR, errno.EISDIR}  # fmt: skip


class RunDirCheck(Callback):
    """Hydra callback: the run (or sweep) directory must be writable before anything starts;
    otherwise one line and exit 2, instead of Hydra's traceback when it fails to create it.

    A single run also takes the run directory (``rundir.claim_run_dir``) here, before Hydra writes
    its ``.hydra/`` files and log into it: a directory in use by another run, or holding one, is
    refused before anything of the run there is overwritten."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from ns_plugins.app.rundir import claim_run_dir
        from ns_plugins.errors import UsageError

        _check_writable(config.hydra.run.dir)
        try:
            claim_run_dir(config.hydra.run.dir, config.get("ckpt_path"))
        except UsageError as err:
            print(f"ns-train: error: {err}", file=sys.stderr)
            sys.exit(2)

    def on_run_end(self, config: DictConfig, **kwargs) -> None:
        from ns_plugins.app.rundir import release_run_dir

        release_run_dir(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _check_writable(config.hydra.sweep.dir)


def _check_writable(directory) -> None:
    path = Path(str(directory))
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        print(f"ns-train: error: cannot write the run directory {path}: {err.strerror}",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)


def _train(cfg: DictConfig) -> float | None:
    """One job. Returns ``optimized_metric`` (NaN when it is missing or the job failed), which
    Hydra's sweepers optimise. A single run exits 2 on bad input with one line; in a multirun a bad
    job is logged and the sweep goes on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ns_plugins.app.launch import train
    from ns_plugins.app.signals import RankStopped, RunInterrupted, interrupt_received
    from ns_plugins.errors import UsageError

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode is RunMode.MULTIRUN
    start = time.monotonic()
    try:
        metrics = train(cfg, hydra_cfg.runtime.output_dir)
    except RunInterrupted as err:  # before training: nothing to save; a sweep stops too
        print(f"ns-train: {err}", file=sys.stderr)
        sys.exit(128 + err.signum)
    except RankStopped as err:  # a rank was killed: rank 0 saved where it was
        print(f"ns-train: error: {err}", file=sys.stderr)
        sys.exit(err.exit_status)
    except (UsageError, OSError) as err:  # a setting or a file, not a bug: no traceback
        if isinstance(err, OSError):
            if err.errno not in _FILE_FAULTS:
                raise
            err = f"{err.filename or 'a file'}: {err.strerror}"  # disk full, no permission, ...
        if multirun:
            log.error("job %s failed: %s", hydra_cfg.job.num, err)
            return math.nan
        print(f"ns-train: error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception:
        # a signal while the corpus was prepared can break the code it lands in (numba compiling a
        # kernel raises its own error): the run was interrupted all the same
        err = interrupt_received()
        if err is None:
            raise
        print(f"ns-train: {err}", file=sys.stderr)
        sys.exit(128 + err.signum)
    if metrics:  # rank 0
        _announce(summary(metrics, Path(hydra_cfg.runtime.output_dir), time.monotonic() - start))
    if metrics.get("interrupted") and not multirun:
        sys.exit(128 + int(metrics["interrupt_signal"]))  # the shell's convention
    return _metric(metrics, cfg.optimized_metric)


# The scores the summary names, in metrics.json's "eval", with how each is shown.
_SUMMARY_SCORES = (
    ("wordsim353", "WordSim-353", "{:.3f}"),
    ("simlex999", "SimLex-999", "{:.3f}"),
    ("analogy", "analogies", "{:.1%}"),
    ("planted_purity", "planted purity", "{:.3f}"),
    ("planted_analogy", "planted analogies", "{:.1%}"),
)


def summary(metrics: dict, run_dir: Path, seconds: float) -> list[str]:
    """The lines that end a run: time, epochs and steps, words/s (``Throughput``'s definition),
    the scores computed, and where the report, metrics and vectors are."""
    from ns_plugins.app.progress import human_rate

    done = (
        f"stopped by signal {metrics.get('interrupt_signal')} after"
        if metrics.get("interrupted")
        else "done in"
    )
    epochs = metrics.get("epochs_completed", 0)
    head = (
        f"ns-train: {done} {seconds:.0f} s, {epochs} epoch{'s' if epochs != 1 else ''} "
        f"({metrics.get('global_step', 0)} steps), "
        f"{human_rate(metrics.get('words_per_sec'))} words/s"
    )
    scores = metrics.get("eval") or {}
    shown = []
    for key, name, fmt in _SUMMARY_SCORES:
        if key in scores:
            value = scores[key]
            text = fmt.format(value) if isinstance(value, int | float) else "n/a"
            if key == "planted_purity" and "planted_learned" in metrics:
                text += " (learned)" if metrics["planted_learned"] else " (NOT learned)"
            shown.append(f"{name} {text}")
    if not shown:
        shown = ["no scores (give evaluation files: eval.wordsim=..., see --help)"]
    lines = [f"{head}; {', '.join(shown)}"]
    if metrics.get("interrupted") and metrics.get("interrupt_checkpoint"):
        lines.append(f"ns-train: resume with ckpt_path={metrics['interrupt_checkpoint']}")
    report = run_dir / "report.html"
    outputs = [name for name in ("metrics.json", "vectors.txt", "vectors.bin", "ns-train.log")
               if (run_dir / name).is_file()]  # fmt: skip
    beside = ", ".join(outputs) or "nothing else"
    if report.is_file():
        lines.append(f"ns-train: report: {report} (beside it: {beside})")
    else:
        lines.append(f"ns-train: no report.html; run directory: {run_dir} ({beside})")
    return lines


def _announce(lines: list[str]) -> None:
    """Print ``lines`` to stdout and write them to the run's log file (not to the console twice)."""
    from ns_plugins.app.progress import log_to_files

    for line in lines:
        print(line, flush=True)
        log_to_files(log, logging.INFO, "%s", line)


def _metric(metrics: dict, name: str | None) -> float | None:
    """``eval/wordsim`` -> metrics["eval"]["wordsim"]; a top-level name (``final_loss``) as is."""
    if name is None:
        return None
    value = metrics
    for part in name.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else math.nan


# Choices whose Hydra plugin comes with an extra: (override, plugin module, install command).
# Without the plugin Hydra fails with "Could not find 'hydra/sweeper/optuna'" and the search path.
_PLUGIN_CHOICES = (
    ("hparams_search=optuna", "hydra_plugins.hydra_optuna_sweeper", 'pip install ".[sweep]"'),
    ("hydra/sweeper=optuna", "hydra_plugins.hydra_optuna_sweeper", 'pip install ".[sweep]"'),
)


def _check_plugins(args: list[str]) -> None:
    """One line and exit 2 for a command-line choice whose Hydra plugin is not installed."""
    import importlib.util

    for arg in args:
        choice = arg.lstrip("+~").removeprefix("override ")
        for name, module, install in _PLUGIN_CHOICES:
            if choice == name and importlib.util.find_spec(module) is None:
                print(f"ns-train: error: {arg} needs {module.split('.')[-1]}, which is not "
                      f"installed: {install} (from the clone)", file=sys.stderr)  # fmt: skip
                sys.exit(2)


def main() -> None:
    _check_plugins(sys.argv[1:])
    hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")(_train)()


if __name__ == "__main__":
    main()
