"""A real Celery cluster for the tests: Debian's redis-server on a free loopback port (no persistence, its
files in a temporary folder) and `dagster-celery` workers as separate process groups, each ended with
its children (the prefork pool) however the test ends."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

VENV_BIN = os.path.dirname(sys.executable)
STARTUP_S = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_group(process: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM the process group (a worker shuts down warm), SIGKILL what is left after `grace_s`."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group's other members (pool children) too
    except ProcessLookupError:
        pass
    process.wait()


@contextmanager
def redis_server(folder: Path):
    """A redis-server on 127.0.0.1; yields its URL (database 0)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (scripts/install_test_tools.sh installs Debian's)")
    import redis

    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "redis.log"
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--dir", str(folder), "--logfile", str(log)],
        start_new_session=True,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start: {log.read_text() if log.exists() else ''}")
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_group(process)


def start_worker(name: str, run_config: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """`dagster-celery worker start` (which runs `celery worker` as its child), one task at a time."""
    command = [os.path.join(VENV_BIN, "dagster-celery"), "worker", "start", "-A", "dagster_celery.app"]
    command += ["-y", str(run_config), "-n", name, "--", "--concurrency=1"]
    return subprocess.Popen(
        command,
        env={**env, "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"},
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for_workers(broker_url: str, names: list[str], processes: list[subprocess.Popen], logs: list[Path]):
    """Until every named worker answers a ping through the broker; returns their node names (name@host)."""
    from celery import Celery

    app = Celery(broker=broker_url)
    deadline = time.monotonic() + STARTUP_S
    while True:
        nodes = {node for reply in app.control.ping(timeout=0.5) for node in reply}
        ready = {name: node for name in names for node in nodes if node.startswith(f"{name}@")}
        if len(ready) == len(names):
            return ready
        for process, log in zip(processes, logs, strict=True):
            if process.poll() is not None:
                raise RuntimeError(f"a celery worker exited ({process.returncode}): {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"celery workers not ready after {STARTUP_S} s: {logs[0].read_text()[-3000:]}")


@contextmanager
def celery_workers(names: list[str], broker_url: str, run_config: Path, env: dict[str, str], folder: Path):
    """One worker process group per name; yields {name: (process, node name)}."""
    logs = [folder / f"{name}.log" for name in names]
    processes: list[subprocess.Popen] = []
    try:
        for name, log in zip(names, logs, strict=True):
            processes.append(start_worker(name, run_config, env, log))
        nodes = wait_for_workers(broker_url, names, processes, logs)
        yield {name: (process, nodes[name]) for name, process in zip(names, processes, strict=True)}
    finally:
        for process in processes:
            stop_group(process)
