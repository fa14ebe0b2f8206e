"""``ns-train``: the Hydra training app (``python train.py`` runs the same thing)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ns_plugins.config import config_dir

__all__ = ["main"]


def _train(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from ns_plugins.errors import UsageError
    from ns_plugins.runs import train

    try:
        metrics = train(cfg, HydraConfig.get().runtime.output_dir)
    except UsageError as err:  # a setting or a file, not a bug: no traceback
        print(f"ns-train: error: {err}", file=sys.stderr)
        sys.exit(2)
    if metrics.get("interrupted"):
        sys.exit(128 + int(metrics["interrupt_signal"]))  # the shell's convention


def main() -> None:
    hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")(_train)()


if __name__ == "__main__":
    main()
