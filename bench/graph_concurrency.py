"""The rehearsal-sized graph on provider-like servers with realistic latency, run several ways in one go:
serial (the behaviour before issue 25: the in-process executor, one run at a time), `runs` (in-process
executor, the candidates' evaluation runs at once), `multiprocess` (the multiprocess executor, runs at
once) and `celery` (two workers on a local Redis, runs at once). Every role and candidate has the same
per-endpoint concurrency budget in every mode; each mode starts from a fresh state folder.

    .venv/bin/python bench/graph_concurrency.py                  # every mode
    .venv/bin/python bench/graph_concurrency.py --modes serial runs --latency 0.3 2.0

Endpoints as a production deployment has them: one provider for the labeler, attacker, judge and scorer roles,
one server for the responder, one per candidate (three). Each answer waits a per-prompt latency drawn from
[low, high]; every step sends at most ENDPOINT_CONCURRENCY requests at once. Prints wall times (end to end,
and the three-candidate evaluation alone: first evaluation run's start to last one's end), the ratios against
serial, and where the time goes: summed step time per group, and the time steps waited for the DuckDB file
lock (from the step logs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_graph import step_group  # noqa: E402
from rehearsal import madef_env as rehearsal_env  # noqa: E402
from rehearsal import small_profile  # noqa: E402
from rehearsal_model import answer  # noqa: E402

from madef_assets.cli import INSTANCE_MARK  # noqa: E402
from madef_assets.cli import INSTANCE_YAML as MADEF_INSTANCE_YAML  # noqa: E402
from madef_assets.project import PROJECT_ROOT  # noqa: E402
from madef_assets.settings import load_settings  # noqa: E402
from madef_assets_tests.openai_server import OpenAICompatibleServer  # noqa: E402

PROVIDER_ROLES = ("labeler", "attacker", "judge", "scorer")
CANDIDATES = ("base", "tuned", "reference")
MODES = ("serial", "runs", "multiprocess", "celery")
# Requests in flight per step, the same in every mode: a provider key's or a small vLLM server's budget.
ENDPOINT_CONCURRENCY = 8
CELERY_RUN_CONFIG = PROJECT_ROOT / "deploy" / "celery" / "run_config.yaml"
LOCK_WAIT = re.compile(r"waited ([0-9.]+) s for the DuckDB file lock")
# madef's instance settings (not marked as madef's, so `madef run` keeps them), plus storage's log lines
# (lock waits) in the event log.
INSTANCE_YAML = MADEF_INSTANCE_YAML.replace(INSTANCE_MARK, "# bench/graph_concurrency.py: madef's settings.") + (
    "python_logs:\n  managed_python_loggers: [madef_assets.storage]\n  python_log_level: INFO\n"
)


def bench_profile(target: Path, provider: str, responder: str, candidates: dict[str, str], mode: str) -> Path:
    """The rehearsal's small profile with production's endpoint layout and a timeout above the latency."""
    small_profile(provider, target)
    profile = yaml.safe_load(target.read_text(encoding="utf-8"))
    for name, role in profile["models"].items():
        if role.get("backend") == "openai":
            url = responder if name == "responder" else provider
            role.update(base_url=url, timeout_s=30.0, concurrency=ENDPOINT_CONCURRENCY)
    tuned = profile["evaluation"]["candidates"]["tuned"]
    profile["evaluation"]["candidates"] = {
        name: {
            **tuned,
            "checkpoint": {"base": "base_model_checkpoint", "tuned": "finetuned_checkpoint"}.get(name),
            "model": name,
            "base_url": candidates[name],
            "timeout_s": 30.0,
            "concurrency": ENDPOINT_CONCURRENCY,
        }
        for name in CANDIDATES
    }
    for spec in profile["evaluation"]["candidates"].values():
        if spec["checkpoint"] is None:
            del spec["checkpoint"]
    executor = {"serial": "in_process", "runs": "in_process", "multiprocess": "multiprocess", "celery": "celery"}[mode]
    profile["execution"] = {"executor": executor, "max_concurrent_runs": 1 if mode == "serial" else len(CANDIDATES)}
    target.write_text(yaml.safe_dump(profile, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return target


def madef_env(profile: Path, state: Path) -> dict[str, str]:
    """The rehearsal's environment of `madef run` (and of the celery workers), with this bench's instance."""
    (state / "dagster_home").mkdir(parents=True, exist_ok=True)
    (state / "dagster_home" / "dagster.yaml").write_text(INSTANCE_YAML, encoding="utf-8")
    from dagster import DagsterInstance

    # Its SQLite storage created once, before `madef run` and the workers open it at the same moment.
    DagsterInstance.from_config(str(state / "dagster_home")).dispose()
    return rehearsal_env(profile, state)


def run_madef(env: dict[str, str], state: Path) -> tuple[float, int]:
    started = time.perf_counter()
    with (state / "run.log").open("w") as log:
        code = subprocess.run(
            [str(Path(sys.executable).with_name("madef")), "run"], env=env, cwd=PROJECT_ROOT, stdout=log, stderr=log
        ).returncode
    return time.perf_counter() - started, code


def where_time_goes(state: Path, profile: Path) -> dict:
    os.environ["DAGSTER_HOME"] = str(state / "dagster_home")
    from dagster import DagsterInstance

    from madef_assets.definitions import build_definitions

    settings = load_settings(str(profile), env={"MADEF_STATE_DIR": str(state)})
    graph = build_definitions(settings).resolve_asset_graph()
    groups = {key.to_python_identifier(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    per_group: dict[str, float] = defaultdict(float)
    evaluation: list[tuple[float, float]] = []
    lock_wait = 0.0
    with DagsterInstance.get() as instance:
        for run in instance.get_runs():
            record = instance.get_run_record_by_id(run.run_id)
            if run.job_name == "madef_evaluate" and record.start_time and record.end_time:
                evaluation.append((record.start_time, record.end_time))
            for stats in instance.get_run_step_stats(run.run_id):
                if stats.start_time and stats.end_time:
                    per_group[step_group(stats.step_key, groups)] += stats.end_time - stats.start_time
            for entry in instance.all_logs(run.run_id):
                found = LOCK_WAIT.search(entry.user_message or "")
                lock_wait += float(found.group(1)) if found else 0.0
    span = max(e for _, e in evaluation) - min(s for s, _ in evaluation) if evaluation else float("nan")
    return {"evaluation_s": span, "groups": dict(per_group), "lock_wait_s": lock_wait}


@contextlib.contextmanager
def two_celery_workers(env: dict[str, str], state: Path):
    """Redis on a free port and two dagster-celery workers (test_celery.py's harness); yields the run's env."""
    from madef_assets_tests.celery_cluster import celery_workers, redis_server

    with redis_server(state / "redis") as broker:
        env = {**env, "MADEF_CELERY_BROKER_URL": broker, "MADEF_CELERY_BACKEND_URL": broker}
        with celery_workers(["worker1", "worker2"], broker, CELERY_RUN_CONFIG, env, state):
            yield env


def run_mode(mode: str, root: Path, latency: tuple[float, float]) -> dict:
    servers = {name: OpenAICompatibleServer(latency_s=latency, answer=answer) for name in ("provider", "responder")}
    servers |= {name: OpenAICompatibleServer(latency_s=latency, answer=answer) for name in CANDIDATES}
    with contextlib.ExitStack() as stack:
        for server in servers.values():
            stack.enter_context(server)
        state = root / mode
        profile = bench_profile(
            root / f"{mode}.yaml",
            servers["provider"].base_url,
            servers["responder"].base_url,
            {name: servers[name].base_url for name in CANDIDATES},
            mode,
        )
        state.mkdir(parents=True)
        env = madef_env(profile, state)
        if mode == "celery":
            env = stack.enter_context(two_celery_workers(env, state))
        wall, code = run_madef(env, state)
        requests = sum(server.total_requests for server in servers.values())
    return {"mode": mode, "wall_s": wall, "exit": code, "requests": requests, **where_time_goes(state, profile)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--latency", nargs=2, type=float, default=(0.3, 2.0), metavar=("LOW", "HIGH"))
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="madef-graph-concurrency-"))
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    results = []
    for mode in args.modes:
        results.append(run_mode(mode, root, tuple(args.latency)))
        print(json.dumps(results[-1]), flush=True)
    (root / "numbers.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    serial = next((r for r in results if r["mode"] == "serial"), None)
    print(f"latency per answer {args.latency[0]}-{args.latency[1]} s; state under {root}\n")
    print("| mode | exit | requests | end to end (s) | ratio | 3-candidate evaluation (s) | ratio | lock waits (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        whole = f"{serial['wall_s'] / r['wall_s']:.2f}×" if serial else ""
        evaluation = f"{serial['evaluation_s'] / r['evaluation_s']:.2f}×" if serial else ""
        print(
            f"| {r['mode']} | {r['exit']} | {r['requests']} | {r['wall_s']:.0f} | {whole} | "
            f"{r['evaluation_s']:.0f} | {evaluation} | {r['lock_wait_s']:.1f} |"
        )
    print("\nsummed step seconds per group (steps that overlap both count):\n")
    groups = sorted({g for r in results for g in r["groups"]})
    print("| group | " + " | ".join(r["mode"] for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for group in groups:
        print(f"| {group} | " + " | ".join(f"{r['groups'].get(group, 0.0):.0f}" for r in results) + " |")


if __name__ == "__main__":
    main()
