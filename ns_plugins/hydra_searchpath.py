"""Hydra SearchPathPlugin: lets any Hydra app use the ns_plugins config groups.

The wheel ships this file as ``hydra_plugins/ns_plugins/ns_plugins_searchpath.py``; Hydra imports
every module under ``hydra_plugins`` while it discovers plugins, so it imports nothing heavy.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class NsPluginsSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="ns_plugins", path="pkg://ns_plugins.conf")
