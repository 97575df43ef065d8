"""The Pipes client every child process of an asset goes through (training, LLaMA-Factory's evaluator).

Dagster's PipesSubprocessClient hands the child all of os.environ plus its own variables. This client runs the
same public `run`, with the command started through `env -u NAME …`, which removes every variable `child_env`
would drop before the real command is executed: no provider key, token or password reaches it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping, Sequence

from dagster import PipesSubprocessClient

from madef_assets.secret_hygiene import child_env


def without_credentials(command: str | Sequence[str], secret_names: Iterable[str] = ()) -> list[str]:
    """`command` run through `env -u` for each variable of os.environ that `child_env` drops."""
    env_program = shutil.which("env") or "/usr/bin/env"
    kept = child_env(secret_names=secret_names)
    dropped = sorted(name for name in os.environ if name not in kept)
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
    return [env_program, *(f"--unset={name}" for name in dropped), *argv]


class CredentialFreePipesClient(PipesSubprocessClient):
    """PipesSubprocessClient without credentials in the child's environment; `secret_names` adds the profile's
    api_key_env names (any name) to those `child_env` drops by their look."""

    def __init__(self, secret_names: Iterable[str] = (), **kwargs):
        super().__init__(**kwargs)
        self.secret_names = tuple(sorted(secret_names))

    def run(self, *, command: str | Sequence[str], env: Mapping[str, str] | None = None, **kwargs):
        child_env(extra={**self.env, **(env or {})}, secret_names=self.secret_names)  # refuses a credential here
        return super().run(command=without_credentials(command, self.secret_names), env=env, **kwargs)
