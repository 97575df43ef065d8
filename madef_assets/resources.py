"""Resources built from the profile: the DuckDB I/O manager and one LLM resource per role."""

from __future__ import annotations

from typing import Any

from madef_assets.llm.resource import LLMResource, PanelMember
from madef_assets.pipes_client import CredentialFreePipesClient
from madef_assets.project import ROLES
from madef_assets.secret_hygiene import configured_key_names
from madef_assets.settings import Settings
from madef_assets.storage import MadefDuckDBIOManager


def llm_resource(settings: Settings, role: str) -> LLMResource:
    config = settings.roles[role]
    return LLMResource(
        role=role,
        config=config.config,
        panel_members=[PanelMember(config=member) for member in config.panel],
        **settings.storage.resource_fields(),
        models_dir=str(settings.models_dir),
    )


def profile_key_names(settings: Settings) -> set[str]:
    """Every api_key_env the profile names (roles, panel members, candidates): none reaches a child process."""
    roles = [member for config in settings.roles.values() for member in config.members]
    return configured_key_names(
        [(m.backend, m.options) for m in roles] + [(c.backend, c.options) for c in settings.evaluation.candidates]
    )


def build_resources(settings: Settings) -> dict[str, Any]:
    storage = settings.storage
    return {
        "io_manager": MadefDuckDBIOManager(
            database=storage.location,
            ducklake_data_path=storage.ducklake_data_path,
            duckdb_lock_wait_seconds=storage.lock_wait_seconds,
        ),
        "pipes_subprocess_client": CredentialFreePipesClient(secret_names=profile_key_names(settings)),
        **{role: llm_resource(settings, role) for role in ROLES},
    }
