"""The HumanEval sandbox: ordinary programs score the same under both isolations, under bubblewrap each
attacking program is stopped, and no program can choose its own score — checked from outside the sandbox
(the listener got no connection, the file and the sysctl are unchanged, no process survives, the kernel's
view of the run's processes and cgroup), not by what the program says. CI runs these as root."""

import errno
import json
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from madef_assets.defs.evaluation.general import humaneval_entry_point, humaneval_program
from madef_assets.defs.evaluation.sandbox import (
    CGROUP_PREFIX,
    SANDBOX_UID,
    TASKS_LIMIT,
    CgroupLayout,
    cgroup_layout,
    isolation_problem,
    parse_cgroup_layout,
    read_only_paths,
    run_in_sandbox,
    run_status,
    sandbox_filter,
)
from madef_assets.defs.sources.benchmark_files import HumanEvalItem, load_humaneval
from madef_assets.project import PROJECT_ROOT, ConfigError
from madef_assets.settings import parse_section

pytestmark = pytest.mark.alone  # counts cgroups and processes host-wide: run after the parallel part
ATTACKED = 42  # the exit code an attacking program uses when its attack worked
BWRAP_PROBLEM = isolation_problem("bubblewrap")
needs_bwrap = pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=f"no bubblewrap sandbox here: {BWRAP_PROBLEM}")
ISOLATIONS = [pytest.param("bubblewrap", marks=needs_bwrap), "rlimits"]
# Syscall numbers from the kernel headers (asm/unistd_64.h; asm-generic/unistd.h for aarch64), written out
# here so the filter is checked against them rather than against its own table.
SYSCALLS = {
    "x86_64": {"read": 0, "socket": 41, "socketpair": 53, "clone": 56, "fork": 57, "vfork": 58}
    | {"add_key": 248, "request_key": 249, "keyctl": 250, "perf_event_open": 298, "bpf": 321, "userfaultfd": 323}
    | {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "clone3": 435},
    "aarch64": {"read": 63, "socket": 198, "socketpair": 199, "clone": 220}
    | {"add_key": 217, "request_key": 218, "keyctl": 219, "perf_event_open": 241, "bpf": 280, "userfaultfd": 282}
    | {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "clone3": 435},
}


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
    return run_in_sandbox(program, timeout_s, isolation=isolation, entry_point=humaneval_entry_point(item))


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

# Each beats a naive harness. The exits and the fake secrets pass one that trusts exit code 0; the printed
# MemoryError, the exit code 152 and the signals get "memory" or "timeout" from one that reads them from the
# exit status or the text. The last six passed under the previous harness (which called check on the raw
# candidate with no audit hook): 18 or 20 of the 20 bundled problems each (BENCHMARKS.md §10b).
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
    "an object equal to anything": (
        "    class Anything:\n"
        "        __eq__ = __lt__ = __le__ = __gt__ = __ge__ = __contains__ = lambda self, other: True\n"
        "        __ne__ = lambda self, other: False\n"
        "        __getattr__ = lambda self, name: lambda *args, **kwargs: self\n"
        "        __sub__ = __rsub__ = __add__ = __radd__ = __abs__ = __neg__ = lambda self, *args: self\n"
        "        __bool__ = lambda self: True\n"
        "    return Anything()\n"
    ),
    "an audit hook that replaces check": (
        "    return None\nimport sys\n"
        "sys.addaudithook(lambda event, args: event == 'exec' and globals().update(check=lambda c: None))\n"
    ),
    "a tracer that rebinds check's candidate": (
        "    return None\nimport sys\n"  # no top-level def or class: those end the completion
        "anything = type('Anything', (), {'__eq__': lambda self, other: True})\n"
        "sys.settrace(lambda frame, event, arg: (event == 'call' and frame.f_code.co_name == 'check'"
        " and frame.f_locals.update(candidate=lambda *args, **kwargs: anything())) or None)\n"
    ),
    "an int subclass equal to anything": (
        "    class Yes(int):\n"
        "        __eq__ = lambda self, other: True\n"
        "        __ne__ = lambda self, other: False\n"
        "    return Yes(1)\n"
    ),
    "a str subclass equal to anything": (
        "    class Yes(str):\n"
        "        __eq__ = lambda self, other: True\n"
        "        __ne__ = lambda self, other: False\n"
        "    return Yes('yes')\n"
    ),
    "a list subclass equal to anything": (
        "    class Yes(list):\n"
        "        __eq__ = lambda self, other: True\n"
        "        __ne__ = lambda self, other: False\n"
        "    return Yes()\n"
    ),
}


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_completion_cannot_forge_a_pass_a_timeout_or_a_memory_error(humaneval, isolation, forgery):
    result = run_humaneval(humaneval[0], FORGERIES[forgery], isolation)
    assert (result.status, result.passed) == ("failed", False), (forgery, result)
    assert result.oom_kills == 0 and result.cpu_seconds < 5


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_program_that_runs_to_its_end_passes_without_a_check(isolation):
    """No entry point: the harness hands the secret back once the program's last line ran."""
    assert run_in_sandbox("x = 1\n", 10, isolation=isolation).status == "passed"
    assert run_in_sandbox("x = 1\nraise SystemExit(0)\n", 10, isolation=isolation).status == "failed"


# Harmless on their own: the program runs to its end without an entry point. (A second audit hook is not
# refused but silently dropped, CPython's rule when a hook raises RuntimeError: see FORGERIES.)
REWRITERS = {
    "ctypes": "import ctypes\n",
    "a tracer": "import sys\nsys.settrace(None)\n",
    "a profiler": "import sys\nsys.setprofile(None)\n",
    "/proc/self/mem": "open('/proc/self/mem', 'rb').close()\n",
    "a link to /proc/self/mem": "import os\nos.symlink('/proc/self/mem', 'memory')\n",
}


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("rewriter", REWRITERS)
def test_a_check_fails_when_the_program_reaches_for_what_could_rewrite_it(humaneval, isolation, rewriter):
    """With an entry point the harness refuses, before the program runs, what could rewrite the scoring in
    memory: the canonical solution fails once the program also touches it. Without one (no check to protect)
    the same program runs to its end and passes: the refusal, not the code, made the difference."""
    item = humaneval[0]
    program = humaneval_program(item, item.canonical_solution + REWRITERS[rewriter])
    checked = run_in_sandbox(program, 10, isolation=isolation, entry_point=humaneval_entry_point(item))
    assert (checked.status, checked.passed) == ("failed", False), checked
    assert run_in_sandbox(program, 10, isolation=isolation).status == "passed"


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


def tcp_memory_pages() -> int:
    """Pages held by TCP socket buffers, machine-wide (all network namespaces), from the host's /proc."""
    tcp = next(line.split() for line in Path("/proc/net/sockstat").read_text().splitlines() if line.startswith("TCP:"))
    return int(tcp[tcp.index("mem") + 1])


def tcp_sockets_in_the_sandbox() -> int | None:
    """TCP sockets in use in the run's own network namespace, read from the host (bwrap's outer process is
    in the run's cgroup but in the host's namespace)."""
    counts = []
    for pid in sandbox_members():
        if os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            continue
        for line in Path(f"/proc/{pid}/net/sockstat").read_text().splitlines():
            if line.startswith("TCP:"):
                fields = line.split()
                counts.append(int(fields[fields.index("inuse") + 1]))
    return max(counts, default=None)  # None: no process of the run in its own namespace yet


TCP_FLOOD_MB = 64
TCP_FLOOD = (  # loopback connections, each sender's and receiver's buffers filled, held for a second
    "import socket, sys, time\n"
    "queued, pairs, chunk = 0, [], b'x' * (1 << 20)\n"
    "try:\n"
    "    listener = socket.socket()\n"
    "    listener.bind(('127.0.0.1', 0))\n"
    "    listener.listen(128)\n"
    f"    while queued < {TCP_FLOOD_MB} << 20 and len(pairs) < 100:\n"
    "        client = socket.create_connection(listener.getsockname())\n"
    "        pairs.append((client, listener.accept()[0]))\n"
    "        client.setblocking(False)\n"
    "        try:\n"
    f"            while queued < {TCP_FLOOD_MB} << 20:\n"
    "                queued += client.send(chunk)\n"
    "        except BlockingIOError:\n"
    "            pass\n"
    "except OSError as error:\n"
    "    print('refused:', error, file=sys.stderr)\n"
    "time.sleep(1)\n"
)


@needs_bwrap
def test_no_tcp_socket_can_be_made_so_no_socket_buffer_escapes_the_memory_limit():
    """TCP buffers are kernel memory a cgroup v1 memory limit does not count: the program cannot create a
    TCP socket at all. Seen from the host: no TCP socket in the run's network namespace, the machine's TCP
    buffer pages unchanged (within 16 MiB of other traffic), the cgroup's peak small. The unisolated control
    queues the 64 MiB and the same measure sees it."""
    margin = 4096  # pages: 16 MiB
    before = tcp_memory_pages()
    with Sampler(tcp_memory_pages) as pages, Sampler(tcp_sockets_in_the_sandbox) as sockets:
        result = run_in_sandbox(TCP_FLOOD, timeout_s=20, memory_mb=256)
    assert result.status == "passed", result.stderr_tail
    assert {*sockets.values} == {None, 0}
    assert max(pages.values) < before + margin
    assert result.memory_peak_bytes < 64 * 1024 * 1024
    before = tcp_memory_pages()
    with Sampler(tcp_memory_pages) as control:
        run_in_sandbox(TCP_FLOOD, timeout_s=20, isolation="rlimits")
    assert max(control.values) > before + margin  # the control: the flood is real and the measure sees it


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_unix_sockets_still_work(isolation):
    program = (
        "import socket\n"
        "left, right = socket.socketpair()\n"
        "left.sendall(b'ping')\n"
        "assert right.recv(4) == b'ping'\n"
        "server = socket.socket(socket.AF_UNIX)\n"
        "server.bind('server.sock')\n"
        "server.listen()\n"
        "client = socket.socket(socket.AF_UNIX)\n"
        "client.connect('server.sock')\n"
        "server.accept()[0].sendall(b'pong')\n"
        "assert client.recv(4) == b'pong'\n"
    )
    result = run_in_sandbox(program, timeout_s=10, isolation=isolation)
    assert result.status == "passed", result.stderr_tail


KEYRING_ATTACK = """\
import ctypes, json, secrets, sys
from madef_assets.defs.evaluation.sandbox import run_in_sandbox

libc = ctypes.CDLL(None, use_errno=True)
ADD_KEY, KEYCTL = {add_key}, {keyctl}
JOIN_SESSION_KEYRING, READ, SESSION = 1, 11, -3

def keyring_ids():
    buffer = ctypes.create_string_buffer(4096)
    size = libc.syscall(KEYCTL, READ, SESSION, buffer, 4096)
    assert size >= 0, ctypes.get_errno()
    return sorted(int.from_bytes(buffer.raw[i : i + 4], sys.byteorder) for i in range(0, size, 4))

assert libc.syscall(KEYCTL, JOIN_SESSION_KEYRING, None) > 0  # a new keyring, gone when this process ends
secret = secrets.token_hex(16).encode()
assert libc.syscall(ADD_KEY, b"user", b"madef-host-token", secret, len(secret), SESSION) > 0
before = keyring_ids()
attack = '''
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
found = libc.syscall({request_key}, b"user", b"madef-host-token", None, 0)
buffer = ctypes.create_string_buffer(4096)
for key in (found, -3):  # the key found, the session keyring
    size = libc.syscall({keyctl}, 11, key, buffer, 4096)
    if size > 0:
        sys.stderr.write(buffer.raw[:size].decode("latin-1"))
        for offset in range(0, size, 4):  # each key the keyring links
            linked = int.from_bytes(buffer.raw[offset : offset + 4], sys.byteorder)
            payload = ctypes.create_string_buffer(4096)
            if libc.syscall({keyctl}, 11, linked, payload, 4096) > 0:
                sys.stderr.write(payload.value.decode("latin-1"))
libc.syscall({add_key}, b"user", b"planted", b"x", 1, -3)
print("errno", ctypes.get_errno(), file=sys.stderr)
'''
outcome = {{}}
for isolation in ("bubblewrap", "rlimits"):
    result = run_in_sandbox(attack, timeout_s=10, isolation=isolation)
    outcome[isolation] = {{"secret_seen": secret.decode() in result.stderr_tail, "keys_after": keyring_ids()}}
print(json.dumps({{"keys_before": before, **outcome}}))
"""


@needs_bwrap
@pytest.mark.skipif(platform.machine() not in SYSCALLS, reason="syscall numbers known for x86_64 and aarch64 only")
def test_the_callers_session_keyring_is_out_of_reach():
    """A child process joins a new session keyring holding a secret "user" key (as a login session's would)
    and runs the sandbox: the program's request_key, keyctl READ and add_key find nothing and plant nothing
    (the secret is not in the run's output, the keyring links the same keys afterwards). The unisolated
    control does read the secret and plant a key. The keyring dies with the child process."""
    numbers = SYSCALLS[platform.machine()]
    script = KEYRING_ATTACK.format(**{name: numbers[name] for name in ("add_key", "request_key", "keyctl")})
    child = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr
    outcome = json.loads(child.stdout.splitlines()[-1])
    assert len(outcome["keys_before"]) == 1
    assert outcome["bubblewrap"] == {"secret_seen": False, "keys_after": outcome["keys_before"]}
    control = outcome["rlimits"]
    assert control["secret_seen"] and len(control["keys_after"]) == 2  # the control: the attack itself works


SUBREAPER_RUNS = """\
import ctypes, json, os, time
from pathlib import Path
from madef_assets.defs.evaluation import sandbox

def children():
    pids = [int(pid) for task in Path("/proc/self/task").iterdir() for pid in (task / "children").read_text().split()]
    return {pid: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] for pid in pids}

ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER, as PID 1 of a container is
statuses = [sandbox.run_in_sandbox("x = 1\\n", timeout_s=10).status for _ in range(5)]
after_runs = children()
sandbox.reap_orphaned_inits = lambda: None  # the control: one run without the reaping
sandbox.run_in_sandbox("x = 1\\n", timeout_s=10)
time.sleep(0.5)
unreaped = children()
for pid in unreaped:
    os.waitpid(pid, 0)
print(json.dumps({"statuses": statuses, "children": after_runs, "control": sorted(unreaped.values())}))
"""


@needs_bwrap
def test_a_subreaper_caller_is_left_no_zombie():
    """As PID 1 of a container (or any subreaper) the caller inherits each run's PID-namespace init when
    bwrap exits: after 5 runs a child process that is a subreaper has no child left, zombie or not. The
    control, a run without the reaping, leaves it one zombie (which it then reaps itself)."""
    child = subprocess.run(
        [sys.executable, "-c", SUBREAPER_RUNS], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr
    outcome = json.loads(child.stdout.splitlines()[-1])
    assert outcome == {"statuses": ["passed"] * 5, "children": {}, "control": ["Z"]}


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
        program = sandbox_filter(machine)
        instructions = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
        assert len(program) % 8 == 0 and 0 < len(instructions) <= 4096  # BPF_MAXINSNS
        for index, (code, true, false, _) in enumerate(instructions):
            if code & 0x07 == 0x05:  # a jump lands inside the program
                assert index + 1 + max(true, false) < len(instructions)
    with pytest.raises(ValueError, match="rlimits"):
        sandbox_filter("riscv64")


AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
ALLOW, KILL, ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_PACKET = 1, 2, 10, 16, 17
CLONE_THREAD = 0x00010000


def run_seccomp_filter(program: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """What a classic BPF seccomp program returns for one syscall: an interpreter of the instructions a
    filter may use (linux/filter.h) over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}.
    Any other instruction, a read outside the data or running off the end is an error."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    instructions = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    accumulator, pc = 0, 0
    while True:
        code, true, false, k = instructions[pc]  # IndexError: ran off the end
        pc += 1
        if code == 0x20:  # BPF_LD | BPF_W | BPF_ABS
            assert k % 4 == 0 and k + 4 <= len(data), f"load at {k}"
            accumulator = struct.unpack_from("=I", data, k)[0]
        elif code == 0x06:  # BPF_RET | BPF_K
            return k
        elif code == 0x05:  # BPF_JMP | BPF_JA
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):  # BPF_JMP | JEQ, JGT, JGE, JSET with BPF_K
            taken = {
                0x15: accumulator == k,
                0x25: accumulator > k,
                0x35: accumulator >= k,
                0x45: bool(accumulator & k),
            }[code]
            pc += true if taken else false
        else:
            raise AssertionError(f"instruction {code:#x} at {pc - 1} is not interpreted")


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_the_process_filter_answers_each_syscall_as_intended(machine):
    program, numbers, arch = sandbox_filter(machine), SYSCALLS[machine], AUDIT_ARCH[machine]

    def answer(name: str, *args: int) -> int:
        return run_seccomp_filter(program, numbers[name], arch, args)

    refused = ("add_key", "request_key", "keyctl", "io_uring_setup", "io_uring_enter", "io_uring_register")
    refused += ("userfaultfd", "bpf", "perf_event_open", "clone3")
    for name in refused:
        assert answer(name) == ERRNO | errno.ENOSYS, name
    for name in ("socket", "socketpair"):
        for family in (AF_INET, AF_INET6, AF_NETLINK, AF_PACKET):
            assert answer(name, family, socket.SOCK_STREAM) == ERRNO | errno.EAFNOSUPPORT, (name, family)
        assert answer(name, AF_UNIX, socket.SOCK_STREAM) == ALLOW
        assert answer(name, AF_UNIX | 1 << 32) == ALLOW  # the kernel reads the family as a 32-bit int
    for name in ("fork", "vfork"):
        if name in numbers:
            assert answer(name) == ERRNO | errno.EAGAIN
    assert answer("clone", 0x01200011) == ERRNO | errno.EAGAIN  # glibc's fork()
    assert answer("clone", 0x003D0F00) == ALLOW  # pthread_create's flags include CLONE_THREAD
    assert answer("read", 0) == ALLOW
    assert (
        run_seccomp_filter(program, numbers["socket"], AUDIT_ARCH["aarch64" if machine == "x86_64" else "x86_64"])
        == KILL
    )
    if machine == "x86_64":
        assert run_seccomp_filter(program, 0x40000000 | numbers["read"], arch) == KILL  # an x32 syscall


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
    assert parse_section("sandbox", {}).isolation == "bubblewrap"
    assert parse_section("sandbox", {"isolation": "rlimits"}).isolation == "rlimits"
    with pytest.raises(ConfigError, match="sandbox.isolation: Input should be 'bubblewrap' or 'rlimits'"):
        parse_section("sandbox", {"isolation": "docker"})
    with pytest.raises(ConfigError, match="sandbox.isolate: unknown key; allowed: isolation"):
        parse_section("sandbox", {"isolate": "rlimits"})


def test_a_missing_bwrap_is_a_clear_error_naming_the_setting(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    isolation_problem.cache_clear()
    try:
        problem = isolation_problem("bubblewrap")
    finally:
        isolation_problem.cache_clear()
    assert "bwrap is not installed" in problem and "sandbox: {isolation: rlimits}" in problem
    assert isolation_problem("rlimits") is None
