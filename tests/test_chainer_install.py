"""install()/uninstall(), the runner, the opt-in auto-install and the import fixes."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import chainer_setup  # noqa: F401  (skips without Chainer, applies the import fixes)
import numpy as np
import pytest

# isort: split

import chainer
import chainer.functions as F
import chainer.links as L
import chainer.utils

import ns_plugins.chainer as nsc
from ns_plugins.chainer import autoinstall, import_fixes, installer

pytestmark = pytest.mark.chainer

ROOT = Path(__file__).resolve().parents[1]

# Plain Chainer in a child process: only the import fixes, which Chainer needs on numpy 2.
PLAIN = "from ns_plugins.chainer import import_fixes; import_fixes.apply()\n"

REPORT = """
import chainer, chainer.functions as F, chainer.links as L
from chainer.functions.loss import negative_sampling as fns
from chainer.links.loss import negative_sampling as lns
from chainer.utils import walker_alias
def where(obj):
    return "ours" if obj.__module__.startswith("ns_plugins") else "chainer"
print("REPORT", where(F.negative_sampling), where(fns.negative_sampling),
      where(L.NegativeSampling), where(lns.NegativeSampling),
      where(chainer.utils.WalkerAlias), where(walker_alias.WalkerAlias))
"""


def _env(**extra):
    """A child environment without the setuptools workaround, so the import fixes are needed."""
    env = {k: v for k, v in os.environ.items() if k not in ("SETUPTOOLS_USE_DISTUTILS",)}
    env.pop(autoinstall.ENV, None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONWARNINGS"] = "ignore"
    env.update(extra)
    return env


def _run(args, env=None, cwd=None):
    proc = subprocess.run(
        [sys.executable, *args], env=env or _env(), cwd=cwd, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _reports(stdout):
    return [line.split()[1:] for line in stdout.splitlines() if line.startswith("REPORT")]


# install / uninstall ---------------------------------------------------------------------------
def _current():
    from chainer.functions.loss import negative_sampling as fns
    from chainer.links.loss import negative_sampling as lns
    from chainer.utils import walker_alias

    return [
        F.negative_sampling,
        fns.negative_sampling,
        fns.NegativeSamplingFunction,
        L.NegativeSampling,
        lns.NegativeSampling,
        chainer.utils.WalkerAlias,
        walker_alias.WalkerAlias,
    ]


def test_install_is_idempotent_and_reversible():
    before = _current()
    assert all(not o.__module__.startswith("ns_plugins") for o in before)
    try:
        nsc.install()
        nsc.install()
        after = _current()
        assert all(o.__module__.startswith("ns_plugins") for o in after)
        assert nsc.installed() == ("loss", "link", "sampler")
    finally:
        nsc.uninstall()
    nsc.uninstall()
    assert _current() == before
    assert nsc.installed() == ()


def test_install_parts():
    try:
        nsc.install(["loss"])
        assert F.negative_sampling is nsc.negative_sampling
        assert L.NegativeSampling is not nsc.NegativeSampling
        assert chainer.utils.WalkerAlias is not nsc.WalkerAlias
    finally:
        nsc.uninstall()
    with pytest.raises(ValueError, match="unknown part"):
        nsc.install(["loss", "optimizer"])


def test_chainers_own_link_calls_through_patched_modules():
    """Chainer's link reaches the loss and the sampler through their modules."""
    try:
        nsc.install(["loss", "sampler"])
        link = L.NegativeSampling(3, [1, 2, 3], 2)
        assert not isinstance(link, nsc.NegativeSampling)  # Chainer's own class
        assert isinstance(link.sampler, nsc.WalkerAlias)
        y, samples = link(np.ones((4, 3), np.float32), np.zeros(4, np.int32), return_samples=True)
        assert isinstance(y.creator, nsc.NegativeSamplingFunction)
        assert samples.shape == (4, 3) and samples.dtype == np.int32
    finally:
        nsc.uninstall()


def test_classes_bound_before_install_keep_working():
    """A program that imported Chainer's classes before install() keeps working ones: they name
    themselves through their modules (super(WalkerAlias, self)), which install() repoints."""
    from chainer.links import NegativeSampling as EarlyLink
    from chainer.utils import WalkerAlias as EarlyAlias

    assert not EarlyAlias.__module__.startswith("ns_plugins")
    code = EarlyAlias.__init__.__code__

    class Subclass(EarlyAlias):
        def __init__(self, probs):
            super().__init__(probs)

    try:
        nsc.install()
        for cls in (EarlyAlias, Subclass):
            sampler = cls([0.5, 0.5])
            assert type(sampler) is cls
            assert set(np.unique(sampler.sample((1000,)))) == {0, 1}
            sampler.to_device("@numpy")  # device_resident_accept names the class too
        link = EarlyLink(3, [1, 2, 3], 2)
        link.to_device("@numpy")
        assert type(link) is EarlyLink and isinstance(link.sampler, nsc.WalkerAlias)
        y = link(np.ones((4, 3), np.float32), np.zeros(4, np.int32))
        assert isinstance(y.creator, nsc.NegativeSamplingFunction)
        assert chainer.utils.WalkerAlias([0.5, 0.5]).sample((3,)).shape == (3,)  # the drop-in
    finally:
        nsc.uninstall()
    assert chainer.utils.WalkerAlias is EarlyAlias and EarlyAlias.__init__.__code__ is code
    assert EarlyAlias([0.5, 0.5]).sample((3,)).shape == (3,)


def test_requested_parts():
    assert autoinstall.requested_parts("") == ()
    assert autoinstall.requested_parts("0") == ()
    assert autoinstall.requested_parts("1") == ("loss", "link", "sampler")
    assert autoinstall.requested_parts("loss, sampler") == ("loss", "sampler")
    with pytest.raises(ValueError, match="NS_PLUGINS_CHAINER"):
        autoinstall.requested_parts("everything")


# runner and auto-install -----------------------------------------------------------------------
@pytest.fixture
def script(tmp_path):
    path = tmp_path / "legacy.py"
    path.write_text(
        REPORT
        + textwrap.dedent(
            """
            import subprocess, sys
            print("ARGV", *sys.argv[1:])
            if "child" not in sys.argv:
                subprocess.run([sys.executable, __file__, "child"], check=True)
            """
        )
    )
    return path


@pytest.mark.slow
def test_runner_installs_in_the_script_and_its_children(script):
    out = _run(["-m", "ns_plugins.chainer", str(script), "a", "--flag"])
    assert _reports(out) == [["ours"] * 6, ["ours"] * 6]
    assert "ARGV a --flag" in out and "ARGV child" in out


@pytest.mark.slow
def test_runner_parts_and_module_mode(script):
    out = _run(
        ["-m", "ns_plugins.chainer", "--parts", "loss", "-m", "legacy", "x"], cwd=script.parent
    )
    expected = ["ours", "ours", "chainer", "chainer", "chainer", "chainer"]
    assert _reports(out) == [expected, expected]
    assert "ARGV x" in out


def _runner_error(args, cwd=None):
    """The last line of a runner that did not start its program (exit status 2, no traceback)."""
    proc = subprocess.run(
        [sys.executable, "-m", "ns_plugins.chainer", *args],
        env=_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("ns_plugins.chainer: error: "), proc.stderr
    return last


def test_runner_usage_errors(tmp_path):
    assert "no such script" in _runner_error([str(tmp_path / "missing.py")])
    assert "no script given" in _runner_error([])
    assert "-m needs a module name" in _runner_error(["-m"])


def test_runner_directory_without_main(tmp_path):
    """As python DIR: a directory runs its __main__.py; without one, one line says so."""
    assert _runner_error([str(tmp_path)]).endswith(
        f"can't find '__main__' module in {str(tmp_path)!r}"
    )
    (tmp_path / "__main__.py").write_text("import sys; print('MAIN', sys.argv[1:])\n")
    assert "MAIN ['a']" in _run(["-m", "ns_plugins.chainer", str(tmp_path), "a"])


def test_runner_missing_module(tmp_path):
    """As python -m: a module that is not there, or a package without __main__, is one line."""
    last = _runner_error(["-m", "ns_plugins_missing_module", "a"], cwd=tmp_path)
    assert last.endswith("no module named 'ns_plugins_missing_module'")
    assert "ns_plugins_missing_parent" in _runner_error(["-m", "ns_plugins_missing_parent.child"])
    (tmp_path / "package").mkdir()
    (tmp_path / "package" / "__init__.py").write_text("")
    assert "'package' is a package" in _runner_error(["-m", "package"], cwd=tmp_path)


def test_not_active_unless_asked(tmp_path):
    """The runner's bootstrap on the path does nothing without the variable."""
    boot = ROOT / "ns_plugins" / "chainer" / "_boot"
    env = _env(SETUPTOOLS_USE_DISTUTILS="stdlib")
    env["PYTHONPATH"] = os.pathsep.join([str(boot), env["PYTHONPATH"]])
    assert _reports(_run(["-c", PLAIN + REPORT], env=env)) == [["chainer"] * 6]


@pytest.mark.slow
def test_environment_variable_through_pth(tmp_path):
    """What an installed wheel does: the .pth hook reads NS_PLUGINS_CHAINER at start-up."""
    shutil.copy(ROOT / "ns_plugins" / "chainer" / "ns_plugins_chainer.pth", tmp_path)
    code = f"import site; site.addsitedir({str(tmp_path)!r})\n" + REPORT
    assert _reports(_run(["-c", code], env=_env(NS_PLUGINS_CHAINER="1"))) == [["ours"] * 6]
    assert _reports(_run(["-c", code], env=_env(NS_PLUGINS_CHAINER="sampler"))) == [
        ["chainer"] * 4 + ["ours"] * 2
    ]


@pytest.mark.slow
def test_unknown_environment_value_warns_once(tmp_path):
    """A value that names no parts: one warning naming the valid ones, in the first process only,
    no traceback, nothing installed."""
    shutil.copy(ROOT / "ns_plugins" / "chainer" / "ns_plugins_chainer.pth", tmp_path)
    child = PLAIN + f"import site; site.addsitedir({str(tmp_path)!r})\n" + REPORT
    code = child + f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    env = _env(NS_PLUGINS_CHAINER="everything", SETUPTOOLS_USE_DISTUTILS="stdlib")
    env.pop("PYTHONWARNINGS")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("NS_PLUGINS_CHAINER='everything'") == 1, proc.stderr
    assert "comma list of loss, link, sampler" in proc.stderr
    assert _reports(proc.stdout) == [["chainer"] * 6] * 2


NO_TORCH = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError(f"{name} is blocked")

sys.meta_path.insert(0, Block())
import numpy as np
import ns_plugins.chainer as nsc

nsc.install()
import chainer, chainer.functions as F, chainer.links as L

link = L.NegativeSampling(4, [5, 3, 2, 1], 2)
link.W.array[...] = np.random.default_rng(0).standard_normal((4, 4))
x = chainer.Variable(np.ones((3, 4), np.float32))
loss = link(x, np.array([0, 1, -1], np.int32))
gx, = chainer.grad([loss], [x], enable_double_backprop=True)
gW, = chainer.grad([F.sum(gx * gx)], [link.W])
assert np.isfinite(gW.array).all() and np.abs(gW.array).sum() > 0
print("LOADED", sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
"""


def test_chainer_face_runs_without_torch():
    """Importing, installing and training (double backprop too) never imports torch."""
    assert "LOADED []" in _run(["-c", NO_TORCH], env=_env(SETUPTOOLS_USE_DISTUTILS="stdlib"))


# import fixes ----------------------------------------------------------------------------------
SIMULATED_NEW_STACK = """
import importlib.abc, sys

class Hide(importlib.abc.MetaPathFinder):
    # as on setuptools >= 81 (no pkg_resources) and numpy 2 / Python 3.12 (no numpy.distutils)
    hidden = ("pkg_resources", "numpy.distutils")
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pkg_resources" or name.startswith("numpy.distutils"):
            for finder in sys.meta_path:  # only the fallback that import_fixes adds may serve it
                if type(finder).__name__ == "_FallbackFinder":
                    return finder.find_spec(name, path, target)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Hide())
import numpy
vars(numpy).pop("sctypes", None)  # removed in numpy 2
if sys.argv[1] == "fixed":
    from ns_plugins.chainer import import_fixes
    import_fixes.apply()

import chainer, chainer.testing
import chainer.functions as F, chainer.links as L
from chainer import training
from chainer.training import extensions

class Model(chainer.Chain):
    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.embed = L.EmbedID(20, 4)
            self.linear = L.Linear(4, 4)
            self.loss = L.NegativeSampling(4, list(range(1, 21)), 2)
    def forward(self, x, t):
        loss = self.loss(self.linear(self.embed(x)), t)
        chainer.report({"loss": loss}, self)
        return loss

numpy.random.seed(0)
data = chainer.datasets.TupleDataset(numpy.arange(40, dtype=numpy.int32) % 20,
                                     numpy.arange(40, dtype=numpy.int32)[::-1] % 20)
model = Model()
optimizer = chainer.optimizers.Adam()
optimizer.setup(model)
it = chainer.iterators.SerialIterator(data, 8)
trainer = training.Trainer(training.updaters.StandardUpdater(it, optimizer), (2, "epoch"),
                           out=sys.argv[2])
trainer.extend(extensions.LogReport())
trainer.extend(extensions.Evaluator(
    chainer.iterators.SerialIterator(data, 8, repeat=False, shuffle=False), model))
trainer.run()
assert chainer.testing.with_requires("numpy>=1.0") is not None
print("TRAINED", chainer.__version__)
"""


def test_import_fixes_on_a_simulated_new_stack(tmp_path):
    env = _env()
    broken = subprocess.run(
        [sys.executable, "-c", SIMULATED_NEW_STACK, "plain", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert broken.returncode != 0  # the simulation really breaks plain Chainer
    assert "TRAINED 7.8.1" in _run(["-c", SIMULATED_NEW_STACK, "fixed", str(tmp_path)], env=env)


@pytest.mark.parametrize("module", ["functions", "links", "walker_alias", "installer"])
def test_submodules_import_directly(module):
    """Each module that imports Chainer applies the fixes first (here the child has neither
    SETUPTOOLS_USE_DISTUTILS nor, in the Chainer CI environment, numpy 1)."""
    out = _run(["-c", f"import ns_plugins.chainer.{module}; print('IMPORTED')"])
    assert "IMPORTED" in out


def test_kernel_workers_wait_passively_unless_told_otherwise():
    """Spinning OpenMP workers starve the working ones on a busy machine (bench_chainer.py)."""
    code = "import os, ns_plugins.chainer.functions; print('POLICY', os.environ['OMP_WAIT_POLICY'])"
    env = _env()
    env.pop("OMP_WAIT_POLICY", None)  # this process may have set it already
    assert "POLICY PASSIVE" in _run(["-c", code], env=env)
    assert "POLICY ACTIVE" in _run(["-c", code], env=_env(OMP_WAIT_POLICY="ACTIVE"))


def test_import_fixes_are_idempotent():
    import_fixes.apply()
    import_fixes.apply()
    assert installer.installed() == ()


def test_unfixable_import_failure_names_the_part():
    try:
        raise AttributeError("module 'numpy' has no attribute 'float_'")
    except AttributeError as exc:
        err = import_fixes.explain(exc)
    assert isinstance(err, ImportError)
    assert "Chainer 7.8.1 fails in chainer" in str(err) and "numpy" in str(err)
    assert "float_" in str(err)
