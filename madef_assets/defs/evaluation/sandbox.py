"""Running model-written programs (HumanEval's pass@1) where they can do no harm.

`isolation: bubblewrap` (the profile's `sandbox` section, the default) runs each program with
bubblewrap (`bwrap`, Debian package `bubblewrap`) in its own user, PID, network, IPC, UTS and mount
namespaces: no network at all, a read-only view of only the interpreter's prefix and the system
libraries, a fresh tmpfs as working directory and /tmp, the namespace's own /proc and a minimal /dev, no
home directory, an environment holding only PATH, no capabilities, a seccomp filter that refuses to
create processes (fork, vfork, clone without CLONE_THREAD, clone3: threads still work), and the whole
namespace killed with the run. `isolation: rlimits` runs it as a plain child process: resource limits
and a clean environment only.

Both modes: limits on address space, CPU time, file size and core dumps, and a wall-clock kill.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ISOLATIONS = ("bubblewrap", "rlimits")
_STDERR_TAIL_CHARS = 2000
_FILE_SIZE_LIMIT = 10 * 1024 * 1024
_TMPFS_BYTES = 64 * 1024 * 1024
_WORKDIR = "/sandbox"


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run."""

    status: str  # "passed" | "failed" | "timeout" | "memory"
    passed: bool
    exit_code: int | None  # None when the run was killed for the wall-clock timeout
    seconds: float
    stderr_tail: str


def run_in_sandbox(
    program: str, timeout_s: float = 10.0, memory_mb: int = 512, isolation: str = "bubblewrap"
) -> SandboxResult:
    """Run a Python program (`python -I program.py`, stdin closed, stdout discarded) for pass@1 scoring.

    Limits: address space `memory_mb`, CPU time about `timeout_s` + 1 s, file size 10 MB (stderr goes to
    a file, so it is capped too), no core dumps; after `timeout_s` of wall-clock time the run is killed,
    and it is killed as well when the program ends, so nothing it started outlives it. Status: "timeout"
    (wall clock or CPU limit), "passed" (exit 0), "memory" (MemoryError in stderr), otherwise "failed".
    Call `isolation_problem(isolation)` first: this raises if bubblewrap cannot run."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"sandbox isolation must be one of {ISOLATIONS}, got {isolation!r}")
    cpu_s = math.ceil(timeout_s) + 1
    with tempfile.TemporaryDirectory(prefix="madef-sandbox-") as tmp:
        program_path = Path(tmp) / "program.py"
        program_path.write_text(program, encoding="utf-8")
        stderr_path = Path(tmp) / "stderr.txt"
        filter_read, filter_write = os.pipe() if isolation == "bubblewrap" else (None, None)
        if filter_write is not None:
            os.write(filter_write, no_new_processes_filter(platform.machine()))
            os.close(filter_write)
        command = (
            bwrap_command(program_path, filter_read)
            if isolation == "bubblewrap"
            else [sys.executable, "-I", "program.py"]
        )
        start = time.monotonic()
        try:
            with stderr_path.open("wb") as stderr:
                exit_code = _run(command, tmp, stderr, timeout_s, memory_mb, cpu_s, filter_read)
        finally:
            if filter_read is not None:
                os.close(filter_read)
        seconds = time.monotonic() - start
        with stderr_path.open("rb") as stderr:
            stderr.seek(max(0, stderr_path.stat().st_size - 4 * _STDERR_TAIL_CHARS))
            stderr_tail = stderr.read().decode("utf-8", errors="replace")[-_STDERR_TAIL_CHARS:]
    status = run_status(exit_code, stderr_tail)
    return SandboxResult(
        status=status, passed=status == "passed", exit_code=exit_code, seconds=seconds, stderr_tail=stderr_tail
    )


def run_status(exit_code: int | None, stderr_tail: str) -> str:
    """bwrap reports a program killed by signal N as exit code 128 + N, a plain child as -N."""
    if exit_code is None or exit_code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return "timeout"
    if exit_code == 0:
        return "passed"
    return "memory" if "MemoryError" in stderr_tail else "failed"


def _run(command, cwd, stderr, timeout_s, memory_mb, cpu_s, filter_fd) -> int | None:
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env={"PATH": os.environ.get("PATH", os.defpath)},
        start_new_session=True,
        pass_fds=(filter_fd,) if filter_fd is not None else (),
        # preexec_fn is unsafe with threads only for code that takes locks; this one just calls setrlimit.
        preexec_fn=lambda: _limit_resources(memory_mb, cpu_s),  # noqa: PLW1509
    )
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None
    finally:
        # The child leads its own process group; killing it (bwrap) also ends its PID namespace.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def _limit_resources(memory_mb: int, cpu_s: int) -> None:
    # Runs in the forked child before exec: keep it to setrlimit calls (no imports, no locks).
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024,) * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (_FILE_SIZE_LIMIT,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def interpreter() -> Path:
    """The real interpreter behind this (virtual) environment's python: a venv's site-packages stay out."""
    return Path(os.path.realpath(sys.executable))


def read_only_paths() -> list[Path]:
    """What the interpreter needs: its prefix (binary, standard library, libpython) and the system
    libraries it links; nothing else of the host is visible."""
    prefixes = {Path(os.path.realpath(sys.base_prefix)), Path(os.path.realpath(sysconfig.get_paths()["stdlib"]))}
    system = {Path(p) for p in ("/usr/lib", "/usr/lib64") if Path(p).is_dir()}
    paths = sorted(prefixes | system)
    return [p for p in paths if not any(other != p and other in p.parents for other in paths)]


def bwrap_command(program: Path, seccomp_fd: int) -> list[str]:
    command = [
        shutil.which("bwrap") or "bwrap",
        "--unshare-all",
        "--unshare-user",  # not "-try": without a user namespace the sandbox would keep host root's powers
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
    ]
    for path in read_only_paths():
        command += ["--ro-bind", str(path), str(path)]
    for link in ("/lib", "/lib64"):  # merged-/usr systems link these into /usr; others have real folders
        if Path(link).is_symlink():
            command += ["--symlink", os.readlink(link), link]
        elif Path(link).is_dir():
            command += ["--ro-bind", link, link]
    command += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache", "--proc", "/proc", "--dev", "/dev"]
    for tmpfs in ("/tmp", _WORKDIR):
        command += ["--size", str(_TMPFS_BYTES), "--tmpfs", tmpfs]
    command += [
        "--ro-bind",
        str(program),
        f"{_WORKDIR}/program.py",
        "--chdir",
        _WORKDIR,
        "--seccomp",
        str(seccomp_fd),
        str(interpreter()),
        "-I",
        "program.py",
    ]
    return command


# Classic BPF for seccomp (linux/filter.h, linux/seccomp.h, linux/audit.h).
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL_PROCESS, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_EAGAIN, _ENOSYS = 11, 38
_CLONE_THREAD = 0x00010000
# machine: (AUDIT_ARCH_*, syscall numbers, x32 syscall bit or None)
_SYSCALLS = {
    "x86_64": (0xC000003E, {"clone": 56, "fork": 57, "vfork": 58, "clone3": 435}, 0x40000000),
    "aarch64": (0xC00000B7, {"clone": 220, "clone3": 435}, None),
}


def no_new_processes_filter(machine: str) -> bytes:
    """A seccomp program (struct sock_filter[]) that refuses fork, vfork and clone without CLONE_THREAD
    (EAGAIN, as a process limit would), answers clone3 with ENOSYS (the C library then falls back to
    clone, which is checked), allows everything else, and kills a process using another architecture's
    syscalls (x32, 32-bit), which would bypass the numbers checked."""
    if machine not in _SYSCALLS:
        raise ValueError(f"no seccomp filter for the {machine} architecture: use sandbox.isolation: rlimits")
    audit_arch, numbers, x32_bit = _SYSCALLS[machine]
    program = [(_LD_ABS, None, None, 4), (_JEQ, None, "kill", audit_arch), (_LD_ABS, None, None, 0)]
    if x32_bit:
        program.append((_JGE, "kill", None, x32_bit))
    program += [(_JEQ, "deny", None, numbers[name]) for name in ("fork", "vfork") if name in numbers]
    program += [
        (_JEQ, "nosys", None, numbers["clone3"]),
        (_JEQ, None, "allow", numbers["clone"]),
        (_LD_ABS, None, None, 16),  # the low 32 bits of clone's flags (args[0], little-endian)
        (_JSET, "allow", "deny", _CLONE_THREAD),
    ]
    returns = {"allow": _ALLOW, "deny": _ERRNO | _EAGAIN, "nosys": _ERRNO | _ENOSYS, "kill": _KILL_PROCESS}
    targets = {label: len(program) + i for i, label in enumerate(returns)}
    program += [(_RET, None, None, value) for value in returns.values()]

    def skip(index: int, label: str | None) -> int:
        return 0 if label is None else targets[label] - index - 1

    return b"".join(
        struct.pack("=HBBI", code, skip(i, true), skip(i, false), k) for i, (code, true, false, k) in enumerate(program)
    )


@cache
def isolation_problem(isolation: str) -> str | None:
    """Why `isolation` cannot run here (None: it can), checked once per process by running a program
    through it. The message names the setting to change."""
    if isolation == "rlimits":
        return None
    if isolation != "bubblewrap":
        return f"sandbox.isolation must be one of {ISOLATIONS}, got {isolation!r}"
    advice = (
        "HumanEval runs model-written code; install bubblewrap (Debian: apt-get install bubblewrap) where "
        "unprivileged user namespaces are allowed, or set `sandbox: {isolation: rlimits}` in the profile to run "
        "it without isolation (the report then says so)"
    )
    if shutil.which("bwrap") is None:
        return f"sandbox.isolation is bubblewrap but bwrap is not installed: {advice}"
    if platform.machine() not in _SYSCALLS:
        return f"sandbox.isolation bubblewrap has no process filter for {platform.machine()}: {advice}"
    probe = run_in_sandbox("import sys\nsys.exit(0)\n", timeout_s=30, memory_mb=1024, isolation="bubblewrap")
    if not probe.passed:
        reason = probe.stderr_tail.strip().splitlines()[-1] if probe.stderr_tail.strip() else probe.status
        return f"sandbox.isolation is bubblewrap but bwrap cannot create its sandbox here ({reason}): {advice}"
    return None
