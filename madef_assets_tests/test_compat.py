"""madef_assets/compat.py: each private API of a dependency still behaves as madef uses it (an upgrade that
moves one fails here, by name), and no other module imports a third-party package's private names."""

import ast
import inspect
import sys
from pathlib import Path

import pytest
from dagster import AssetObservation
from dagster_duckdb import io_manager as duckdb_io_manager
from datasketch.lsh import _optimal_param

from madef_assets import compat
from madef_assets.defs.diversity.dedup import LSH_ERROR_WEIGHTS, lsh_bands_and_rows
from madef_assets.project import PROJECT_ROOT
from madef_assets.storage import MadefDuckDBIOManager, PolarsTableHandler

SCANNED_DIRS = ("madef_assets", "bench", "madef_assets_tests")
ALLOWED_FILES = {(PROJECT_ROOT / "madef_assets" / "compat.py").resolve(), Path(__file__).resolve()}
HANDLER_METHODS = {
    "handle_output": ["self", "context", "table_slice", "obj", "connection"],
    "load_input": ["self", "context", "table_slice", "connection"],
}


def test_db_type_handler_is_the_base_of_the_duckdb_handlers():
    assert duckdb_io_manager.DbTypeHandler is compat.DbTypeHandler
    assert issubclass(PolarsTableHandler, compat.DbTypeHandler)
    assert all(isinstance(h, compat.DbTypeHandler) for h in MadefDuckDBIOManager.type_handlers())
    parameters = {m: list(inspect.signature(getattr(compat.DbTypeHandler, m)).parameters) for m in HANDLER_METHODS}
    assert parameters == HANDLER_METHODS


def test_db_io_manager_is_what_dagster_duckdb_builds_and_writes_through_one_connect(tmp_path):
    """madef's subclass overrides handle_output(context, obj) and relies on it opening the client's connect
    once for the schema, the slice's delete and the handler's write (one transaction there)."""
    assert duckdb_io_manager.DbIOManager is compat.DbIOManager
    assert list(inspect.signature(compat.DbIOManager.handle_output).parameters) == ["self", "context", "obj"]
    source = inspect.getsource(compat.DbIOManager.handle_output)
    assert source.count("self._db_client.connect(") == 1
    assert source.index("ensure_schema_exists") < source.index("delete_table_slice") < source.index(".handle_output(")
    manager = MadefDuckDBIOManager(database=str(tmp_path / "x.duckdb")).create_io_manager(None)
    assert isinstance(manager, compat.DbIOManager)


def test_hold_pool_slot_claims_a_slot_of_a_pool_named_at_run_time_and_frees_it(tmp_path):
    from dagster import DagsterInstance, asset, materialize

    from madef_assets.cli import INSTANCE_YAML

    (tmp_path / "dagster.yaml").write_text(INSTANCE_YAML)
    seen = {}

    @asset
    def claiming(context):
        with compat.hold_pool_slot(context, "endpoint/example_80_v1"):
            info = context.instance.event_log_storage.get_concurrency_info("endpoint/example_80_v1")
            seen.update(limit=info.slot_count, holders=[(c.run_id, c.step_key) for c in info.claimed_slots])
        return context.run_id

    with DagsterInstance.from_config(str(tmp_path)) as instance:
        result = materialize([claiming], instance=instance)
        after = instance.event_log_storage.get_concurrency_info("endpoint/example_80_v1")
    assert seen == {"limit": 1, "holders": [(result.run_id, "claiming")]}  # the instance's default_limit
    assert after.claimed_slots == []


def test_table_slice_has_the_fields_the_handler_reads():
    table_slice = compat.TableSlice(table="t", schema="s", database=None, columns=None, partition_dimensions=[])
    assert (table_slice.schema, table_slice.table, table_slice.partition_dimensions) == ("s", "t", [])


def test_data_version_tag_is_what_the_public_data_version_reads():
    assert AssetObservation(asset_key="a", tags={compat.DATA_VERSION_TAG: "v1"}).data_version == "v1"


def test_dagster_instance_config_validates_without_creating_storage(tmp_path):
    (tmp_path / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 1\n")
    config, custom_instance_class = compat.dagster_instance_config(str(tmp_path), "dagster.yaml")
    assert config["concurrency"]["pools"]["default_limit"] == 1 and custom_instance_class is None


@pytest.mark.parametrize("num_perm", [1, 2, 7, 16, 64, 128])
def test_lsh_banding_rule_matches_datasketch(num_perm):
    """At madef's weights; an exact mathematical tie (e.g. threshold 0.5 with equal weights) is decided by
    rounding, which differs between the closed form and datasketch's numerical integration."""
    for threshold in [0.01, *(i / 20 for i in range(1, 20)), 0.99]:
        expected = _optimal_param(threshold, num_perm, *LSH_ERROR_WEIGHTS)
        assert lsh_bands_and_rows(threshold, num_perm, LSH_ERROR_WEIGHTS) == expected, (threshold, num_perm)


def first_party_modules() -> set[str]:
    local_modules = {p.stem for d in SCANNED_DIRS for p in (PROJECT_ROOT / d).glob("*.py")}
    return {*SCANNED_DIRS, *local_modules}


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(source: str, first_party: set[str]) -> list[tuple[int, str]]:
    """(line, statement) of each import of a private module or name of a third-party package."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
            imported = []
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules, imported = [node.module], [alias.name for alias in node.names]
        else:
            continue
        for module in modules:
            root = module.split(".")[0]
            if root in first_party or root in sys.stdlib_module_names:
                continue
            if any(is_private(part) for part in module.split(".")) or any(is_private(name) for name in imported):
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_private_third_party_imports_outside_compat():
    first_party = first_party_modules()
    scanned = (p for d in SCANNED_DIRS for p in (PROJECT_ROOT / d).rglob("*.py"))
    files = sorted(p for p in scanned if p.resolve() not in ALLOWED_FILES)
    assert files
    offenders = [
        f"{path.relative_to(PROJECT_ROOT)}:{line}: {statement}"
        for path in files
        for line, statement in private_imports(path.read_text(), first_party)
    ]
    assert not offenders, "private APIs of dependencies go through madef_assets/compat.py:\n" + "\n".join(offenders)


def test_the_scan_sees_each_form_of_private_import():
    source = (
        "from dagster._core import x\nfrom datasketch.lsh import (\n    MinHashLSH,\n    _optimal_param,\n)\n"
        "import dagster._utils as utils\nfrom dagster import AssetKey, __version__\nimport os._x\n"
        "from madef_assets import _y\nfrom . import _z\n"
    )
    assert [line for line, _ in private_imports(source, first_party_modules())] == [1, 2, 6]
