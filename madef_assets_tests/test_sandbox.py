"""The HumanEval sandbox: ordinary programs score the same under both isolations, under bubblewrap each
attacking program is stopped, and no program can choose its own score — checked from outside the sandbox
(the listener got no connection, the file and the sysctl are unchanged, no process survives, the kernel's
view of the run's processes and cgroup), not by what the program says. CI runs these as root."""

import os
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from madef_assets.defs.evaluation.general import (
    HumanEvalItem,
    humaneval_check_call,
    humaneval_program,
    load_humaneval,
)
from madef_assets.defs.evaluation.sandbox import (
    CGROUP_PREFIX,
    SANDBOX_UID,
    TASKS_LIMIT,
    CgroupLayout,
    cgroup_layout,
    isolation_problem,
    no_new_processes_filter,
    parse_cgroup_layout,
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


def sandbox_members() -> list[int]:
    """Host pids of the processes in any run cgroup, from the host's /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"/{CGROUP_PREFIX}" in (entry / "cgroup").read_text():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class Sampler:
    """Calls `sample` every 10 ms in a thread while the block runs; `.values` holds what it returned."""

    def __init__(self, sample) -> None:
        self.sample, self.values, self.stop = sample, [], threading.Event()
        self.thread = threading.Thread(target=self.loop)

    def loop(self) -> None:
        while not self.stop.is_set():
            try:
                self.values.append(self.sample())
            except OSError:
                pass
            time.sleep(0.01)

    def __enter__(self) -> "Sampler":
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop.set()
        self.thread.join()


def leftover_cgroups() -> list[Path]:
    layout = cgroup_layout()
    return [path for parent in layout.parents.values() for path in parent.glob(f"{CGROUP_PREFIX}*")]


def no_survivors(token: str, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    return processes_with(token) == []


# --- ordinary programs: the same results under both isolations ------------------------------------


def run_humaneval(item: HumanEvalItem, completion: str, isolation: str, timeout_s: float = 10):
    program = humaneval_program(item, completion)
    return run_in_sandbox(program, timeout_s, isolation=isolation, check_call=humaneval_check_call(item))


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_canonical_solutions_pass_and_a_wrong_one_fails(humaneval, isolation):
    for item in humaneval[:3]:
        result = run_humaneval(item, item.canonical_solution, isolation)
        assert (result.status, result.passed, result.exit_code) == ("passed", True, 0), result.stderr_tail
    wrong = run_humaneval(humaneval[0], "    return None\n", isolation)
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
    assert result.cpu_seconds > 0.5  # measured by the parent: the cgroup's or the child's CPU time
    assert no_survivors(token)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_the_parent_environment_is_not_inherited(monkeypatch, isolation):
    monkeypatch.setenv("MADEF_TEST_SECRET", "hunter2")
    program = "import os\nassert 'MADEF_TEST_SECRET' not in os.environ and 'HOME' not in os.environ\n"
    assert run_in_sandbox(program, timeout_s=10, isolation=isolation).status == "passed"


def test_the_working_directory_is_temporary_and_removed(tmp_path):
    """rlimits: the program runs in a fresh temporary folder of the host, removed afterwards."""
    marker = tmp_path / "cwd"
    result = run_in_sandbox(f"import os\nopen({str(marker)!r}, 'w').write(os.getcwd())\n", 10, isolation="rlimits")
    assert result.passed
    cwd = Path(marker.read_text())
    assert cwd.name.startswith("madef-sandbox-") and cwd != Path(os.getcwd()) and not cwd.exists()


# --- scoring: a program cannot choose its own result ----------------------------------------------

FORGERIES = {
    "exit() in the function": "    exit()\n",
    "SystemExit(0) in the function": "    raise SystemExit(0)\n",
    "os._exit(0) in the function": "    import os\n    os._exit(0)\n",
    "os._exit(0) at top level": "    return None\nimport os\nos._exit(0)\n",
    "sys.exit(0) at top level": "    return None\nimport sys\nsys.exit(0)\n",
    "a fake secret on every descriptor": (
        "    import os, secrets\n"
        "    for fd in range(1, 64):\n"
        "        try:\n"
        "            os.write(fd, secrets.token_hex(32).encode())\n"
        "        except OSError:\n"
        "            pass\n"
        "    os._exit(0)\n"
    ),
    "MemoryError printed": "    import sys\n    print('MemoryError', file=sys.stderr)\n    raise MemoryError\n",
    "exit 152 (SIGXCPU's code)": "    import os\n    os._exit(152)\n",
    "SIGXCPU sent to itself": "    import os, signal\n    os.kill(os.getpid(), signal.SIGXCPU)\n",
    "SIGKILL sent to itself": "    import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)\n",
    "eval replaced so the check never runs": "    return None\nimport builtins\nbuiltins.eval = lambda *a, **k: None\n",
}


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_completion_cannot_forge_a_pass_a_timeout_or_a_memory_error(humaneval, isolation, forgery):
    result = run_humaneval(humaneval[0], FORGERIES[forgery], isolation)
    assert (result.status, result.passed) == ("failed", False), (forgery, result)
    assert result.oom_kills == 0 and result.cpu_seconds < 5


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_program_that_runs_to_its_end_passes_without_a_check(isolation):
    """No check_call: the harness hands the secret back once the program's last line ran."""
    assert run_in_sandbox("x = 1\n", 10, isolation=isolation).status == "passed"
    assert run_in_sandbox("x = 1\nraise SystemExit(0)\n", 10, isolation=isolation).status == "failed"


@needs_bwrap
def test_memory_limit_is_the_cgroups():
    """Killed by the cgroup's OOM killer (status from its oom_kill count), never past the limit."""
    result = run_in_sandbox("x = bytearray(2_000_000_000)\n", timeout_s=10, memory_mb=256)
    assert (result.status, result.passed, result.exit_code) == ("memory", False, 128 + signal.SIGKILL)
    assert result.oom_kills >= 1 and result.memory_peak_bytes <= 256 * 1024 * 1024


def test_under_rlimits_a_memory_error_is_a_failure():
    """rlimits has no cgroup: the address-space limit makes the allocation fail, and nothing the parent
    measures says "memory"."""
    result = run_in_sandbox("x = bytearray(2_000_000_000)\n", timeout_s=10, memory_mb=256, isolation="rlimits")
    assert (result.status, result.passed) == ("failed", False) and "MemoryError" in result.stderr_tail


def test_statuses_come_from_what_the_parent_measured():
    assert run_status(True, 0.1, 11, 0, False) == "timeout"  # wall clock
    assert run_status(False, 11.2, 11, 0, False) == "timeout"  # CPU time used up
    assert run_status(False, 0.3, 11, 1, False) == "memory"  # the cgroup's OOM killer
    assert run_status(False, 0.3, 11, 0, True) == "passed"
    assert run_status(False, 0.3, 11, 0, False) == "failed"
    assert run_status(False, None, 11, 0, True) == "passed"


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
    program += "open('scratch.txt', 'w').write('fine')\nassert not written\n"
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


@needs_bwrap
def test_the_program_never_runs_as_host_root():
    """The kernel's view (host /proc) of every bwrap and interpreter process in the run's cgroup while the
    program sleeps: real, effective, saved and filesystem uid and gid are 65534, no supplementary group."""

    def identities():
        seen = []
        for pid in sandbox_members():
            exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
            if exe == "bwrap" or exe.startswith("python"):
                status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
                seen.append((exe, status["Uid"].split(), status["Gid"].split(), status["Groups"].split()))
        return seen

    with Sampler(identities) as sampler:
        run_in_sandbox("import time\ntime.sleep(1)\n", timeout_s=10)
    seen = [identity for sample in sampler.values for identity in sample]
    assert any(exe.startswith("python") for exe, *_ in seen)
    nobody = [str(SANDBOX_UID)] * 4
    assert all(uids == nobody and gids == nobody and groups == [] for _, uids, gids, groups in seen), seen


HARMLESS_SYSCTL = Path("/proc/sys/vm/stat_interval")  # seconds between VM statistics updates


def sysctl_attack(target: Path) -> str:
    return (
        "import sys\n"
        "core_pattern = open('/proc/sys/kernel/core_pattern').read()\n"  # read only: never written
        f"value = open({str(target)!r}).read().strip()\n"
        "try:\n"
        f"    open({str(target)!r}, 'w').write(str(int(value) + 1))\n"
        "except OSError as error:\n"
        "    print('refused:', error, file=sys.stderr)\n"
    )


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_global_sysctls_cannot_be_written(isolation):
    """The sandbox (host uid 65534, /proc/sys read-only) cannot change a global sysctl; the unisolated
    control, as root, can. Read from outside, restored at once if it changed."""
    if os.geteuid() != 0 and isolation == "rlimits":
        pytest.skip("the control needs root to write a sysctl")
    before, core_pattern = HARMLESS_SYSCTL.read_text(), Path("/proc/sys/kernel/core_pattern").read_text()
    result = run_in_sandbox(sysctl_attack(HARMLESS_SYSCTL), timeout_s=10, isolation=isolation)
    after = HARMLESS_SYSCTL.read_text()
    if after != before:
        HARMLESS_SYSCTL.write_text(before)
    assert Path("/proc/sys/kernel/core_pattern").read_text() == core_pattern
    if isolation == "bubblewrap":
        assert after == before and "refused" in result.stderr_tail, result.stderr_tail
    else:
        assert after == str(int(before) + 1) + "\n"  # the control: the attack itself works


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_no_nested_user_namespace(isolation):
    """unshare(CLONE_NEWUSER) inside the sandbox fails: seen from the host, the interpreter stays in the
    user namespace of its parent (bwrap's). The unisolated control (as root) does get a new one."""
    if os.geteuid() != 0 and isolation == "rlimits":
        pytest.skip("the control needs root for unshare")
    name = f"madef-ns-{os.getpid() % 100000}"[:15]
    program = (
        "import ctypes, sys, time\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"libc.prctl(15, {name.encode()!r})\n"  # PR_SET_NAME: only for the test to find this process
        "if libc.unshare(0x10000000) != 0:\n"  # CLONE_NEWUSER
        "    print('unshare refused, errno', ctypes.get_errno(), file=sys.stderr)\n"
        "time.sleep(1.5)\n"
    )

    def namespaces():
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                return os.readlink(entry / "ns" / "user"), os.readlink(f"/proc/{parent}/ns/user")
        raise FileNotFoundError(name)

    with Sampler(namespaces) as sampler:
        result = run_in_sandbox(program, timeout_s=10, isolation=isolation)
    assert sampler.values, result.stderr_tail
    own, parents = sampler.values[-1]
    if isolation == "bubblewrap":
        assert own == parents and "unshare refused" in result.stderr_tail
    else:
        assert own != parents  # the control


@needs_bwrap
def test_fallocate_and_fchmod_reach_no_host_file(tmp_path):
    """The test's own descriptors 0-2 point at a host file (as pytest's capture files did): the program's
    fallocate(KEEP_SIZE, 1 GiB) and fchmod on every descriptor it has change no host file and reserve no
    host disk."""
    host_file = tmp_path / "captured.txt"
    host_file.write_text("captured output\n")
    host_file.chmod(0o600)
    program = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "for fd in range(256):\n"
        "    libc.fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long(1 << 30))\n"  # FALLOC_FL_KEEP_SIZE
        "    try:\n"
        "        os.fchmod(fd, 0o777)\n"
        "    except OSError:\n"
        "        pass\n"
        "import time\ntime.sleep(0.5)\n"
    )
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    stat_before = host_file.stat()
    free_before = min(os.statvfs(path).f_bavail * os.statvfs(path).f_frsize for path in (tmp_path, "/tmp"))
    try:
        with open(host_file, "r+b") as handle:
            for fd in (0, 1, 2):
                os.dup2(handle.fileno(), fd)
        with Sampler(lambda: min(os.statvfs(p).f_bavail * os.statvfs(p).f_frsize for p in (tmp_path, "/tmp"))) as free:
            result = run_in_sandbox(program, timeout_s=10)
    finally:
        for fd, copy in zip((0, 1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
    stat_after = host_file.stat()
    assert result.status == "passed", result.stderr_tail
    assert (stat_after.st_mode, stat_after.st_size, stat_after.st_blocks) == (
        stat_before.st_mode,
        stat_before.st_size,
        stat_before.st_blocks,
    )
    assert min(free.values) > free_before - 512 * 1024 * 1024


FILL_TMPFS = (  # files of 8 MiB: each is under the 10 MB file-size limit
    "import os\n"
    "chunk = b'x' * (1 << 20)\n"
    "for folder in ('/tmp', '/sandbox', '/dev/shm', '/dev'):\n"
    "    try:\n"
    "        for number in range(512):\n"
    "            with open(os.path.join(folder, f'filler{number}'), 'wb', buffering=0) as filler:\n"
    "                for _ in range(8):\n"
    "                    filler.write(chunk)\n"
    "    except OSError:\n"
    "        pass\n"
)


@needs_bwrap
def test_each_tmpfs_is_size_limited():
    """With memory to spare the filler stops at the tmpfs sizes (64 + 64 + 8 MiB): the cgroup's peak says so."""
    result = run_in_sandbox(FILL_TMPFS, timeout_s=20, memory_mb=1024)
    assert result.status == "passed", result.stderr_tail
    assert 136 * 1024 * 1024 < result.memory_peak_bytes < 200 * 1024 * 1024


@needs_bwrap
@pytest.mark.parametrize(
    "filler",
    [
        FILL_TMPFS,
        "import os\nfor _ in range(768):\n    fd = os.memfd_create('filler')\n"  # 8 MiB each: under the file limit
        "    for _ in range(8):\n        os.write(fd, b'x' * (1 << 20))\n",
    ],
    ids=["tmpfs", "memfd"],
)
def test_tmpfs_and_memfd_fillers_are_stopped_by_the_memory_limit(filler):
    """tmpfs and memfd pages are charged to the run's cgroup: killed at the limit (status from the cgroup's
    OOM count), the peak within it, the host's available memory not drained (the memfd filler wants 6 GiB)."""

    def available() -> int:
        line = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemAvailable"))
        return int(line.split()[1]) * 1024

    before = available()
    with Sampler(available) as host:
        result = run_in_sandbox(filler, timeout_s=20, memory_mb=96)
    assert (result.status, result.passed) == ("memory", False), result
    assert result.oom_kills >= 1 and result.memory_peak_bytes <= 96 * 1024 * 1024
    assert min(host.values) > before - 2 * 1024**3


@needs_bwrap
def test_a_thread_bomb_is_capped_by_the_task_limit():
    """2,000 threads asked for: the host never sees more than TASKS_LIMIT tasks in the run's cgroup, and
    the cgroup counted the refusals."""
    program = (
        "import threading, time\n"
        "started = 0\n"
        "try:\n"
        "    for _ in range(2000):\n"
        "        threading.Thread(target=time.sleep, args=(3,), daemon=True).start()\n"
        "        started += 1\n"
        "except RuntimeError as error:\n"
        "    print('refused after', started, error)\n"
        "time.sleep(1)\n"
    )

    def tasks() -> int:
        return sum(len(os.listdir(f"/proc/{pid}/task")) for pid in sandbox_members())

    with Sampler(tasks) as sampler:
        result = run_in_sandbox(program, timeout_s=20, memory_mb=1024)
    assert 0 < max(sampler.values) <= TASKS_LIMIT
    assert result.tasks_refused >= 1


@needs_bwrap
def test_host_processes_cannot_be_signalled():
    """A host process running as the sandbox's own uid survives kill(its pid) and kill(-1) from inside."""
    sleeper = (
        subprocess.Popen(["sleep", "30"], user=SANDBOX_UID, group=SANDBOX_UID, extra_groups=[])
        if os.geteuid() == 0
        else subprocess.Popen(["sleep", "30"])
    )
    try:
        program = (
            "import os, signal\n"
            "for target in (" + str(sleeper.pid) + ", -1):\n"
            "    try:\n"
            "        os.kill(target, signal.SIGKILL)\n"
            "    except OSError:\n"
            "        pass\n"
        )
        run_in_sandbox(program, timeout_s=10)
        time.sleep(0.2)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


@needs_bwrap
def test_every_run_cgroup_is_removed():
    """After a passing, a timed-out and an OOM-killed run: no run cgroup left under any controller."""
    assert leftover_cgroups() == []
    run_in_sandbox("pass\n", timeout_s=10)
    run_in_sandbox("while True: pass\n", timeout_s=1)
    run_in_sandbox("x = bytearray(1_000_000_000)\n", timeout_s=10, memory_mb=64)
    assert leftover_cgroups() == [] and sandbox_members() == []


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


V1_HYBRID_MOUNTINFO = """\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 30 0:33 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
39 30 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_HYBRID_SELF = "8:pids:/\n4:memory:/jobs/j1\n2:cpuacct:/\n1:cpu:/\n0::/\n"


def test_the_cgroup_layout_is_read_from_mountinfo():
    layout = parse_cgroup_layout(V1_HYBRID_MOUNTINFO, V1_HYBRID_SELF, "")
    assert layout == CgroupLayout(
        1,
        {
            "memory": Path("/sys/fs/cgroup/memory/jobs/j1"),
            "pids": Path("/sys/fs/cgroup/pids"),
            "cpuacct": Path("/sys/fs/cgroup/cpuacct"),
        },
    )
    v2 = "40 30 0:36 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n"
    assert parse_cgroup_layout(v2, "0::/user.slice/job\n", "cpu memory pids") == CgroupLayout(
        2, {"unified": Path("/sys/fs/cgroup/user.slice/job")}
    )
    # a container whose cgroup namespace root is its own cgroup: mountinfo root and own path are both /
    assert parse_cgroup_layout(v2.replace(" / /sys", " /kubepods/x /sys"), "0::/\n", "memory pids") == CgroupLayout(
        2, {"unified": Path("/sys/fs/cgroup")}
    )
    problem = parse_cgroup_layout(v2, "0::/job\n", "cpu io")
    assert "memory, pids, cpuacct" in problem and "v2 offering the memory and pids" in problem


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
