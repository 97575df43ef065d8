"""Running madef_assets_tests.ledger_defs in another process (the `dagster` CLI, a script) and counting the
ledger rows it wrote. Kept apart from ledger_defs, which reads its settings from the environment on import."""

import os
import sys

import duckdb

# The asset materialized by the `dagster` CLI in a subprocess, as a deployment would run it.
MATERIALIZE_COMMAND = [
    os.path.join(os.path.dirname(sys.executable), "dagster"),
    *("asset", "materialize", "-m", "madef_assets_tests.ledger_defs", "--select", "llm_answers"),
]


def process_env(folder, server_url: str, prompts: int, concurrency: int, dagster_home) -> dict[str, str]:
    """The variables ledger_defs reads: the ledger in `folder`/ledger.duckdb, answered by `server_url`."""
    return {
        "MADEF_DUCKDB_PATH": os.path.join(folder, "ledger.duckdb"),
        "MADEF_TEST_OPENAI_URL": server_url,
        "MADEF_TEST_PROMPTS": str(prompts),
        "MADEF_TEST_CONCURRENCY": str(concurrency),
        "DAGSTER_HOME": str(dagster_home),
    }


def ledger_rows(path) -> int:
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute("select count(*) from llm_ledger").fetchone()[0]
