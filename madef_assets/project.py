"""The words every layer shares and that depend on nothing of madef: the project's folders, the LLM roles,
the configuration error, how a configured path is resolved. Lower than settings, storage and every stage,
so that none of them has to import another to get these (test_imports.py keeps the layers circle-free)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "config"
SQL_DIR = PROJECT_ROOT / "dbt_like_sql"
ROLES = ("labeler", "attacker", "responder", "judge", "scorer", "trainee")
PANEL_ROLES = ("judge",)


class ConfigError(ValueError):
    """A profile file is missing a key or has a value of the wrong kind."""


def resolve_path(path: str | os.PathLike, base: Path) -> Path:
    """A configured path: ~ and $VARIABLES expanded, relative to `base`, absolute."""
    candidate = Path(os.path.expandvars(os.path.expanduser(str(path))))
    # abspath, not resolve: a virtual environment's bin/python is a symlink that must stay one.
    return Path(os.path.abspath(candidate if candidate.is_absolute() else base / candidate))
