"""``ns-train``: the Hydra training app (``python train.py`` runs the same thing)."""

from __future__ import annotations

import logging
import math
import sys

import hydra
from omegaconf import DictConfig

from ns_plugins.config import config_dir

__all__ = ["main"]

log = logging.getLogger("ns_plugins.train")


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
    except UsageError as err:  # a setting or a file, not a bug: no traceback
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
