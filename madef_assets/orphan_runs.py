"""Runs whose `madef run` process died (SIGKILL, OOM, a closed laptop) stay STARTED in the Dagster
instance and keep their slot in the `duckdb` pool, so the next `madef run` would wait for it forever.
`madef run` tags each run with its process; before starting, runs tagged by a process that no longer
exists are marked failed and their pool slots freed. Runs started elsewhere (the web UI, a daemon)
carry no such tag and are left alone."""

from __future__ import annotations

import os
import socket

import psutil
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

PROCESS_TAG = "madef/process"
UNFINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def process_tag(pid: int | None = None) -> str:
    """host:pid:start time, so that a recycled pid does not pass for the process that ran the run."""
    process = psutil.Process(pid or os.getpid())
    return f"{socket.gethostname()}:{process.pid}:{process.create_time():.3f}"


def process_alive(tag: str) -> bool:
    """False only when the tag names a process of this host that is gone; another host's is unknown."""
    host, pid, started = tag.rsplit(":", 2)
    if host != socket.gethostname():
        return True
    try:
        return process_tag(int(pid)) == tag
    except psutil.NoSuchProcess:
        return False


def fail_orphaned_runs(instance: DagsterInstance) -> list[str]:
    """Mark runs of dead `madef run` processes failed and free their pool slots; returns their ids."""
    orphaned = []
    for run in instance.get_runs(filters=RunsFilter(statuses=UNFINISHED)):
        tag = run.tags.get(PROCESS_TAG)
        if not tag or process_alive(tag):
            continue
        instance.report_run_failed(run, message=f"the `madef run` process that ran it ({tag}) is gone")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        orphaned.append(run.run_id)
    return orphaned
