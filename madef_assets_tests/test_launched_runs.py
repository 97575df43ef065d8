"""`madef run` with execution.max_concurrent_runs > 1 launches its runs through the instance's run launcher
(a code server it starts, DefaultRunLauncher): failures and lost run workers are reported, later waves are
not started, an interrupted `madef run` ends the runs it launched."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from madef_assets.cli import INSTANCE_MARK, INSTANCE_YAML, PlannedRun, launch_waves, prepare_dagster_home
from madef_assets.launched_runs import LaunchError, launch_env, run_worker_pid, still_queued_note
from madef_assets.orphan_runs import PROCESS_TAG, parse_process_tag
from madef_assets.project import PROJECT_ROOT

pytestmark = pytest.mark.alone  # interrupts `madef run` and waits for its runs to end: run after the parallel part

DEFS = "madef_assets_tests.launch_defs"
GRPC_INFO_TAG = ".dagster/grpc_info"  # set by Dagster's DefaultRunLauncher on the runs it launches


@pytest.fixture
def instance(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(PROJECT_ROOT)
    prepare_dagster_home(tmp_path)
    with DagsterInstance.get() as instance:
        yield instance


def runs_of(instance, job: str) -> list[DagsterRun]:
    return [r.dagster_run for r in instance.get_run_records(filters=RunsFilter(job_name=job))]


def release_when_tagged(instance, release) -> None:
    """Let the waiting run end once `madef run` has tagged it with its run worker's identity."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if any(PROCESS_TAG in run.tags for run in runs_of(instance, "waits")):
            break
        time.sleep(0.2)
    release.touch()


def test_failed_and_lost_runs_are_reported_and_the_next_wave_never_starts(instance, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCH_TEST_RELEASE", str(tmp_path / "release"))
    waves = [[PlannedRun("waits"), PlannedRun("fails"), PlannedRun("loses_its_worker")], [PlannedRun("succeeds")]]
    releaser = threading.Thread(target=release_when_tagged, args=(instance, tmp_path / "release"))
    releaser.start()
    try:
        assert not launch_waves(instance, waves, 3, {}, DEFS)
    finally:
        (tmp_path / "release").touch()
        releaser.join()
    out, err = capsys.readouterr()
    assert not runs_of(instance, "succeeds")  # the second wave was not launched
    (succeeded,) = runs_of(instance, "waits")
    (failed,) = runs_of(instance, "fails")
    (lost,) = runs_of(instance, "loses_its_worker")
    assert (succeeded.status, failed.status, lost.status) == (DagsterRunStatus.SUCCESS,) + (
        DagsterRunStatus.FAILURE,
    ) * 2
    assert f"run {succeeded.run_id} (waits): succeeded" in out
    assert f"run {failed.run_id} (fails): FAILED" in out and f"run {lost.run_id} (loses_its_worker): FAILED" in out
    assert "refused on purpose" in err
    assert all(GRPC_INFO_TAG in run.tags for run in (succeeded, failed, lost))  # launched, not executed here
    worker = parse_process_tag(succeeded.tags[PROCESS_TAG])
    assert worker["pid"] == run_worker_pid(instance, succeeded.run_id) != os.getpid()


def test_a_job_the_code_server_lacks_is_a_launch_error(instance):
    with pytest.raises(LaunchError, match="no_such_job"):
        launch_waves(instance, [[PlannedRun("no_such_job")]], 2, {}, DEFS)


INTERRUPTED = textwrap.dedent(
    f"""
    from dagster import DagsterInstance
    from madef_assets.cli import PlannedRun, launch_waves, prepare_dagster_home
    from pathlib import Path
    import os

    prepare_dagster_home(Path(os.environ["DAGSTER_HOME"]))
    with DagsterInstance.get() as instance:
        launch_waves(instance, [[PlannedRun("waits")], [PlannedRun("succeeds")]], 2, {{}}, {DEFS!r})
    """
)


@pytest.mark.parametrize("interruption", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_madef_run_ends_the_runs_it_launched(tmp_path, interruption):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "LAUNCH_TEST_RELEASE": str(tmp_path / "never")}
    (tmp_path / "home").mkdir()
    process = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED],
        env=env,
        cwd=PROJECT_ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 180
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        while not any(r.status == DagsterRunStatus.STARTED for r in runs_of(instance, "waits")):
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
            time.sleep(0.5)
        process.send_signal(interruption)
        output = process.communicate(timeout=120)[0]
        assert process.returncode != 0, output
        (waiting,) = runs_of(instance, "waits")
        assert not runs_of(instance, "succeeds")
    assert waiting.status == DagsterRunStatus.CANCELED, output


def test_madef_rewrites_its_own_older_instance_file_and_leaves_a_users(tmp_path, monkeypatch):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for home, text in ((ours, f"{INSTANCE_MARK} an older one\n"), (theirs, "telemetry:\n  enabled: false\n")):
        home.mkdir()
        (home / "dagster.yaml").write_text(text)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        prepare_dagster_home(tmp_path)
    assert (ours / "dagster.yaml").read_text() == INSTANCE_YAML
    assert (theirs / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"


def test_a_run_queued_for_a_minute_names_the_missing_daemon():
    assert still_queued_note("r1", DagsterRunStatus.QUEUED, waited_s=59) is None
    assert "dagster-daemon" in still_queued_note("r1", DagsterRunStatus.QUEUED, waited_s=61)
    assert still_queued_note("r1", DagsterRunStatus.STARTED, waited_s=61) is None


def test_dagster_job_launch_gets_no_credential(monkeypatch):
    monkeypatch.setenv("PROVIDER_API_KEY", "sk-launch-test-0123456789abcdef")
    monkeypatch.setenv("MADEF_PROFILE", "demo")
    env = launch_env()
    assert "PROVIDER_API_KEY" not in env and "sk-launch-test-0123456789abcdef" not in env.values()
    assert env["MADEF_PROFILE"] == "demo"
