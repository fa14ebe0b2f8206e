"""Links saved with plain Chainer load into the drop-in and the other way round, for every dtype
Chainer's parameters can have (``chainer.config.dtype``)."""

import chainer_setup  # noqa: F401  (skips without Chainer, applies the import fixes)
import numpy as np
import pytest

# isort: split

import chainer
import chainer.links as L
from chainer import serializers

import ns_plugins.chainer as nsc

pytestmark = pytest.mark.chainer

COUNTS = [7, 1, 3, 3, 9, 2]
DTYPES = [np.float16, np.float32, np.float64, chainer.mixed16]


class Model(chainer.Chain):
    """A link inside a chain, as programs hold it, with optimizer state to go with it."""

    def __init__(self, loss_class):
        super().__init__()
        with self.init_scope():
            self.embed = L.EmbedID(len(COUNTS), 4)
            self.loss = loss_class(4, COUNTS, 2)

    def forward(self, x, t):
        return self.loss(self.embed(x), t)


def _trained(loss_class, dtype):
    """A model after two Adam steps (nonzero W and optimizer moments)."""
    with chainer.using_config("dtype", dtype):
        model = Model(loss_class)
        optimizer = chainer.optimizers.Adam()
        optimizer.setup(model)
        x = np.arange(6, dtype=np.int32)
        for _ in range(2):
            model.cleargrads()
            model(x, x[::-1].copy()).backward()
            optimizer.update()
    return model, optimizer


def _fresh(loss_class, dtype):
    with chainer.using_config("dtype", dtype):
        model = Model(loss_class)
        optimizer = chainer.optimizers.Adam()
        optimizer.setup(model)
    return model, optimizer


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("direction", ["chainer->ours", "ours->chainer"])
def test_round_trip_through_save_npz(tmp_path, dtype, direction):
    source, target = (L.NegativeSampling, nsc.NegativeSampling)
    if direction == "ours->chainer":
        source, target = target, source
    model, optimizer = _trained(source, dtype)
    assert np.abs(model.loss.W.array).sum() > 0
    serializers.save_npz(tmp_path / "model.npz", model)
    serializers.save_npz(tmp_path / "optimizer.npz", optimizer)

    loaded, loaded_optimizer = _fresh(target, dtype)
    assert isinstance(loaded.loss, target)
    serializers.load_npz(tmp_path / "model.npz", loaded)  # strict: every key on both sides
    serializers.load_npz(tmp_path / "optimizer.npz", loaded_optimizer)
    for name, param in model.namedparams():
        other = dict(loaded.namedparams())[name]
        assert other.dtype == param.dtype
        np.testing.assert_array_equal(other.array, param.array)
    state = model.loss.W.update_rule.state
    loaded_state = loaded.loss.W.update_rule.state
    for key in ("m", "v"):
        np.testing.assert_array_equal(loaded_state[key], state[key])
    assert loaded_optimizer.t == optimizer.t == 2

    # the loaded link computes what the saved one does
    x, t = np.ones((3, 4), model.loss.W.dtype), np.array([0, 5, 2], np.int32)
    _, samples = model.loss(x, t, return_samples=True)
    ys = [
        chainer.functions.negative_sampling(x, t, m.loss.W, lambda shape: samples.copy(), 2)
        for m in (model, loaded)
    ]
    np.testing.assert_array_equal(ys[0].array, ys[1].array)


def test_no_extra_or_missing_keys(tmp_path):
    """The drop-in's npz holds exactly Chainer's keys (the sampler is not a persistent value)."""
    keys = []
    for loss_class in (L.NegativeSampling, nsc.NegativeSampling):
        path = tmp_path / f"{loss_class.__module__}.npz"
        serializers.save_npz(path, Model(loss_class))
        with np.load(path) as f:
            keys.append(sorted(f.files))
    assert keys[0] == keys[1] == ["embed/W", "loss/W"]
