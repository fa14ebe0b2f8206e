"""``chainer.links.NegativeSampling`` on the drop-in function and sampler."""

from __future__ import annotations

from ns_plugins.chainer import _fixed  # noqa: F401  (Chainer imports on new stacks after it)

# isort: split
import chainer
import numpy
from chainer import link, variable
from chainer.functions.loss import negative_sampling as chainer_loss
from chainer.utils import argument
from chainer.utils import walker_alias as chainer_walker_alias

from ns_plugins.chainer import installer
from ns_plugins.chainer.functions import negative_sampling
from ns_plugins.chainer.walker_alias import WalkerAlias


class NegativeSampling(link.Link):
    """Negative sampling loss layer, a drop-in for :class:`chainer.links.NegativeSampling`.

    Args:
        in_size (int): Dimension of input vectors.
        counts (int list): Number of each identifier.
        sample_size (int): Number of negative samples.
        power (float): Power factor alpha of the sampling distribution ``counts ** power``.
        dtype (numpy.dtype): Type to use in computing.

    Attributes:
        W (~chainer.Parameter): Weight matrix, shape ``(len(counts), in_size)``, zeros.
        sampler (WalkerAlias): The alias sampler; it moves with the link.
        sample_size (int): Number of negative samples.

    As in Chainer, the sampler class and the loss function are read from
    ``chainer.utils.walker_alias.WalkerAlias`` (at construction) and
    ``chainer.functions.loss.negative_sampling.negative_sampling`` (at every call), so whatever a
    program put there is used; Chainer's own objects there mean the drop-ins unless
    ``install()`` kept them. The sampling distribution is computed in float64 (Chainer raises
    the counts to ``power`` in ``dtype``, which overflows float16 for counts above 65504).
    """

    def __init__(self, in_size, counts, sample_size, power=0.75, dtype=None):
        super().__init__()
        dtype = chainer.get_dtype(dtype)
        vocab_size = len(counts)
        self.sample_size = sample_size
        sampler_class = installer.lookup(chainer_walker_alias, "WalkerAlias", WalkerAlias)
        if isinstance(sampler_class, type) and issubclass(sampler_class, WalkerAlias):
            p = numpy.power(numpy.asarray(counts, numpy.float64), float(power))
        else:  # another sampler gets Chainer's exact input
            p = numpy.array(counts, dtype)
            numpy.power(p, dtype.type(power), p)
        self.sampler = sampler_class(p)

        with self.init_scope():
            self.W = variable.Parameter(0, (vocab_size, in_size))

    def device_resident_accept(self, visitor):
        super().device_resident_accept(visitor)
        self.sampler.device_resident_accept(visitor)

    def forward(self, x, t, reduce="sum", **kwargs):
        """forward(x, t, reduce='sum', *, return_samples=False)

        Loss for inputs ``x`` and labels ``t``; see :func:`ns_plugins.chainer.negative_sampling`.
        """
        return_samples = False
        if kwargs:
            (return_samples,) = argument.parse_kwargs(kwargs, ("return_samples", return_samples))

        loss = installer.lookup(chainer_loss, "negative_sampling", negative_sampling)
        return loss(
            x,
            t,
            self.W,
            self.sampler.sample,
            self.sample_size,
            reduce=reduce,
            return_samples=return_samples,
        )
