"""Imported first by the modules that import Chainer, so that they also load directly
(``from ns_plugins.chainer.links import NegativeSampling``) on numpy 2 and setuptools >= 81."""

from ns_plugins.chainer import import_fixes

import_fixes.apply()
