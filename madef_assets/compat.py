"""The one place madef reaches past a dependency's public API.

Everything here is private to its dependency and may move in any release; madef_assets_tests/test_compat.py
imports each entry and checks its behaviour, so an upgrade that moves one fails there, by name, and
test_compat.py also fails any private import of a third-party package made anywhere but this module.

- `DbTypeHandler`, `TableSlice`: the base class of a DB I/O manager's type handlers and the table it is handed.
  dagster and dagster_duckdb export only the concrete handlers (e.g. `DuckDBPolarsTypeHandler`), not the base
  class or the slice type its methods take.
- `DATA_VERSION_TAG`: the tag that carries an asset event's data version. `AssetObservation` reads it publicly
  (`.data_version`) but takes no data-version argument, so a sensor (which returns events, not an
  `ObserveResult`) records one through this tag; the tests read and write it on materializations.
- `dagster_instance_config`: loads and validates a `dagster.yaml` without creating its storages (which would
  connect to Postgres); the public `DagsterInstance.from_config` creates them.
"""

from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.db_io_manager import DbTypeHandler, TableSlice

__all__ = ["DATA_VERSION_TAG", "DbTypeHandler", "TableSlice", "dagster_instance_config"]
