"""Runs of `madef run` launched through the Dagster instance's run launcher, as the web UI launches them.

`madef run` starts a code server for the definitions (`dagster code-server start`, on a free loopback port,
for as long as it runs) and launches each run with `dagster job launch` against it: the instance's run
coordinator and run launcher take it from there. With madef's own instance (DefaultRunCoordinator,
DefaultRunLauncher) every run gets a process of its own, started by the code server; an instance configured
with another launcher (Docker, Kubernetes) or with the queued coordinator and a `dagster-daemon` launches
there instead. The runs' logs go to the code server's log file; `madef run` polls the instance for each run's
end, tags a run started here with its run worker's process identity (so a later `madef run` can fail it if
that process dies unseen), and terminates the runs it launched when it is interrupted or fails."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus
from grpc_health.v1 import health_pb2, health_pb2_grpc

from madef_assets.orphan_runs import PROCESS_TAG, process_tag
from madef_assets.secret_hygiene import child_env

LOCATION_NAME = "madef"
HEALTH_SERVICE = "DagsterApi"  # the service name Dagster's code servers answer gRPC health checks for
STARTUP_TIMEOUT_S = 300
LAUNCH_TIMEOUT_S = 300
WORKER_STARTED = "Started process for run"  # the engine event of a run worker started by a code server


class LaunchError(RuntimeError):
    """The code server did not come up, or a run could not be launched."""


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def end_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies, even by SIGKILL (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def dagster_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dagster", *args]


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def launch_env() -> dict[str, str]:
    """`dagster job launch` only asks the code server for a run: no credential (the code server, which
    starts the run workers, keeps madef run's environment)."""
    return child_env()


class CodeServer:
    """`dagster code-server start` for `module` on a free loopback port, with a workspace file naming it."""

    def __init__(self, module: str, log_dir: Path):
        self.module = module
        self.log_path = log_dir / f"code_server_{time.strftime('%Y%m%d-%H%M%S')}_{os.getpid()}.log"
        self.workspace = log_dir / f"workspace_{os.getpid()}.yaml"
        self.port = free_loopback_port()
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> CodeServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.workspace.write_text(
            "load_from:\n  - grpc_server:\n"
            f"      host: 127.0.0.1\n      port: {self.port}\n      location_name: {LOCATION_NAME}\n",
            encoding="utf-8",
        )
        command = dagster_command("code-server", "start", "-m", self.module, "--host", "127.0.0.1")
        command += ["--port", str(self.port), "--location-name", LOCATION_NAME]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=end_with_parent
            )
        try:
            self.wait_until_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process.poll() is not None:
                    raise LaunchError(f"the code server exited ({self.process.returncode}):\n{log_tail(self.log_path)}")
                with contextlib.suppress(grpc.RpcError):
                    answer = health.Check(health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=2)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                if time.monotonic() > deadline:
                    raise LaunchError(f"the code server did not serve within {STARTUP_TIMEOUT_S} s: {self.log_path}")
                time.sleep(0.5)

    def launch(self, job: str, run_id: str, tags: dict[str, str], run_config: dict) -> None:
        """`dagster job launch` of `job` as run `run_id`; LaunchError with the command's last lines if it fails."""
        command = dagster_command("job", "launch", "-w", str(self.workspace), "-j", job, "--run-id", run_id)
        command += ["--tags", json.dumps(tags), "--config-json", json.dumps(run_config)]
        done = subprocess.run(
            command,
            env=launch_env(),
            capture_output=True,
            text=True,
            timeout=LAUNCH_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            lines = (done.stdout + done.stderr).strip().splitlines()
            errors = [line for line in lines[:-15] if "Error:" in line]  # the message above a long stack trace
            detail = "\n".join(errors[:3] + lines[-15:])
            raise LaunchError(f"`dagster job launch -j {job}` failed ({done.returncode}):\n{detail}")

    def stop(self) -> None:
        """SIGTERM; the code server stops once the runs it started have ended."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def run_worker_pid(instance: DagsterInstance, run_id: str) -> int | None:
    """The pid of the process a code server started for the run, from the run's engine event; None before
    that event, or when the launcher starts runs elsewhere (a container, a pod)."""
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        if record.message.startswith(WORKER_STARTED):
            pid = record.dagster_event.engine_event_data.metadata.get("pid")
            return int(pid.value) if pid is not None else None
    return None


def tag_run_worker(instance: DagsterInstance, run: DagsterRun) -> bool:
    """Tag the run with its worker's process identity once the worker is known; True when tagged (or when
    there is nothing to tag: the run ended, or was tagged before)."""
    if PROCESS_TAG in run.tags or run.is_finished:
        return True
    pid = run_worker_pid(instance, run.run_id)
    if pid is None:
        return False
    try:
        instance.add_run_tags(run.run_id, {PROCESS_TAG: process_tag(pid)})
    except (OSError, ValueError, IndexError):  # the worker has already gone; the code server reports its end
        pass
    return True


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) here (in the main thread), so the runs launched are terminated on the
    way out as on Ctrl-C; the handler before is restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def terminate(instance: DagsterInstance, run_ids: list[str]) -> None:
    """Ask the run launcher to end each run that has not ended (SIGTERM to a local run worker: the ledger
    keeps the answers received so far)."""
    for run_id in run_ids:
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            with contextlib.suppress(Exception):  # a run this launcher cannot end is left for the web UI
                instance.run_launcher.terminate(run_id)


def still_queued_note(run_id: str, status: DagsterRunStatus, waited_s: float) -> str | None:
    if status == DagsterRunStatus.QUEUED and waited_s > 60:
        return (
            f"run {run_id} is still queued: this instance's QueuedRunCoordinator launches runs from a running "
            "`dagster-daemon run` (madef's own instance launches at once)"
        )
    return None
