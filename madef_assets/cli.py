"""`madef run` observes the sources and materializes every asset of the profile (data, training, each
candidate's evaluation, the report); `madef summary` prints the summary of the DuckDB file; `madef ui`
starts the Dagster web UI on the same instance; `madef review` serves the human-review page (the judge's
queue and the taxonomy queue); `madef export --to <folder>` copies the published SFT set for sharing."""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from madef_assets.storage import Storage

INSTANCE_YAML = """\
# Written by `madef run`. One slot per pool: a device's pool runs one local-model step at a time, an
# endpoint's one served step; steps without a model take none (madef_assets/llm/pools.py names them).
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


def prepare_dagster_home(state_dir: Path) -> Path:
    """Use $DAGSTER_HOME, or <state_dir>/dagster_home with the project's instance settings."""
    home = Path(os.environ.get("DAGSTER_HOME") or state_dir / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_YAML, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def print_summary(storage: Storage) -> None:
    import polars as pl

    from madef_assets.storage import duckdb_connection

    with duckdb_connection(storage, read_only=True) as connection:
        summary = connection.execute("SELECT * FROM public.source_summary ORDER BY source").pl()
        tables = connection.execute(
            "SELECT schema_name || '.' || table_name AS table_name, estimated_size AS rows "
            "FROM duckdb_tables() WHERE database_name = current_database() ORDER BY 1"
        ).pl()
    with pl.Config(tbl_rows=100, tbl_cols=20, tbl_width_chars=160, tbl_hide_dataframe_shape=True):
        print("\nRows per source (public.source_summary):")
        print(summary)
        print(f"\nTables in {storage.location}:")
        print(tables)


DEFINITIONS_MODULE = "madef_assets.definitions"
PARTITION_TAG = "dagster/partition"  # Dagster's run tag naming the partition a run materializes


@dataclass(frozen=True)
class PlannedRun:
    job: str
    partition: str | None = None
    kind: str = "candidate"  # what the partition is: a candidate, or a learning "rate"

    def __str__(self) -> str:
        return f"{self.job}, {self.kind} {self.partition}" if self.partition else self.job


def run_plan(settings) -> list[list[PlannedRun]]:
    """The runs of `madef run` in waves; a wave's runs are independent of one another and start once the
    wave before succeeded: observe, build, [each learning rate's training, their comparison], each
    candidate's evaluation, the report."""
    from madef_assets.definitions import (
        COMPARE_RATES_JOB,
        EVALUATE_JOB,
        MAIN_JOB,
        OBSERVE_JOB,
        REPORT_JOB,
        TRAIN_JOB,
    )

    waves = [[PlannedRun(OBSERVE_JOB)], [PlannedRun(MAIN_JOB)]]
    if settings.training.partitioned:
        waves += [[PlannedRun(TRAIN_JOB, label, "rate") for label in settings.training.rate_labels]]
        waves += [[PlannedRun(COMPARE_RATES_JOB)]]
    if settings.evaluation.candidates:
        waves += [[PlannedRun(EVALUATE_JOB, c.name) for c in settings.evaluation.candidates]]
        waves += [[PlannedRun(REPORT_JOB)]]
    return waves


def job_of(module: str, name: str):
    """The job `name` of the code location `module` (its `defs`): how execute_job, and the executor's step
    processes, rebuild the job."""
    import importlib

    return importlib.import_module(module).defs.resolve_job_def(name)


def execute(
    instance, planned: PlannedRun, tags: dict[str, str], module: str, executor_config: dict | None = None
) -> bool:
    """One run through Dagster's execute_job, with the job's own executor (execution.executor), in this
    process; prints its end and, when it failed, each failed step's message."""
    from dagster import build_reconstructable_job, execute_job

    run_config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    if executor_config:
        run_config["execution"] = {"config": executor_config}
    if planned.partition:
        tags = {**tags, PARTITION_TAG: planned.partition}
    print(f"starting ({planned})", flush=True)
    job = build_reconstructable_job("madef_assets.cli", "job_of", reconstructable_args=(module, planned.job))
    with execute_job(job, instance, run_config=run_config, tags=tags) as result:
        print(f"run {result.run_id} ({planned}): {'succeeded' if result.success else 'FAILED'}", flush=True)
        for event in result.all_events if not result.success else ():
            if event.is_failure:
                print(f"  {event.step_key or result.run_id}: {event.message}", file=sys.stderr, flush=True)
        return result.success


def execute_in_worker(planned: PlannedRun, tags: dict[str, str], module: str, executor_config: dict | None) -> bool:
    """One run in a worker process of `madef run` (its own main thread, log handlers and loaded models);
    the run is tagged with this worker's identity, so a killed worker's run counts as orphaned."""
    from dagster import DagsterInstance

    from madef_assets.llm.engines import ENGINES
    from madef_assets.orphan_runs import PROCESS_TAG, process_tag

    if PROCESS_TAG in tags:
        tags = {**tags, PROCESS_TAG: process_tag()}
    with DagsterInstance.get() as instance:
        try:
            return execute(instance, planned, tags, module, executor_config)
        finally:
            ENGINES.release()


def launch_waves(
    instance,
    waves: list[list[PlannedRun]],
    max_concurrent_runs: int,
    tags: dict[str, str],
    module: str,
    executor_config: dict | None = None,
) -> bool:
    """Each wave's runs, up to `max_concurrent_runs` at once, each wave after the one before succeeded;
    False after the first wave with a failed run (its other runs finish first). A run alone (one run in its
    wave, or one at a time) runs in this process, as before; runs at once run in worker processes (spawned:
    Dagster's run setup reconfigures Python's logging, which deadlocks runs in threads of one process)."""
    import multiprocessing

    from madef_assets.llm.engines import ENGINES

    for wave in waves:
        if max_concurrent_runs == 1 or len(wave) == 1:
            for planned in wave:
                succeeded = execute(instance, planned, tags, module, executor_config)
                ENGINES.release()  # a run's models end with it (the next run may evaluate other weights)
                if not succeeded:
                    return False
            continue
        workers = min(max_concurrent_runs, len(wave))
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            outcomes = list(
                pool.map(
                    execute_in_worker, wave, [tags] * len(wave), [module] * len(wave), [executor_config] * len(wave)
                )
            )
        if not all(outcomes):
            return False
    return True


def run(args: argparse.Namespace) -> int:
    if args.profile:
        os.environ["MADEF_PROFILE"] = args.profile
    from madef_assets.settings import current_settings

    settings = current_settings()
    home = prepare_dagster_home(settings.state_dir)

    from dagster import DagsterInstance

    from madef_assets.definitions import EXECUTOR_RUN_CONFIG
    from madef_assets.orphan_runs import PROCESS_TAG, fail_orphaned_runs, process_tag

    with DagsterInstance.get() as instance:
        for run_id in fail_orphaned_runs(instance):
            print(f"run {run_id}: its process is gone (killed?); marked failed, its pool slots freed")
        try:
            tags = {PROCESS_TAG: process_tag()}
        except OSError as exc:  # no /proc (not Linux): the next `madef run` cannot tell a killed run from a live one
            print(f"runs not tagged with this process ({exc}); the pool slots of a killed run must be freed by hand")
            tags = {}
        executor_config = EXECUTOR_RUN_CONFIG.get(settings.executor)
        plan = run_plan(settings)
        if not launch_waves(instance, plan, settings.max_concurrent_runs, tags, DEFINITIONS_MODULE, executor_config):
            return 1
    print(f"\nprofile: {settings.profile} ({settings.profile_path})")
    print(f"Tables: {settings.storage.location}")
    print(f"Dagster home (runs, for `dagster dev`): {home}")
    print_summary(settings.storage)
    print(f"\nSFT dataset (LLaMA-Factory folder, dataset card README.md): {settings.method.sft_export_dir}")
    from madef_assets.defs.selection.export import read_manifest

    terms = (read_manifest(settings.method.sft_export_dir) or {}).get("license")
    if terms:
        print(f"SFT dataset license (combined terms of its rows): {terms['terms']} ({terms['reason']})")
    print(
        f"Intent distribution charts: {settings.state_dir / 'reports'} "
        "(intent_distribution.png, intent_labels_<source>.png)"
    )
    if settings.evaluation.candidates:
        print(f"Evaluation report: {settings.evaluation.report_dir / 'eval_report.md'}")
        print(f"Human review queue: `madef review` (decisions in {settings.evaluation.review_dir / 'decisions.jsonl'})")
    return 0


def summary(args: argparse.Namespace) -> int:
    from madef_assets.settings import current_settings

    print_summary(current_settings().storage)
    return 0


def ui(args: argparse.Namespace) -> int:
    from madef_assets.settings import PROJECT_ROOT, current_settings

    prepare_dagster_home(current_settings().state_dir)
    dagster = str(Path(sys.executable).with_name("dagster"))
    os.execv(dagster, [dagster, "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), *args.dagster_args])


def review(args: argparse.Namespace) -> int:
    from madef_assets.review.server import main as serve_review
    from madef_assets.settings import current_settings

    review_dir = current_settings().evaluation.review_dir
    return serve_review(
        [
            "--queue",
            str(review_dir / "queue"),
            "--decisions",
            str(review_dir / "decisions.jsonl"),
            "--taxonomy-queue",
            str(review_dir / "taxonomy_queue.jsonl"),
            "--taxonomy-decisions",
            str(review_dir / "taxonomy_decisions.jsonl"),
            "--host",
            args.host,
            "--port",
            str(args.port),
            *(f"--allowed-host={name}" for name in args.allowed_host),
        ]
    )


def export(args: argparse.Namespace) -> int:
    from madef_assets.defs.selection.export import ExportRefused, export_published
    from madef_assets.settings import load_settings

    folder = load_settings(args.profile).method.sft_export_dir
    try:
        names = export_published(folder, Path(args.to))
    except ExportRefused as exc:
        print(f"madef export: {exc}", file=sys.stderr)
        return 2
    print(f"copied {len(names)} files of the published SFT set {folder} to {args.to}: {', '.join(names)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="madef", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="materialize every asset of the profile and print a summary")
    run_parser.add_argument("--profile", help="demo, production or a YAML path (default: $MADEF_PROFILE or demo)")
    run_parser.set_defaults(handler=run)
    commands.add_parser("summary", help="print the summary of the DuckDB file").set_defaults(handler=summary)
    ui_parser = commands.add_parser("ui", help="start the Dagster web UI (dagster dev) on the project's instance")
    ui_parser.add_argument("dagster_args", nargs=argparse.REMAINDER, help="passed on to dagster dev, e.g. -p 3001")
    ui_parser.set_defaults(handler=ui)
    review_parser = commands.add_parser(
        "review", help="serve the human-review page for uncertain judgements and unmapped intent labels (/taxonomy)"
    )
    from madef_assets.review.server import add_network_arguments

    add_network_arguments(review_parser)
    review_parser.set_defaults(handler=review)
    export_parser = commands.add_parser(
        "export",
        help="copy the published SFT set (card, licenses, Parquet, JSON, dataset_info) to a folder, for sharing",
    )
    export_parser.add_argument("--to", required=True, help="destination folder: a new one, which export creates")
    export_parser.add_argument("--profile", help="demo, production or a YAML path (default: $MADEF_PROFILE or demo)")
    export_parser.set_defaults(handler=export)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
