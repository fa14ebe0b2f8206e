"""The training app (``train.py``, ``ns-train``): Hydra configs, Lightning runs. Its modules follow
the flow of a run, each importing only those below it:

    cli          Hydra's entry: one-line errors, the closing summary
    launch       check the config, encode the corpus while torch imports, fork the ranks
    skeleton     data module + engine + trainer -> fit -> export, metrics, report
    engines/     the Lightning engines on one base (chunk: corpus chunks in place; batched: pairs)
    datamodule, callbacks (evaluation during training), progress (words/s, log lines, the bar),
        checkpoints (interrupts, last.ckpt), local_sgd (weight averaging across ranks)
    checks, recipe, evaluation, outputs, rundir, config

Below the app: ``ns_plugins.engines`` (the chunk step without torch), ``ns_plugins.data``,
``ns_plugins.embeddings``, the core and its kernels. ``ARCHITECTURE.md`` follows a config value
from the command line to a kernel.
"""
