"""The Hydra app's configs: every experiment and device group composes, bad values fail at once."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from ns_plugins.app.config import (
    Arch,
    Backend,
    DataSource,
    GradSync,
    Optimizer,
    Reduce,
    TrainConfig,
    config_dir,
)

CONF = config_dir()
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
DEVICES = sorted(p.stem for p in (CONF / "device").glob("*.yaml"))


def _compose(*overrides):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_config_dir_is_the_repo_conf_or_its_packaged_copy():
    repo_conf = Path(__file__).resolve().parents[1] / "conf"
    assert CONF == repo_conf or CONF.parent.name == "ns_plugins"
    assert (CONF / "train.yaml").read_text() == (repo_conf / "train.yaml").read_text()
    assert {"sgns", "cbow", "sgns_text"} <= set(EXPERIMENTS)
    assert {"cpu", "gpu", "ddp", "ddp_cpu"} <= set(DEVICES)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("device", DEVICES)
def test_every_experiment_composes_with_every_device(experiment, device):
    cfg = _compose(f"+experiment={experiment}", f"device={device}", "data.path=corpus.txt")
    # The composed config is a valid TrainConfig, enums included.
    typed = OmegaConf.merge(OmegaConf.structured(TrainConfig), cfg)
    assert isinstance(typed.backend.name, Backend)
    assert isinstance(typed.reduce.mode, Reduce)
    assert isinstance(typed.model.arch, Arch)
    assert not OmegaConf.missing_keys(cfg)
    assert cfg.model.arch is (Arch.cbow if experiment == "cbow" else Arch.skipgram)
    expected_source = DataSource.text if experiment == "sgns_text" else DataSource.synthetic
    assert cfg.data.source is expected_source
    if device == "ddp":
        # NCCL cannot all-reduce sparse gradients: the group must not pick that.
        assert cfg.device.process_group_backend == "nccl"
        assert cfg.device.grad_sync is not GradSync.sparse
    if device == "ddp_cpu":
        assert cfg.device.process_group_backend == "gloo"
        assert cfg.device.accelerator == "cpu"


def test_gensim_names_are_top_level_shortcuts():
    cfg = _compose(
        "+experiment=sgns", "epochs=7", "vector_size=33", "window=2", "negative=3", "alpha=0.1"
    )
    assert (cfg.epochs, cfg.vector_size, cfg.window, cfg.negative, cfg.alpha) == (7, 33, 2, 3, 0.1)
    for key in ("min_count", "sample", "ns_exponent", "min_alpha", "shrink_windows"):
        assert key in cfg


@pytest.mark.parametrize("engine", ["chunk", "batched"])
def test_the_engine_group_builds_its_engine_from_the_top_level_names(engine):
    from hydra.utils import instantiate

    from ns_plugins.app.config import ENGINE_CONFIGS, Engine, engine_of

    cfg = _compose("+experiment=sgns", f"engine={engine}", "negative=7", "model.init_scale=0.25")
    assert engine_of(cfg) is Engine(engine)
    assert cfg.engine._target_ == ENGINE_CONFIGS[Engine(engine)]._target_
    assert (cfg.engine.negative, cfg.engine.init_scale, cfg.engine.arch) == (7, 0.25, Arch.skipgram)
    extra = {"sparse": True} if engine == "batched" else {}
    module = instantiate(cfg.engine, **extra)
    assert type(module).__name__ == f"{engine.capitalize()}Module"
    assert module.hparams.negative == 7 and module.hparams.init_scale == 0.25


@pytest.mark.parametrize(
    "group,choice,expected",
    [
        ("backend", "reference", Backend.reference),
        ("reduce", "mean", Reduce.mean),
        ("reduce", "no", Reduce.no),
        ("model", "cbow", Arch.cbow),
    ],
)
def test_group_choices(group, choice, expected):
    cfg = _compose("+experiment=sgns", f"{group}={choice}")
    assert expected in (cfg.backend.name, cfg.reduce.mode, cfg.model.arch)


def test_unknown_group_option_lists_the_choices():
    with pytest.raises(MissingConfigException) as err:
        _compose("+experiment=sgns", "backend=foo")
    msg = str(err.value)
    assert "backend/foo" in msg
    for name in ("reference", "fused", "cupy"):
        assert name in msg


def test_bad_enum_value_lists_the_choices():
    with pytest.raises(ConfigCompositionException) as err:
        _compose("+experiment=sgns", "model.optimizer=adam")
    msg = str(err.value.__cause__)
    assert "adam" in msg and "sgd" in msg and "sparse_adam" in msg
    assert Optimizer.sparse_adam.value in msg


def test_bad_type_fails_at_compose():
    with pytest.raises(ConfigCompositionException):
        _compose("+experiment=sgns", "epochs=three")


def test_unknown_experiment_fails():
    with pytest.raises(MissingConfigException, match="sgns_text"):
        _compose("+experiment=nope")


def test_searchpath_plugin_does_not_import_torch(tmp_path):
    code = (
        "import sys\n"
        "try:\n"  # the wheel ships the module as hydra_plugins.ns_plugins
        "    from hydra_plugins.ns_plugins import NsPluginsSearchPathPlugin\n"
        "except ImportError:\n"
        "    from ns_plugins.hydra_searchpath import NsPluginsSearchPathPlugin\n"
        "from hydra.core.config_search_path import ConfigSearchPath\n"
        "from hydra._internal.config_search_path_impl import ConfigSearchPathImpl\n"
        "sp = ConfigSearchPathImpl()\n"
        "NsPluginsSearchPathPlugin().manipulate_search_path(sp)\n"
        "paths = [e.path for e in sp.get_path() if e.provider == 'ns_plugins']\n"
        "assert paths and paths[0].endswith('conf'), paths\n"
        "import ns_plugins.app.config\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, timeout=60)


def test_installed_wheel_exposes_configs_to_other_hydra_apps(tmp_path):
    """Another Hydra app finds `device/ddp_cpu` through the packaged SearchPathPlugin."""
    import importlib.util

    if importlib.util.find_spec("hydra_plugins.ns_plugins") is None:
        pytest.skip("ns_plugins is not installed from a wheel (editable or source checkout)")
    app = tmp_path / "other_app.py"
    app.write_text(
        "import sys, hydra\n"
        "from omegaconf import OmegaConf\n"
        "@hydra.main(version_base=None, config_path=None)\n"
        "def main(cfg):\n"
        "    assert 'torch' not in sys.modules\n"
        "    print(OmegaConf.to_yaml(cfg))\n"
        "main()\n"
    )
    out = subprocess.run(
        [sys.executable, str(app), "+device=ddp_cpu", "hydra.run.dir=" + str(tmp_path / "run")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "ddp" in out.stdout and "gloo" in out.stdout


def test_report_words_override():
    cfg = _compose("+experiment=sgns", "report.words=[w0,w1]")
    assert list(cfg.report.words) == ["w0", "w1"]
    with pytest.raises(ConfigCompositionException):
        _compose("+experiment=sgns", "report.colour=red")  # unknown key: rejected by the schema


def test_help_describes_the_main_keys():
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(root / "train.py"), "--help"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    described = {line.split(" :")[0] for line in proc.stdout.splitlines() if " : " in line}
    for key in ("vector_size", "window", "negative", "epochs", "alpha", "min_count", "sample",
                "workers", "seed", "data", "data.path", "device", "model", "engine",
                "eval.wordsim", "eval.simlex", "eval.analogies", "ckpt_path", "init_vectors",
                "trainer.log_every_n_steps"):  # fmt: skip
        assert key in described, key
    assert "experiment: cbow, sgns, sgns_text" in proc.stdout  # the groups are still listed
    assert "$APP_CONFIG_GROUPS" not in proc.stdout and "${" not in proc.stdout


def test_every_key_the_help_describes_exists():
    import re

    text = (CONF / "hydra" / "help" / "ns_train.yaml").read_text()
    cfg = _compose("+experiment=sgns")
    groups = {"data", "model", "device", "logger", "callbacks"}
    for key in re.findall(r"^  ([a-z_.]+) :", text, re.M):
        assert key in groups or OmegaConf.select(cfg, key, default="missing") != "missing", key
