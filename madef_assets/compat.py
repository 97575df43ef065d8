"""The one place madef reaches past a dependency's public API.

Everything here is private to its dependency and may move in any release; madef_assets_tests/test_compat.py
imports each entry and checks its behaviour, so an upgrade that moves one fails there, by name, and
test_compat.py also fails any private import of a third-party package made anywhere but this module.

- `DbTypeHandler`, `TableSlice`: the base class of a DB I/O manager's type handlers and the table it is handed.
  dagster and dagster_duckdb export only the concrete handlers (e.g. `DuckDBPolarsTypeHandler`), not the base
  class or the slice type its methods take.
- `DbIOManager`: the I/O manager dagster_duckdb's factory returns (partition slices, schemas, type handlers);
  madef's subclass writes an output again after a DuckLake commit conflict. dagster exports only the factories.
- `DATA_VERSION_TAG`: the tag that carries an asset event's data version. `AssetObservation` reads it publicly
  (`.data_version`) but takes no data-version argument, so a sensor (which returns events, not an
  `ObserveResult`) records one through this tag; the tests read and write it on materializations.
- `dagster_instance_config`: loads and validates a `dagster.yaml` without creating its storages (which would
  connect to Postgres); the public `DagsterInstance.from_config` creates them.
- `hold_pool_slot`: a slot of a pool chosen at run time. Dagster gives each op one pool when it is defined,
  so a step partitioned by candidate cannot take its candidate's pool; it claims it here, from the instance's
  slot tables (the ones Dagster's own pools use: the web UI shows the claim, the pool's limit applies, and
  `free_concurrency_slots_for_run` frees it for a dead run), through event-log-storage methods that are not
  documented API.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import AssetExecutionContext
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice

__all__ = [
    "DATA_VERSION_TAG",
    "DbIOManager",
    "DbTypeHandler",
    "TableSlice",
    "dagster_instance_config",
    "hold_pool_slot",
]

POOL_POLL_S = (0.2, 5.0)  # first and longest wait between claims of a busy pool


@contextmanager
def hold_pool_slot(context: AssetExecutionContext, pool: str) -> Iterator[None]:
    """Waits for a slot of `pool` (created with the instance's default limit, as Dagster creates a pool on
    first use) and holds it for the block. A pool without a limit (no default) is not waited for."""
    storage = context.instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        yield
        return
    if pool not in {p.name for p in storage.get_pool_limits()}:
        if storage.get_pool_config().default_pool_limit is None:
            yield
            return
        storage.initialize_concurrency_limit_to_default(pool)
    run_id, step_key = context.run_id, context.get_step_execution_context().step.key
    wait = POOL_POLL_S[0]
    while not storage.claim_concurrency_slot(pool, run_id, step_key).is_claimed:
        if wait == POOL_POLL_S[0]:
            context.log.info(f"waiting for a slot of pool {pool}")
        time.sleep(wait)
        wait = min(wait * 1.5, POOL_POLL_S[1])
    try:
        yield
    finally:
        storage.free_concurrency_slot_for_step(run_id, step_key)
