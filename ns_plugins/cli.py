"""``ns-train``: the Hydra training app (``python train.py`` runs the same thing)."""

from __future__ import annotations

import errno
import logging
import math
import sys
import tempfile
from pathlib import Path

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ns_plugins.config import config_dir

__all__ = ["main"]

log = logging.getLogger("ns_plugins.train")

# OS errors that are the machine's state, not a bug: reported as one line
_FILE_FAULTS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT,
                errno.ENOTDIR, errno.EISDIR}  # fmt: skip


class RunDirCheck(Callback):
    """Hydra callback: the run (or sweep) directory must be writable before anything starts;
    otherwise one line and exit 2, instead of Hydra's traceback when it fails to create it.

    A single run also takes the run directory (``runs.claim_run_dir``) here, before Hydra writes
    its ``.hydra/`` files and log into it: a directory in use by another run, or holding one, is
    refused before anything of the run there is overwritten."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from ns_plugins.errors import UsageError
        from ns_plugins.runs import claim_run_dir

        _check_writable(config.hydra.run.dir)
        try:
            claim_run_dir(config.hydra.run.dir, config.get("ckpt_path"))
        except UsageError as err:
            print(f"ns-train: error: {err}", file=sys.stderr)
            sys.exit(2)

    def on_run_end(self, config: DictConfig, **kwargs) -> None:
        from ns_plugins.runs import release_run_dir

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

    from ns_plugins.errors import UsageError
    from ns_plugins.runs import train

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode is RunMode.MULTIRUN
    try:
        metrics = train(cfg, hydra_cfg.runtime.output_dir)
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
    if metrics.get("interrupted") and not multirun:
        sys.exit(128 + int(metrics["interrupt_signal"]))  # the shell's convention
    return _metric(metrics, cfg.optimized_metric)


def _metric(metrics: dict, name: str | None) -> float | None:
    """``eval/wordsim`` -> metrics["eval"]["wordsim"]; a top-level name (``final_loss``) as is."""
    if name is None:
        return None
    value = metrics
    for part in name.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else math.nan


def main() -> None:
    hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")(_train)()


if __name__ == "__main__":
    main()
