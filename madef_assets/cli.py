"""`madef run` observes the sources and materializes every asset of the profile (data, training, each
candidate's evaluation, the report); `madef summary` prints the summary of the DuckDB file; `madef ui`
starts the Dagster web UI on the same instance; `madef review` serves the human-review page (the judge's
queue and the taxonomy queue); `madef export --to <folder>` copies the published SFT set for sharing."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from madef_assets.storage import Storage

INSTANCE_MARK = "# Written by `madef run`."
INSTANCE_YAML = f"""\
{INSTANCE_MARK} One slot per pool: a device's pool runs one local-model step at a time, an
# endpoint's one served step; steps without a model take none (madef_assets/llm/pools.py names them).
# Runs are launched at once (`madef run` bounds how many: execution.max_concurrent_runs), each in a
# process of its own started by the code server.
run_coordinator:
  module: dagster.core.run_coordinator
  class: DefaultRunCoordinator
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


def prepare_dagster_home(state_dir: Path) -> Path:
    """Use $DAGSTER_HOME, or <state_dir>/dagster_home with the project's instance settings (written, or
    rewritten when an older madef wrote them; a dagster.yaml of the user's own is left as it is)."""
    home = Path(os.environ.get("DAGSTER_HOME") or state_dir / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    written = config.read_text(encoding="utf-8") if config.exists() else INSTANCE_MARK
    if written.startswith(INSTANCE_MARK) and written != INSTANCE_YAML:
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
CODE_SERVER_WORD = "[DagsterApiServer]"  # how a code server's events about its run workers begin
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
    wave before succeeded: observe, build (with method.volume_rounds > 1: the SFT set, which `run` builds again
    while it is short, then the rest of the build), [each learning rate's training, their comparison], each
    candidate's evaluation, the report."""
    from madef_assets.definitions import (
        AFTER_DATA_JOB,
        COMPARE_RATES_JOB,
        DATA_JOB,
        EVALUATE_JOB,
        MAIN_JOB,
        OBSERVE_JOB,
        REPORT_JOB,
        TRAIN_JOB,
    )

    waves = [[PlannedRun(OBSERVE_JOB)], [PlannedRun(MAIN_JOB)]]
    if settings.method.volume_rounds > 1:  # the SFT set first (built again while short), then the rest once
        waves = [[PlannedRun(OBSERVE_JOB)], [PlannedRun(DATA_JOB)], [PlannedRun(AFTER_DATA_JOB)]]
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

    run_config = run_config_of(executor_config)
    if planned.partition:
        tags = {**tags, PARTITION_TAG: planned.partition}
    print(f"starting ({planned})", flush=True)
    job = build_reconstructable_job("madef_assets.cli", "job_of", reconstructable_args=(module, planned.job))
    with execute_job(job, instance, run_config=run_config, tags=tags) as result:
        print_run_end(instance, result.run_id, planned, result.success)
        return result.success


def launch_waves(
    instance,
    waves: list[list[PlannedRun]],
    max_concurrent_runs: int,
    tags: dict[str, str],
    module: str,
    executor_config: dict | None = None,
    log_dir: Path | None = None,
) -> bool:
    """Each wave's runs, each wave after the one before succeeded; False after the first wave with a failed
    run (its other runs finish first). One run at a time (`execution.max_concurrent_runs: 1`, the demo, for
    debugging) runs in this process; otherwise every run is launched through the instance's run launcher,
    up to `max_concurrent_runs` at once (madef_assets/launched_runs.py)."""
    from madef_assets.llm.engines import ENGINES

    if max_concurrent_runs > 1:
        return launch_through_instance(instance, waves, max_concurrent_runs, module, executor_config, log_dir)
    for wave in waves:
        for planned in wave:
            succeeded = execute(instance, planned, tags, module, executor_config)
            ENGINES.release()  # a run's models end with it (the next run may evaluate other weights)
            if not succeeded:
                return False
    return True


def run_config_of(executor_config: dict | None) -> dict:
    run_config: dict = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    if executor_config:
        run_config["execution"] = {"config": executor_config}
    return run_config


def print_run_end(instance, run_id: str, planned: PlannedRun, succeeded: bool) -> None:
    """The run's end and, when it failed, why: each failed step's error, the code server's word on a run
    worker that died, the run's failure."""
    from dagster import DagsterEventType

    print(f"run {run_id} ({planned}): {'succeeded' if succeeded else 'FAILED'}", flush=True)
    if succeeded:
        return
    kinds = {DagsterEventType.STEP_FAILURE, DagsterEventType.ENGINE_EVENT, DagsterEventType.RUN_FAILURE}
    for record in instance.all_logs(run_id, of_type=kinds):
        error = getattr(record.dagster_event.event_specific_data, "error", None)
        if record.dagster_event.event_type == DagsterEventType.ENGINE_EVENT and not (
            error or record.message.startswith(CODE_SERVER_WORD)
        ):
            continue
        detail = error.message.strip() if error else record.message
        print(f"  {record.step_key or run_id}: {detail}", file=sys.stderr, flush=True)


def launch_all(server, starting: dict[str, PlannedRun], run_config: dict) -> None:
    """`dagster job launch` for each run at once (each takes seconds: a Python process and a gRPC call)."""
    from concurrent.futures import ThreadPoolExecutor

    def launch(run_id: str, planned: PlannedRun) -> None:
        print(f"starting ({planned})", flush=True)
        tags = {PARTITION_TAG: planned.partition} if planned.partition else {}
        server.launch(planned.job, run_id, tags, run_config)

    with ThreadPoolExecutor(max(len(starting), 1)) as launches:
        list(launches.map(launch, starting, starting.values()))


@dataclass
class LaunchedRun:
    planned: PlannedRun
    waiting_since: float  # when it was launched, or last said to be queued
    tagged: bool = False  # with its run worker's process identity


def launch_through_instance(
    instance, waves, max_concurrent_runs: int, module: str, executor_config: dict | None, log_dir: Path | None
) -> bool:
    """Each wave's runs launched through the instance, up to `max_concurrent_runs` at once, polled to their
    end; the runs still going when this ends early (a failure to launch, an interruption) are terminated."""
    import time
    import uuid

    from madef_assets.launched_runs import CodeServer, sigterm_as_exit, terminate

    run_config = run_config_of(executor_config)
    log_dir = log_dir or Path(os.environ["DAGSTER_HOME"]) / "logs"
    launched: list[str] = []
    with sigterm_as_exit(), CodeServer(module, log_dir) as server:
        print(f"runs launched by the instance's {type(instance.run_launcher).__name__}; logs: {server.log_path}")
        try:
            for wave in waves:
                waiting, running, all_succeeded = list(wave), {}, True
                while waiting or running:
                    starting = {str(uuid.uuid4()): planned for planned in waiting[: max_concurrent_runs - len(running)]}
                    del waiting[: len(starting)]
                    launched += starting
                    launch_all(server, starting, run_config)
                    running |= {run_id: LaunchedRun(planned, time.monotonic()) for run_id, planned in starting.items()}
                    time.sleep(1)
                    all_succeeded &= poll_launched(instance, running)
                if not all_succeeded:
                    return False
            return True
        finally:
            terminate(instance, launched)


def poll_launched(instance, running: dict[str, LaunchedRun]) -> bool:
    """Report and forget the runs that ended (False if one failed); tag the others with their run workers."""
    import time

    from dagster import DagsterRunStatus

    from madef_assets.launched_runs import still_queued_note, tag_run_worker

    all_succeeded = True
    for run_id, launched in list(running.items()):
        run = instance.get_run_by_id(run_id)
        if run.is_finished:
            succeeded = run.status == DagsterRunStatus.SUCCESS
            print_run_end(instance, run_id, launched.planned, succeeded)
            all_succeeded &= succeeded
            del running[run_id]
            continue
        launched.tagged = launched.tagged or tag_run_worker(instance, run)
        if note := still_queued_note(run_id, run.status, time.monotonic() - launched.waiting_since):
            print(note, flush=True)
            launched.waiting_since = time.monotonic()
    return all_succeeded


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
        from madef_assets.defs.diversity.volume import data_rounds
        from madef_assets.launched_runs import LaunchError

        def launch(waves: list[list[PlannedRun]]) -> bool:
            concurrent = settings.max_concurrent_runs
            return launch_waves(instance, waves, concurrent, tags, DEFINITIONS_MODULE, executor_config)

        try:
            # observe and build; with method.volume_rounds > 1 the SFT set is built again while short, then the rest
            if not (launch(plan[:2]) and data_rounds(instance, settings.method, lambda: launch(plan[1:2]))):
                return 1
            if not launch(plan[2:]):
                return 1
        except LaunchError as exc:
            print(f"madef run: {exc}", file=sys.stderr)
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
    from madef_assets.project import PROJECT_ROOT
    from madef_assets.settings import current_settings

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
