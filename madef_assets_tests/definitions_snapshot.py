"""The shape of the definitions (asset keys, deps, partitions, checks, groups, kinds, jobs) for each bundled
profile, as plain JSON: test_definitions_snapshot compares it with the stored one, so a refactor that
changes the graph says so. After a change meant to alter the graph:

    .venv/bin/python -m madef_assets_tests.definitions_snapshot --write
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dagster import Definitions, PartitionsDefinition

from madef_assets.definitions import build_definitions
from madef_assets.settings import load_settings

PROFILES = ("demo", "production")
SNAPSHOT = Path(__file__).parent / "fixtures" / "definitions_snapshot.json"


def partitions_shape(partitions: PartitionsDefinition | None) -> dict | None:
    if partitions is None:
        return None
    shape: dict = {"kind": type(partitions).__name__}
    if hasattr(partitions, "get_partition_keys") and "Static" in shape["kind"]:
        shape["keys"] = list(partitions.get_partition_keys())
    if hasattr(partitions, "name"):
        shape["name"] = partitions.name
    return shape


def definitions_shape(defs: Definitions) -> dict:
    checks: dict[str, list[str]] = {}
    for check in defs.resolve_asset_graph().asset_check_keys:
        checks.setdefault(check.asset_key.to_user_string(), []).append(check.name)
    assets = {
        spec.key.to_user_string(): {
            "deps": sorted(dep.asset_key.to_user_string() for dep in spec.deps),
            "group": spec.group_name,
            "kinds": sorted(spec.kinds),
            "partitions": partitions_shape(spec.partitions_def),
            "checks": sorted(checks.get(spec.key.to_user_string(), [])),
        }
        for spec in defs.resolve_all_asset_specs()
    }
    jobs = sorted(job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__"))
    return {"assets": dict(sorted(assets.items())), "jobs": jobs}


def current_snapshot() -> dict:
    return {profile: definitions_shape(build_definitions(load_settings(profile, env={}))) for profile in PROFILES}


def differences(stored: dict, current: dict) -> list[str]:
    """One line per profile, asset or job list that differs."""
    lines = []
    for profile in sorted(set(stored) | set(current)):
        before, after = stored.get(profile, {}), current.get(profile, {})
        if before.get("jobs") != after.get("jobs"):
            lines.append(f"{profile}: jobs {before.get('jobs')} -> {after.get('jobs')}")
        old, new = before.get("assets", {}), after.get("assets", {})
        lines += [f"{profile}: {key} added" for key in sorted(set(new) - set(old))]
        lines += [f"{profile}: {key} removed" for key in sorted(set(old) - set(new))]
        for key in sorted(set(old) & set(new)):
            lines += [
                f"{profile}: {key}.{field} {old[key].get(field)} -> {new[key].get(field)}"
                for field in sorted(set(old[key]) | set(new[key]))
                if old[key].get(field) != new[key].get(field)
            ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"store the current shape in {SNAPSHOT}")
    args = parser.parse_args()
    snapshot = json.dumps(current_snapshot(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if args.write:
        SNAPSHOT.write_text(snapshot, encoding="utf-8")
    else:
        print(snapshot)


if __name__ == "__main__":
    main()
