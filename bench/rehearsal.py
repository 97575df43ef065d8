"""The production path, rehearsed on this machine: the whole graph (sources → sft_dataset → a 1-step
training → evaluation → report) with every LLM role and every candidate on the `openai` backend, against
a local OpenAI-compatible server that behaves like the real providers (429 with Retry-After, 5xx,
timeouts, malformed bodies, DashScope/OpenAI moderation rejections, refusals; bench/rehearsal_model.py
writes the answers). Then a second run (no calls expected) and a killed run resumed.

    .venv/bin/python bench/rehearsal.py                 # config/rehearsal.yaml: the full files in ../shared/data
    .venv/bin/python bench/rehearsal.py --size small    # the bundled samples (what CI runs, in a test)

Prints one table per run: rows and statuses per asset, backend calls, ledger hits, wall time per group,
peak RSS; then the second run and the kill-and-resume in numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_graph import step_group  # noqa: E402
from rehearsal_model import answer  # noqa: E402

from madef_assets.project import CONFIG_DIR, PROJECT_ROOT  # noqa: E402
from madef_assets.settings import load_settings  # noqa: E402
from madef_assets_tests.openai_server import OpenAICompatibleServer  # noqa: E402

# How often each provider behaviour happens, per distinct prompt (transient faults on the first request only).
FAULTS = {
    "moderated": 0.02,
    "policy": 0.005,
    "filter": 0.005,
    "refuse": 0.03,
    "429": 0.05,
    "500": 0.02,
    "timeout": 0.002,
    "malformed": 0.01,
}
FULL_PROFILE = CONFIG_DIR / "rehearsal.yaml"
FULL_PORT = 18080


def small_profile(server_url: str, target: Path) -> Path:
    """The rehearsal at the demo's size: the demo profile's bundled sources, sizes and method, with the
    rehearsal's served roles and candidates pointed at this run's server."""
    demo = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text(encoding="utf-8"))
    rehearsal = yaml.safe_load(FULL_PROFILE.read_text(encoding="utf-8"))
    profile = {**demo, "profile": "rehearsal-small", "models": rehearsal["models"], "gpu": rehearsal["gpu"]}
    profile["evaluation"] = {**demo["evaluation"], "candidates": rehearsal["evaluation"]["candidates"]}
    # One rate (the demo compares two): the rehearsal's tuned candidate is served; one endpoint, one checkpoint.
    # One step, saved once at the end, no validation split: the rehearsal is about the served roles, and a
    # training step's own checks are test_training's.
    profile["training"] = {
        **demo["training"],
        "learning_rates": demo["training"].get("learning_rates", [1e-5])[:1],
        "args": {**demo["training"]["args"], "max_steps": 1, "val_size": 0, "eval_strategy": "no"},
        # Outside each run's state: the resumed run finds the checkpoint trained from the same base, SFT folder
        # and arguments, and reuses it instead of training again.
        "output_dir": str(target.parent / "checkpoints" / "finetuned"),
    }
    # Production's rejection sampling; the gates wider, since a few dozen rows per asset make rates coarse.
    profile["method"] = {
        **demo["method"],
        "rejection_sampling": True,
        "max_refusal_rate": 0.3,
        "max_parse_failure_rate": 0.3,
        "sft_export_dir": str(target.parent / "sft_dataset"),
    }
    text = yaml.safe_dump(profile, allow_unicode=True, sort_keys=False).replace(
        f"http://127.0.0.1:{FULL_PORT}/v1", server_url
    )
    target.write_text(text, encoding="utf-8")
    return target


@dataclass
class RunReport:
    wall_s: float
    exit_code: int
    requests: int
    peak_rss_mb: float
    groups: dict[str, float] = field(default_factory=dict)
    assets: list[dict] = field(default_factory=list)
    sources: list[tuple] = field(default_factory=list)  # source, rows in, normalized, quarantined, merged


def madef_env(profile: Path, state: Path) -> dict[str, str]:
    """The environment of a rehearsal's `madef run`; the served roles' key is read from it like a provider's."""
    return {
        **os.environ,
        "MADEF_PROFILE": str(profile),
        "MADEF_STATE_DIR": str(state),
        "DAGSTER_HOME": str(state / "dagster_home"),
        "MADEF_MODELS_DIR": str(load_settings("demo", env={}).models_dir),
        "PYTHONUNBUFFERED": "1",
        "MADEF_REHEARSAL_KEY": "rehearsal-key",
    }


def run_graph(
    profile: Path, state: Path, server: OpenAICompatibleServer, kill_after_answers: int | None = None
) -> RunReport:
    """`madef run` in its own process (group); with kill_after_answers, SIGKILLed once the server has
    answered that many more requests."""
    env = madef_env(profile, state)
    requests, answered = server.total_requests, server.answered_ok
    started = time.perf_counter()
    state.mkdir(parents=True, exist_ok=True)
    log = (state / "run.log").open("a")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("madef")), "run"],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    if kill_after_answers is not None:
        while process.poll() is None and server.answered_ok - answered < kill_after_answers:
            time.sleep(0.05)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    code = process.wait()
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return RunReport(wall, code, server.total_requests - requests, peak)


def describe(report: RunReport, state: Path, settings_profile: Path) -> RunReport:
    """Rows and statuses per table (from DuckDB), LLM calls and ledger hits per asset and step time per
    group (from the Dagster instance)."""
    os.environ["DAGSTER_HOME"] = str(state / "dagster_home")
    from dagster import DagsterInstance

    from madef_assets.definitions import build_definitions

    settings = load_settings(str(settings_profile), env={"MADEF_STATE_DIR": str(state)})
    graph = build_definitions(settings).resolve_asset_graph()
    groups = {key.to_python_identifier(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    calls: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with DagsterInstance.get() as instance:
        for run in instance.get_runs():
            for stats in instance.get_run_step_stats(run.run_id):
                if stats.start_time and stats.end_time:
                    report.groups[step_group(stats.step_key, groups)] = (
                        report.groups.get(step_group(stats.step_key, groups), 0.0) + stats.end_time - stats.start_time
                    )
            for record in instance.get_records_for_run(run.run_id).records:
                event = record.event_log_entry.dagster_event
                if event is None or not event.is_step_materialization:
                    continue
                materialization = event.step_materialization_data.materialization
                name = materialization.asset_key.to_user_string()
                for key, value in materialization.metadata.items():
                    if key.endswith(("llm_backend_calls", "llm_ledger_hits")):
                        calls[name][key.rsplit("llm_", 1)[1]] += int(value.value)
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as connection:
        tables = connection.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'public' ORDER BY table_name"
        ).fetchall()
        for (table,) in tables:
            columns = {
                c
                for (c,) in connection.execute(
                    f"SELECT column_name FROM duckdb_columns() WHERE table_name = '{table}'"
                ).fetchall()
            }
            rows = connection.execute(f'SELECT count(*) FROM public."{table}"').fetchone()[0]
            statuses = (
                dict(
                    connection.execute(
                        f'SELECT status, count(*) FROM public."{table}" GROUP BY 1 ORDER BY 1'
                    ).fetchall()
                )
                if "status" in columns
                else {}
            )
            report.assets.append({"asset": table, "rows": rows, "statuses": statuses, **calls.get(table, {})})
        report.sources = connection.execute(
            "SELECT source, rows_in, rows_normalized, rows_quarantined, rows_merged FROM "
            "public.source_summary ORDER BY 1"
        ).fetchall()
    return report


def print_run(title: str, report: RunReport) -> None:
    print(
        f"\n### {title}\n\n`madef run` exit {report.exit_code}, {report.wall_s:.0f} s wall, "
        f"{report.requests} requests at the "
        f"server, peak RSS {report.peak_rss_mb:.0f} MB\n"
    )
    print("| asset | rows | statuses | backend calls | ledger hits |\n|---|---|---|---|---|")
    for row in report.assets:
        statuses = ", ".join(f"{k} {v}" for k, v in row["statuses"].items())
        print(
            f"| {row['asset']} | {row['rows']} | {statuses} | {row.get('backend_calls', '')} | "
            f"{row.get('ledger_hits', '')} |"
        )
    print("\n| source | rows in | normalized | quarantined | merged |\n|---|---|---|---|---|")
    for row in report.sources:
        print("| " + " | ".join(map(str, row)) + " |")
    print("\n| group | step seconds |\n|---|---|")
    for group, seconds in sorted(report.groups.items(), key=lambda item: -item[1]):
        print(f"| {group} | {seconds:.1f} |")


def rehearse(size: str, root: Path, resume: bool = True) -> dict:
    """First run, second run, killed run resumed; returns the numbers (also printed)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    port = FULL_PORT if size == "full" else 0
    with OpenAICompatibleServer(
        faults=FAULTS, answer=answer, port=port, timeout_sleep_s=2.5, retry_after_s=0.05
    ) as server:
        profile = FULL_PROFILE if size == "full" else small_profile(server.base_url, root / "rehearsal_small.yaml")
        first = describe(run_graph(profile, root / "state", server), root / "state", profile)
        print_run("first run", first)
        print(f"\nprovider behaviour drawn per distinct prompt: {dict(server.by_fault)}")
        second = run_graph(profile, root / "state", server)
        print(
            f"\n### second run\n\nexit {second.exit_code}, {second.wall_s:.0f} s, {second.requests} "
            "requests at the server"
        )
        numbers = {"first": first, "second": second, "faults": dict(server.by_fault)}
        if resume:
            state = root / "resumed"
            killed = run_graph(profile, state, server, kill_after_answers=max(1, first.requests // 2))
            resumed = run_graph(profile, state, server)
            print(
                f"\n### killed and resumed\n\nSIGKILL after {killed.requests} requests (exit "
                f"{killed.exit_code}); the resumed run sent "
                f"{resumed.requests} and exited {resumed.exit_code}; together "
                f"{killed.requests + resumed.requests} against "
                f"{first.requests} for one uninterrupted run"
            )
            numbers.update(killed=killed, resumed=resumed)
    return numbers


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=["full", "small"], default="full")
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT / "state" / "rehearsal")
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args()
    numbers = rehearse(args.size, args.root, resume=not args.no_resume)
    (args.root / "numbers.json").write_text(json.dumps(numbers, default=lambda o: o.__dict__, indent=1))


if __name__ == "__main__":
    main()
