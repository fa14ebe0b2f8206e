"""``python -m ns_plugins.report PATH [--words w1 w2 ...] [--out report.html]``"""

from __future__ import annotations

import argparse
import sys

from ns_plugins.report.build import build_report


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
    try:
        out = build_report(
            args.path,
            words=args.words,
            out=args.out,
            projection=args.projection,
            max_points=args.points,
        )
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
