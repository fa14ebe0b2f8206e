"""Hydra SearchPathPlugin: lets any Hydra app use the ns_plugins config groups.

The wheel ships this file as ``hydra_plugins/ns_plugins/__init__.py``; Hydra imports
every module under ``hydra_plugins`` while it discovers plugins, so it imports nothing heavy
(not even ``ns_plugins``: the package is only located).
"""

import importlib.util
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


def _conf_path() -> str:
    """``pkg://ns_plugins.conf`` in a wheel; the checkout's ``conf/`` in an editable install."""
    spec = importlib.util.find_spec("ns_plugins")
    if spec is not None and spec.origin:
        package = Path(spec.origin).parent
        if not (package / "conf" / "train.yaml").is_file():
            checkout = package.parent / "conf"
            if (checkout / "train.yaml").is_file():
                return f"file://{checkout}"
    return "pkg://ns_plugins.conf"


class NsPluginsSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="ns_plugins", path=_conf_path())
