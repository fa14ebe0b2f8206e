"""Train word vectors: ``python train.py +experiment=sgns`` (see conf/ for every option)."""

from ns_plugins.app.cli import main

if __name__ == "__main__":
    main()
