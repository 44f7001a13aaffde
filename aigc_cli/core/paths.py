"""Where aigc keeps things: the data folder (runs) and the cache (downloads, features).

``AIGC_HOME`` overrides both: runs under ``$AIGC_HOME/runs``, the cache under ``$AIGC_HOME/cache``.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    env = os.environ.get("AIGC_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_data_path("aigc")


def cache_dir() -> Path:
    env = os.environ.get("AIGC_HOME")
    if env:
        return Path(env).expanduser() / "cache"
    import platformdirs

    return platformdirs.user_cache_path("aigc")


def runs_root() -> Path:
    return home() / "runs"
