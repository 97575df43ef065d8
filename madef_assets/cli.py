"""`madef run` observes the sources and materializes every asset of the profile (data, training, each
candidate's evaluation, the report); `madef summary` prints the summary of the DuckDB file; `madef ui`
starts the Dagster web UI on the same instance; `madef review` serves the human-review page (the judge's
queue and the taxonomy queue); `madef export --to <folder>` copies the published SFT set for sharing."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

INSTANCE_YAML = """\
# Written by `madef run`. One slot in the `duckdb` pool: DuckDB allows one writer process.
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


def print_summary(duckdb_path: Path) -> None:
    import polars as pl

    from madef_assets.storage import duckdb_connection

    with duckdb_connection(duckdb_path, read_only=True) as connection:
        summary = connection.execute("SELECT * FROM public.source_summary ORDER BY source").pl()
        tables = connection.execute(
            "SELECT schema_name || '.' || table_name AS table_name, estimated_size AS rows "
            "FROM duckdb_tables() ORDER BY 1"
        ).pl()
    with pl.Config(tbl_rows=100, tbl_cols=20, tbl_width_chars=160, tbl_hide_dataframe_shape=True):
        print("\nRows per source (public.source_summary):")
        print(summary)
        print(f"\nTables in {duckdb_path}:")
        print(tables)


def _report_failure(result) -> int:
    for event in result.all_events:
        if event.is_failure:
            print(event.message, file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    if args.profile:
        os.environ["MADEF_PROFILE"] = args.profile
    from madef_assets.settings import current_settings

    settings = current_settings()
    home = prepare_dagster_home(settings.state_dir)

    from dagster import DagsterInstance

    from madef_assets.definitions import (
        COMPARE_RATES_JOB,
        EVALUATE_JOB,
        MAIN_JOB,
        OBSERVE_JOB,
        REPORT_JOB,
        TRAIN_JOB,
        defs,
    )
    from madef_assets.llm.engines import ENGINES
    from madef_assets.orphan_runs import PROCESS_TAG, fail_orphaned_runs, process_tag

    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    # Data and training first (one run per learning rate when there are several, then their comparison), then
    # each candidate's evaluation partition, then the report over all of them.
    runs = [(OBSERVE_JOB, None), (MAIN_JOB, None)]
    if settings.training.partitioned:
        runs += [(TRAIN_JOB, label) for label in settings.training.rate_labels] + [(COMPARE_RATES_JOB, None)]
    if settings.evaluation.candidates:
        runs += [(EVALUATE_JOB, c.name) for c in settings.evaluation.candidates] + [(REPORT_JOB, None)]
    with DagsterInstance.get() as instance:
        for run_id in fail_orphaned_runs(instance):
            print(f"run {run_id}: its process is gone (killed?); marked failed, its pool slot freed")
        try:
            tags = {PROCESS_TAG: process_tag()}
        except OSError as exc:  # no /proc (not Linux): the next `madef run` cannot tell a killed run from a live one
            print(f"runs not tagged with this process ({exc}); the pool slot of a killed run must be freed by hand")
            tags = {}
        for job, partition in runs:
            result = defs.resolve_job_def(job).execute_in_process(
                instance=instance, run_config=quiet, partition_key=partition, raise_on_error=False, tags=tags
            )
            ENGINES.release()  # a run's models end with it (the next run may evaluate other weights)
            kind = "rate" if job == TRAIN_JOB else "candidate"
            print(
                f"run {result.run_id} ({job}{f', {kind} {partition}' if partition else ''}): "
                f"{'succeeded' if result.success else 'FAILED'}"
            )
            if not result.success:
                return _report_failure(result)
    print(f"\nprofile: {settings.profile} ({settings.profile_path})")
    print(f"DuckDB file: {settings.duckdb_path}")
    print(f"Dagster home (runs, for `dagster dev`): {home}")
    print_summary(settings.duckdb_path)
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

    print_summary(current_settings().duckdb_path)
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
