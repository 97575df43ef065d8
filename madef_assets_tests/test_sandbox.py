"""The HumanEval sandbox: ordinary programs score the same under both isolations, and under bubblewrap
each attacking program is stopped — checked from outside the sandbox (the listener got no connection,
the file is unchanged, no process survives), not by what the program says."""

import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from madef_assets.defs.evaluation.general import HumanEvalItem, humaneval_program, load_humaneval
from madef_assets.defs.evaluation.sandbox import (
    isolation_problem,
    no_new_processes_filter,
    read_only_paths,
    run_in_sandbox,
    run_status,
)
from madef_assets.settings import PROJECT_ROOT, ConfigError, parse_sandbox

ATTACKED = 42  # the exit code an attacking program uses when its attack worked
BWRAP_PROBLEM = isolation_problem("bubblewrap")
needs_bwrap = pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=f"no bubblewrap sandbox here: {BWRAP_PROBLEM}")
ISOLATIONS = [pytest.param("bubblewrap", marks=needs_bwrap), "rlimits"]


@pytest.fixture(scope="module")
def humaneval() -> list[HumanEvalItem]:
    return load_humaneval(PROJECT_ROOT / "data" / "general_eval" / "humaneval" / "HumanEval_sample.jsonl.gz")


def processes_with(token: str) -> list[int]:
    """Live processes whose command line holds `token`, from the host's /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if token.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def no_survivors(token: str, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    return processes_with(token) == []


# --- ordinary programs: the same results under both isolations ------------------------------------


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_canonical_solutions_pass_and_a_wrong_one_fails(humaneval, isolation):
    for item in humaneval[:3]:
        result = run_in_sandbox(humaneval_program(item, item.canonical_solution), 10, isolation=isolation)
        assert (result.status, result.passed, result.exit_code) == ("passed", True, 0), result.stderr_tail
    wrong = run_in_sandbox(humaneval_program(humaneval[0], "    return None\n"), 10, isolation=isolation)
    assert (wrong.status, wrong.passed, wrong.exit_code) == ("failed", False, 1)
    assert "AssertionError" in wrong.stderr_tail and len(wrong.stderr_tail) <= 2000


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_hanging_program_times_out_and_leaves_no_process(isolation):
    token = f"madef-hang-{isolation}-{os.getpid()}"
    program = (
        "import subprocess, sys\n"
        "try:\n"
        f"    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', {token!r}])\n"
        "except OSError:\n"
        "    pass\n"
        "while True: pass\n"
    )
    start = time.monotonic()
    result = run_in_sandbox(program, timeout_s=2, memory_mb=512, isolation=isolation)
    assert time.monotonic() - start < 2 + 5
    assert (result.status, result.passed, result.exit_code) == ("timeout", False, None)
    assert no_survivors(token)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_program_killed_by_the_cpu_limit_signal_is_a_timeout(isolation):
    """SIGXCPU, which RLIMIT_CPU sends: -24 from a plain child, 152 (128 + 24) through bwrap."""
    result = run_in_sandbox("import os, signal\nos.kill(os.getpid(), signal.SIGXCPU)\n", 10, isolation=isolation)
    assert result.status == "timeout" and result.exit_code in (-24, 152)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_memory_limit(isolation):
    result = run_in_sandbox("x = bytearray(2_000_000_000)\n", timeout_s=10, memory_mb=256, isolation=isolation)
    assert result.status == "memory" and not result.passed


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_the_parent_environment_is_not_inherited(monkeypatch, isolation):
    monkeypatch.setenv("MADEF_TEST_SECRET", "hunter2")
    program = "import os, sys\nsys.exit(3 if 'MADEF_TEST_SECRET' in os.environ or 'HOME' in os.environ else 0)\n"
    assert run_in_sandbox(program, timeout_s=10, isolation=isolation).status == "passed"


def test_the_working_directory_is_temporary_and_removed(tmp_path):
    """rlimits: the program runs in a fresh temporary folder of the host, removed afterwards."""
    marker = tmp_path / "cwd"
    result = run_in_sandbox(f"import os\nopen({str(marker)!r}, 'w').write(os.getcwd())\n", 10, isolation="rlimits")
    assert result.passed
    cwd = Path(marker.read_text())
    assert cwd.name.startswith("madef-sandbox-") and cwd != Path(os.getcwd()) and not cwd.exists()


# --- attacks: each must be stopped by bubblewrap --------------------------------------------------


@needs_bwrap
def test_no_connection_reaches_a_loopback_port():
    accepted = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    accepted.append(listener.accept()[0])
                except OSError:
                    continue

        thread = threading.Thread(target=accept)
        thread.start()
        program = (
            "import socket, sys\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            f"    sys.exit({ATTACKED})\n"
            "except OSError as error:\n"
            "    print(error, file=sys.stderr)\n"
        )
        result = run_in_sandbox(program, timeout_s=10, isolation="bubblewrap")
        time.sleep(0.3)
        assert accepted == [] and result.exit_code != ATTACKED, result.stderr_tail
        # the control: the same program outside the sandbox does connect
        control = run_in_sandbox(program, timeout_s=10, isolation="rlimits")
        time.sleep(0.3)
        stop.set()
        thread.join()
    assert control.exit_code == ATTACKED and len(accepted) == 1


@needs_bwrap
def test_a_file_outside_the_sandbox_cannot_be_read(tmp_path):
    key = tmp_path / "home" / ".ssh" / "id_ed25519"
    key.parent.mkdir(parents=True)
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY----- fake-secret-material")
    program = (
        "import sys\n"
        "try:\n"
        f"    sys.stderr.write(open({str(key)!r}).read())\n"
        f"    sys.exit({ATTACKED})\n"
        "except OSError as error:\n"
        "    print(error, file=sys.stderr)\n"
    )
    result = run_in_sandbox(program, timeout_s=10, isolation="bubblewrap")
    assert result.exit_code != ATTACKED and "fake-secret-material" not in result.stderr_tail
    assert run_in_sandbox(program, timeout_s=10, isolation="rlimits").exit_code == ATTACKED  # the control


@needs_bwrap
def test_nothing_outside_the_working_directory_can_be_written(tmp_path):
    """Neither a folder of the host (here the test's own) nor the interpreter's read-only prefix."""
    targets = [tmp_path / "escaped.txt", read_only_paths()[0] / "madef-escaped.txt"]
    program = "import sys\nwritten = 0\n"
    for target in targets:
        program += f"try:\n    open({str(target)!r}, 'w').write('x')\n    written += 1\nexcept OSError:\n    pass\n"
    program += f"open('scratch.txt', 'w').write('fine')\nsys.exit({ATTACKED} if written else 0)\n"
    result = run_in_sandbox(program, timeout_s=10, isolation="bubblewrap")
    assert result.status == "passed", result.stderr_tail  # its own working directory is writable
    assert not any(target.exists() for target in targets)


@needs_bwrap
def test_a_new_session_and_a_fork_do_not_escape_the_kill():
    token = f"madef-escape-{os.getpid()}"
    program = (
        "import os, sys, time\n"
        "try:\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(120)', {token!r}])\n"
        "except OSError as error:\n"
        "    print('fork refused:', error, file=sys.stderr)\n"
        "time.sleep(60)\n"
    )
    result = run_in_sandbox(program, timeout_s=2, isolation="bubblewrap")
    assert result.status == "timeout" and "fork refused" in result.stderr_tail
    assert no_survivors(token)


@needs_bwrap
def test_a_fork_bomb_starts_no_process():
    token = f"madef-bomb-{os.getpid()}"
    program = (
        "import os, sys, time\n"
        "started = 0\n"
        "try:\n"
        "    for _ in range(2000):\n"
        "        if os.fork() == 0:\n"
        f"            os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', {token!r}])\n"
        "        started += 1\n"
        "except OSError as error:\n"
        "    print('refused:', error, file=sys.stderr)\n"
        "print('started', started, file=sys.stderr)\n"
    )
    result = run_in_sandbox(program, timeout_s=10, isolation="bubblewrap")
    assert "started 0" in result.stderr_tail, result.stderr_tail
    assert no_survivors(token)


@needs_bwrap
def test_threads_still_work_under_the_process_filter():
    program = (
        "import threading\nresults = []\n"
        "threads = [threading.Thread(target=results.append, args=(i,)) for i in range(4)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\nassert sorted(results) == [0, 1, 2, 3]\n"
    )
    assert run_in_sandbox(program, timeout_s=10, isolation="bubblewrap").status == "passed"


@needs_bwrap
def test_the_parents_secrets_cannot_be_read_through_proc(monkeypatch):
    """The host's /proc is not mounted: no process's environ or cmdline outside the sandbox is visible."""
    monkeypatch.setenv("MADEF_TEST_SECRET", "hunter2-proc")
    program = (
        "import os, sys\n"
        "for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
        "    try:\n"
        "        if b'hunter2-proc' in open(f'/proc/{pid}/environ', 'rb').read():\n"
        f"            sys.exit({ATTACKED})\n"
        "    except OSError:\n"
        "        pass\n"
        f"sys.exit({ATTACKED} if str({os.getpid()}) in os.listdir('/proc') and os.getppid() == {os.getpid()} else 0)\n"
    )
    assert run_in_sandbox(program, timeout_s=10, isolation="bubblewrap").exit_code == 0
    assert run_in_sandbox(program, timeout_s=10, isolation="rlimits").exit_code == ATTACKED  # the control


# --- the pure parts -----------------------------------------------------------------------------


def test_the_process_filter_is_well_formed_for_each_architecture():
    for machine in ("x86_64", "aarch64"):
        program = no_new_processes_filter(machine)
        instructions = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
        assert len(program) % 8 == 0 and instructions[-4:] == [
            (0x06, 0, 0, 0x7FFF0000),  # allow
            (0x06, 0, 0, 0x00050000 | 11),  # EAGAIN
            (0x06, 0, 0, 0x00050000 | 38),  # ENOSYS
            (0x06, 0, 0, 0x80000000),  # kill
        ]
        for index, (code, true, false, _) in enumerate(instructions):
            if code & 0x07 == 0x05:  # a jump lands inside the program
                assert index + 1 + max(true, false) < len(instructions)
    with pytest.raises(ValueError, match="rlimits"):
        no_new_processes_filter("riscv64")


def test_exit_codes_map_to_statuses():
    assert run_status(None, "") == "timeout"
    assert run_status(-24, "") == "timeout" and run_status(128 + 24, "") == "timeout"  # SIGXCPU
    assert run_status(0, "") == "passed"
    assert run_status(1, "MemoryError") == "memory" and run_status(1, "AssertionError") == "failed"


def test_the_profile_names_the_isolation(tmp_path, monkeypatch):
    assert parse_sandbox({}).isolation == "bubblewrap"
    assert parse_sandbox({"isolation": "rlimits"}).isolation == "rlimits"
    with pytest.raises(ConfigError, match="sandbox.isolation must be one of"):
        parse_sandbox({"isolation": "docker"})
    with pytest.raises(ConfigError, match="unknown keys"):
        parse_sandbox({"isolate": "rlimits"})


def test_a_missing_bwrap_is_a_clear_error_naming_the_setting(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    isolation_problem.cache_clear()
    try:
        problem = isolation_problem("bubblewrap")
    finally:
        isolation_problem.cache_clear()
    assert "bwrap is not installed" in problem and "sandbox: {isolation: rlimits}" in problem
    assert isolation_problem("rlimits") is None
