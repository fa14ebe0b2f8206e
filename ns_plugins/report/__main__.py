"""``python -m ns_plugins.report PATH [--words w1 w2 ...] [--out report.html]``"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ns_plugins.report.build import build_report
from ns_plugins.report.run import has_artefacts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ns_plugins.report",
        description="Write report.html for a training run, a vectors file or a checkpoint.",
    )
    parser.add_argument("path", help="run directory, vectors .txt/.bin, or checkpoint .ckpt/.npz")
    parser.add_argument("--words", nargs="*", default=[], help="words to show neighbours of")
    parser.add_argument("--out", help="where to write the HTML (default: report.html beside)")
    parser.add_argument(
        "--projection",
        choices=["pca", "tsne", "umap"],
        default="pca",
        help="2-D map method; tsne needs scikit-learn, umap needs umap-learn",
    )
    parser.add_argument("--points", type=int, default=400, help="words on the map")
    args = parser.parse_args(argv)
    if Path(args.path).is_dir() and not has_artefacts(args.path):
        print(
            f"error: nothing to report in {args.path}: no vectors.txt/.bin, checkpoints/*.ckpt or "
            "*.npz, metrics.json or csv/metrics.csv",
            file=sys.stderr,
        )
        return 2
    try:
        out = build_report(
            args.path,
            words=args.words,
            out=args.out,
            projection=args.projection,
            max_points=args.points,
        )
    except (OSError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
