"""What a finished run writes, each once: vectors (text and binary), ``vocab.tsv``,
``metrics.json``, the ground truth of a synthetic corpus and ``report.html``; ``writing`` names
the file a failed write (a full disk) did not write and leaves no ``.part`` behind."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


# Neighbour purity at which the synthetic corpus's clusters count as learned (chance is about
# 1 / number of clusters).
PLANTED_PURITY_LEARNED = 0.8


def export_run(run_dir: Path, words, vectors, counts) -> None:
    """The vectors in word2vec text and binary formats and the vocabulary with counts."""
    from ns_plugins.embeddings import save_word2vec

    run_dir.mkdir(parents=True, exist_ok=True)
    for name, binary in (("vectors.txt", False), ("vectors.bin", True)):
        with writing(run_dir / name):  # save_word2vec writes <name>.part and renames it
            save_word2vec(run_dir / name, words, vectors, binary=binary)
    with writing(run_dir / "vocab.tsv") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for w, c in zip(words, counts):
                f.write(f"{w}\t{int(c)}\n")
        tmp.replace(run_dir / "vocab.tsv")


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
        tmp.replace(path)


@contextlib.contextmanager
def writing(path):
    """Write ``path`` through ``<path>.part`` (yielded; the block renames it into place). When the
    block fails the ``.part`` file goes, and an OSError about it (a full disk: ENOSPC, EDQUOT; the
    write itself names no file) names ``path``, the file a user knows."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    try:
        yield tmp
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno and str(err.filename) in ("None", str(tmp)):
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def finish_run(cfg: DictConfig, run_dir: Path, metrics: dict, ground_truth: dict | None) -> None:
    """metrics.json, the run's ground truth (synthetic corpora) next to it, the report, and a
    closing log line."""
    if "planted_purity" in metrics["eval"] and metrics["eval"]["planted_purity"] is not None:
        metrics["planted_learned"] = metrics["eval"]["planted_purity"] >= PLANTED_PURITY_LEARNED
    if ground_truth is not None:
        write_json(run_dir / "ground_truth.json", ground_truth)
    write_json(run_dir / "metrics.json", metrics)
    write_report(run_dir)
    if metrics.get("interrupted"):
        log.warning(
            "interrupted by signal %d; resume with ckpt_path=%s",
            metrics["interrupt_signal"],
            metrics["interrupt_checkpoint"],
        )
    elif "planted_learned" in metrics:
        verdict = "learned" if metrics["planted_learned"] else "NOT learned"
        log.info(
            "planted structure %s: neighbour purity %.3f (threshold %.2f)",
            verdict,
            metrics["eval"]["planted_purity"],
            PLANTED_PURITY_LEARNED,
        )


def write_report(run_dir: Path) -> None:
    try:
        from ns_plugins.report import build_report
    except ImportError:
        return
    try:
        build_report(run_dir)
    except Exception as err:  # noqa: BLE001 - a report problem must not lose the trained run
        log.warning("report not written: %s", err)


def config_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
