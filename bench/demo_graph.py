"""The README's main command on a fresh state folder: wall time of `madef run` and the summed step
time per asset group (from the Dagster instance's step stats), so the slow part of the graph is visible.

    .venv/bin/python bench/demo_graph.py                      # runs `madef run` in a fresh temp state folder
    .venv/bin/python bench/demo_graph.py --dagster-home DIR   # reports on runs already in that instance

The converted bundled model is reused from state/models (its one-off conversion is not the graph's time).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from madef_assets.project import PROJECT_ROOT
from madef_assets.settings import load_settings


def step_group(step_key: str, groups: dict[str, str]) -> str:
    """The group of the asset a step materializes (multi-asset steps `ingest_<source>` are sources)."""
    if step_key.startswith(("ingest_", "raw__")):
        return "sources"
    return groups.get(step_key, "other")


def report(dagster_home: Path, wall_seconds: float | None) -> None:
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    from dagster import DagsterInstance

    from madef_assets.definitions import build_definitions

    graph = build_definitions(load_settings("demo", env={})).resolve_asset_graph()
    groups = {key.to_python_identifier(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    per_group: dict[str, float] = defaultdict(float)
    runs = []
    with DagsterInstance.get() as instance:
        for run in reversed(instance.get_runs()):
            record = instance.get_run_record_by_id(run.run_id)
            runs.append(
                (run.job_name, run.tags.get("dagster/partition", ""), (record.end_time or 0) - (record.start_time or 0))
            )
            for stats in instance.get_run_step_stats(run.run_id):
                if stats.start_time and stats.end_time:
                    per_group[step_group(stats.step_key, groups)] += stats.end_time - stats.start_time
    if wall_seconds is not None:
        print(f"`madef run` on a fresh state folder: {wall_seconds:.0f} s wall\n")
    print("| run | partition | seconds |\n|---|---|---|")
    for job, partition, seconds in runs:
        print(f"| {job} | {partition} | {seconds:.0f} |")
    print("\n| group | step seconds | share |\n|---|---|---|")
    total = sum(per_group.values())
    for group, seconds in sorted(per_group.items(), key=lambda item: -item[1]):
        print(f"| {group} | {seconds:.1f} | {seconds / total:.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dagster-home", type=Path)
    args = parser.parse_args()
    if args.dagster_home:
        report(args.dagster_home, None)
        return
    state = Path(tempfile.mkdtemp(prefix="madef-demo-"))
    env = {
        **os.environ,
        "MADEF_STATE_DIR": str(state),
        "DAGSTER_HOME": str(state / "dagster_home"),
        "MADEF_MODELS_DIR": str(load_settings("demo", env={}).models_dir),
    }
    started = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).with_name("madef")), "run"],
        env=env,
        cwd=PROJECT_ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    report(state / "dagster_home", time.perf_counter() - started)


if __name__ == "__main__":
    main()
