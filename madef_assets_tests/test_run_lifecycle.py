"""How a run ends: SIGTERM writes the ledger rows waiting (like SIGINT), in a plain process, under
`dagster asset materialize` and under execute_in_process (what `madef run` calls); the next `madef run`
fails the runs of dead processes only, never one it cannot check (another kernel or pid namespace under
the same hostname, an older madef's tag)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

from madef_assets.cli import INSTANCE_YAML
from madef_assets.orphan_runs import PROCESS_TAG, UncheckableProcess, fail_orphaned_runs, process_gone, process_tag
from madef_assets_tests.ledger_process import MATERIALIZE_COMMAND, ledger_rows, process_env
from madef_assets_tests.openai_server import OpenAICompatibleServer

VENV_BIN = os.path.dirname(sys.executable)
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.alone  # signals processes and waits for them against deadlines: run after the parallel part


# --- SIGTERM -------------------------------------------------------------------------------------------

WRITER_SCRIPT = """
import signal, sys, time
from madef_assets.llm.ledger import Ledger, LedgerWriter, ledger_key

class SlowLedger(Ledger):
    def write(self, rows):
        time.sleep(float(sys.argv[3]))  # a slow disk: the last flush takes this long
        return super().write(rows)

signal.signal(signal.SIGINT, signal.default_int_handler)  # as an interactive shell leaves it
ledger = SlowLedger(sys.argv[1])
with LedgerWriter(ledger, rows=10**6, seconds=3600) as writer:  # nothing is flushed before the end
    for i in range(int(sys.argv[2])):
        key = ledger_key("generate", "openai", {}, {}, str(i), "v1")
        writer.add({"key": key, "role": "judge", "kind": "generate", "backend": "openai", "model": "{}",
                    "template_version": "v1", "params": "{}", "prompt": str(i), "output": "yes", "status": "ok",
                    "error": None, "prompt_tokens": None, "completion_tokens": None, "latency_s": None,
                    "run_id": None})
    print("added", flush=True)
    time.sleep(120)
"""


def start_writer(tmp_path, rows: int, write_delay_s: float) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(tmp_path / "w.duckdb"), str(rows), str(write_delay_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert process.stdout.readline().strip() == "added", process.stderr.read()
    return process


@pytest.mark.parametrize(
    "signum, returncode", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, -signal.SIGINT)]
)
def test_sigterm_writes_the_rows_waiting_as_sigint_does(tmp_path, signum, returncode):
    process = start_writer(tmp_path, rows=500, write_delay_s=0)
    process.send_signal(signum)
    assert process.wait(timeout=60) == returncode, process.stderr.read()
    assert ledger_rows(tmp_path / "w.duckdb") == 500


def test_a_second_sigterm_during_the_last_flush_does_not_cut_it_short(tmp_path):
    process = start_writer(tmp_path, rows=300, write_delay_s=1.5)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the last flush is writing now (it takes 1.5 s)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM, process.stderr.read()
    assert ledger_rows(tmp_path / "w.duckdb") == 300


def test_the_writer_leaves_a_handler_of_the_process_and_restores_the_default(tmp_path):
    from madef_assets.llm.ledger import Ledger, LedgerWriter

    ledger = Ledger(tmp_path / "h.duckdb")
    original = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with LedgerWriter(ledger):
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

        def own_handler(signum, frame):
            pass

        signal.signal(signal.SIGTERM, own_handler)
        with LedgerWriter(ledger):
            assert signal.getsignal(signal.SIGTERM) is own_handler
        assert signal.getsignal(signal.SIGTERM) is own_handler
        # off the main thread no handler can be set: the writer works without one
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        errors = []

        def use_writer():
            try:
                with LedgerWriter(ledger):
                    pass
            except BaseException as exc:  # reported to the test's thread
                errors.append(exc)

        worker = threading.Thread(target=use_writer)
        worker.start()
        worker.join()
        assert errors == [] and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, original)


class StallingServer(OpenAICompatibleServer):
    """Answers the first `answers` requests, then holds every later one until the test ends: the client
    has exactly `answers` answers when it is signalled."""

    def __init__(self, answers: int, **options):
        super().__init__(**options)
        self.answers, self.admitted, self.answered = answers, 0, 0
        self.released = threading.Event()

    def respond(self, prompt, request, chat):
        with self._lock:
            admitted = self.admitted < self.answers
            self.admitted += admitted
        if not admitted:
            self.released.wait()
        response = super().respond(prompt, request, chat)
        with self._lock:
            self.answered += admitted
        return response

    def __exit__(self, *exc) -> None:
        self.released.set()
        super().__exit__(*exc)


LEDGER_ASSET_COMMANDS = {
    "plain LLMResource": [
        sys.executable,
        "-c",
        "import madef_assets_tests.ledger_defs as d\n"
        "d.resources_from_env()['labeler'].generate(d.test_prompts(1000), template_version='ledger-test-v1')",
    ],
    "dagster asset materialize": MATERIALIZE_COMMAND,
    "execute_in_process (madef run)": [
        sys.executable,
        "-c",
        "import madef_assets_tests.ledger_defs as d\n"
        "from dagster import DagsterInstance, materialize\n"
        "materialize([d.llm_answers], resources=d.resources_from_env(), instance=DagsterInstance.get())",
    ],
}


@pytest.mark.parametrize("command", LEDGER_ASSET_COMMANDS)
def test_sigterm_during_llm_calls_keeps_every_answer_received(tmp_path, command):
    """300 answers (256 flushed by count, 44 waiting), then the server holds every call and the process
    gets SIGTERM: all 300 are in the ledger afterwards."""
    answers = 300
    with StallingServer(answers, latency_s=0.01) as server:
        env = {**os.environ, **process_env(tmp_path, server.base_url, 1000, 4, tmp_path)}
        log = tmp_path / "run.log"
        process = subprocess.Popen(
            LEDGER_ASSET_COMMANDS[command], env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w")
        )
        deadline = time.monotonic() + 120
        while server.answered < answers and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert server.answered == answers and process.poll() is None, log.read_text()[-3000:]
        time.sleep(1.0)  # the client reads the last answers; the writer's 2 s timer has not fired yet
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=60)
    assert returncode != 0, log.read_text()[-3000:]
    assert ledger_rows(tmp_path / "ledger.duckdb") == answers, log.read_text()[-3000:]


def test_sigterm_to_a_run_launched_by_a_code_server_keeps_every_answer_received(tmp_path):
    """A run launched through a code server (`dagster code-server start`, `dagster job launch`, as a
    deployment's UI or daemon launches it): the process making the calls (found by its connection to
    the server) gets SIGTERM after 300 answers and ends; all 300 are in the ledger."""
    import socket

    import psutil

    answers = 300
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        INSTANCE_YAML + "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with StallingServer(answers, latency_s=0.01) as server:
        env = {**os.environ, **process_env(tmp_path, server.base_url, 1000, 4, home)}
        log = tmp_path / "code_server.log"
        code_server = subprocess.Popen(
            [os.path.join(VENV_BIN, "dagster"), "code-server", "start", "-m", "madef_assets_tests.ledger_defs"]
            + ["-p", str(port)],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        try:
            launch = [os.path.join(VENV_BIN, "dagster"), "job", "launch", "-j", "__ASSET_JOB", "--grpc-port", str(port)]
            deadline = time.monotonic() + 120
            while subprocess.run(launch, env=env, cwd=PROJECT_ROOT, capture_output=True).returncode != 0:
                assert time.monotonic() < deadline and code_server.poll() is None, log.read_text()[-3000:]
                time.sleep(1)
            while server.answered < answers and time.monotonic() < deadline:
                time.sleep(0.02)
            assert server.answered == answers, log.read_text()[-3000:]
            time.sleep(0.5)  # the client reads the last answers; the writer's 2 s timer has not fired yet
            server_port = int(server.base_url.rsplit(":", 1)[1].split("/")[0])
            callers = {
                c.pid for c in psutil.net_connections("tcp") if c.raddr and c.raddr.port == server_port and c.pid
            }
            assert len(callers) == 1, callers
            run_worker = psutil.Process(callers.pop())
            run_worker.send_signal(signal.SIGTERM)
            run_worker.wait(timeout=60)
            assert ledger_rows(tmp_path / "ledger.duckdb") == answers, log.read_text()[-3000:]
        finally:
            for process in psutil.Process(code_server.pid).children(recursive=True):
                process.kill()
            code_server.kill()
            code_server.wait()


# --- orphaned runs -------------------------------------------------------------------------------------


def with_identity(tag: str, **changes) -> str:
    return json.dumps({**json.loads(tag), **changes})


@pytest.fixture
def child():
    """A live process of this namespace, killed (and reaped) at the end."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def gone_process_tag() -> str:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    tag = process_tag(process.pid)
    process.kill()
    process.wait()
    return tag


def bwrap() -> str:
    path = shutil.which("bwrap")
    assert path, "bubblewrap (bwrap) makes the pid namespaces of these tests; the sandbox needs it too"
    return path


def other_namespace_tag() -> str:
    """The tag of a process in a pid namespace of its own under this hostname (a container with host
    networking), which has exited."""
    result = subprocess.run(
        [
            bwrap(),
            "--unshare-pid",
            "--dev-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            sys.executable,
            "-c",
            "from madef_assets.orphan_runs import process_tag; print(process_tag())",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=True,
    )
    return result.stdout.strip()


def test_a_process_is_gone_only_when_this_namespace_shows_its_pid_free_or_taken_by_another(child):
    import socket

    live = process_tag(child.pid)
    assert process_gone(live) is False
    assert process_gone(process_tag()) is False
    assert process_gone(gone_process_tag()) is True
    # the pid reused: a process with the tagged pid, started at another time
    assert process_gone(with_identity(live, start_ticks=json.loads(live)["start_ticks"] - 1)) is True
    # another kernel or another pid namespace under the same hostname: cannot be checked from here
    gone = gone_process_tag()
    assert json.loads(gone)["host"] == socket.gethostname()
    assert process_gone(with_identity(gone, boot_id="00000000-0000-0000-0000-000000000000")) is False
    assert process_gone(with_identity(gone, pid_ns="pid:[1]")) is False
    other = other_namespace_tag()
    assert json.loads(other)["pid_ns"] != json.loads(live)["pid_ns"]
    assert json.loads(other)["host"] == socket.gethostname()
    assert process_gone(other) is False
    for unreadable in ("host:123:456.789", "{}", '{"boot_id": 1}', "[]", with_identity(live, pid="7")):
        with pytest.raises(UncheckableProcess):
            process_gone(unreadable)


def test_a_zombie_counts_as_gone():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    tag = process_tag(process.pid)
    deadline = time.monotonic() + 30
    while open(f"/proc/{process.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        assert process_gone(tag) is True
    finally:
        process.wait()


def test_a_proc_of_another_pid_namespace_is_not_trusted():
    """In a pid namespace of its own that still sees the host's /proc, a free pid there proves nothing."""
    script = textwrap.dedent(
        """
        import json, os
        from madef_assets.orphan_runs import UncheckableProcess, boot_id, process_gone
        tag = json.dumps({"boot_id": boot_id(), "pid_ns": os.readlink("/proc/self/ns/pid"), "pid": 4194303,
                          "start_ticks": 1})
        try:
            print(process_gone(tag))
        except UncheckableProcess as exc:
            print("uncheckable:", exc)
        """
    )
    result = subprocess.run(
        [bwrap(), "--unshare-pid", "--dev-bind", "/", "/", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=True,
    )
    assert result.stdout.startswith("uncheckable: /proc does not show"), result.stdout + result.stderr


def test_the_next_madef_run_fails_only_runs_whose_process_is_certainly_gone(tmp_path, child):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    live = process_tag(child.pid)
    runs = {
        "killed": {PROCESS_TAG: gone_process_tag()},
        "pid-reused": {PROCESS_TAG: with_identity(live, start_ticks=json.loads(live)["start_ticks"] + 1)},
        "live": {PROCESS_TAG: live},
        "other-namespace": {PROCESS_TAG: other_namespace_tag()},
        "other-machine": {PROCESS_TAG: with_identity(gone_process_tag(), boot_id="another boot")},
        "older-madef": {"madef/process": f"{os.uname().nodename}:{child.pid}:1.000"},
        "unreadable-tag": {PROCESS_TAG: "not json"},
        "web-ui": {},
    }
    with DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.set_concurrency_slots("duckdb", len(runs))
        for name, tags in runs.items():
            instance.add_run(
                DagsterRun(job_name="madef_build", run_id=f"{name}-run", status=DagsterRunStatus.STARTED, tags=tags)
            )
            instance.event_log_storage.claim_concurrency_slot("duckdb", f"{name}-run", "step")
        assert sorted(fail_orphaned_runs(instance)) == ["killed-run", "pid-reused-run"]
        failed = {n for n in runs if instance.get_run_by_id(f"{n}-run").status == DagsterRunStatus.FAILURE}
        assert failed == {"killed", "pid-reused"}
        claims = instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots
        assert sorted(claim.run_id for claim in claims) == sorted(f"{n}-run" for n in runs if n not in failed)
        assert fail_orphaned_runs(instance) == []
