"""Running model-written programs (HumanEval's pass@1) where they can do no harm, and scoring them so that
a program cannot choose its own result.

`isolation: bubblewrap` (the profile's `sandbox` section, the default) runs each program with bubblewrap
(`bwrap`, Debian package `bubblewrap`):
- never as host root: a caller that is root drops to uid/gid 65534 with no supplementary groups (`setpriv`)
  before bwrap creates its namespaces, so the program is host uid 65534 (global sysctls, files and processes
  of other users are out of reach even through the kernel's uid checks);
- its own user (no nested user namespaces: `--disable-userns`), PID, network, IPC, UTS and mount
  namespaces: no network, a read-only view of the interpreter's prefix and the system libraries only, the
  namespace's own /proc (its /sys read-only), a /dev of size-limited tmpfs holding null, zero, full, random
  and urandom, size-limited tmpfs as working directory and /tmp, the root read-only, no capabilities, an
  environment holding only PATH, a seccomp filter refusing new processes (threads still work);
- no host file descriptor: stdin is /dev/null, stdout and stderr are pipes the parent reads up to a byte
  cap, the program text is copied in (`--ro-bind-data`);
- a cgroup of its own created before it runs (cgroup v2, or v1 memory + pids + cpuacct): a memory limit
  counting tmpfs and memfd pages, a task limit, CPU time accounting; killed and removed with the run.
`isolation: rlimits` runs it as a plain child process of the caller: resource limits and a clean
environment only.

Scoring: the harness (not the program) executes the program, then calls the check, and only after the check
returned reads a per-run random secret from an inherited pipe and writes it to a result pipe; the run
passed iff the parent reads that exact secret back and the process exited 0. "timeout" comes from the
parent's wall clock and the CPU time it measured (cgroup, or the child's rusage), "memory" from the cgroup's
OOM kills: never from an exit code or text the program chose.

Threat model of the scoring. What holds: the secret is never in the program's text, arguments, environment
or memory before the check returns, so exit(), SystemExit, os._exit, signals, exit codes and printed text
can only fail. With an entry point, an audit hook installed before the program runs refuses sys.settrace,
sys.setprofile, ctypes (its import included), os.symlink and opening a path ending in "mem"
(/proc/<pid>/mem); another audit hook is silently not added. The `check` called must be the function
compiled from the program's last top-level `def check`, taken from the module's dict; the harness waits for
the program's threads before taking it and after each candidate call; each call must return a plain value
(exact int, float, complex, str, bytes, bool, None, or list, tuple, set, frozenset, dict of them), so an
object or an int, str or list subclass equal to anything is refused (tested: test_sandbox.py's FORGERIES,
each of which passed under the previous harness, and REWRITERS). What remains, for a program written
against this harness: the secret's pipe is open in the process, so os.read on it followed by a write to the
result pipe forges a pass; so does exec into a fresh interpreter (no audit hook) doing the same; frame and gc
introspection (sys._getframe, gc.get_objects) reach the harness's own functions and cells; patching what
check itself calls (builtins, module functions such as math.isclose) changes its verdict. The harness stops
programs that stop early, lie about their outcome or return forged values, not ones written against it. The
sandbox holds either way.

Process filter (sandbox_filter, checked instruction by instruction by an interpreter in the tests): socket
and socketpair create AF_UNIX sockets only, since TCP buffers escape a cgroup v1 memory limit (tested from
the host's /proc/net/sockstat); the kernel keyrings (the caller's session keyring is shared with the
sandbox), io_uring, userfaultfd, bpf and perf_event_open answer ENOSYS (tested with a secret key in a
session keyring). A caller that is PID 1 or a subreaper inherits each run's namespace init when bwrap exits:
reap_orphaned_inits reaps it, found through /proc/<pid>/task/*/children (CONFIG_PROC_CHILDREN; without it
such zombies stay until the caller exits), and one still exiting when its run ends is reaped by the next run.
"""

from __future__ import annotations

import hmac
import math
import os
import platform
import resource
import secrets
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ISOLATIONS = ("bubblewrap", "rlimits")
SANDBOX_UID = 65534  # nobody
TASKS_LIMIT = 64  # processes + threads in one run's cgroup (bwrap and the interpreter take 3)
CGROUP_PREFIX = "madef-sandbox-"
_STDERR_TAIL_CHARS = 2000
_OUTPUT_LIMIT = 10 * 1024 * 1024  # bytes of stdout + stderr read before the parent closes its ends
_FILE_SIZE_LIMIT = 10 * 1024 * 1024
_OPEN_FILES_LIMIT = 256
_TMPFS_BYTES = 64 * 1024 * 1024
_DEV_BYTES = 8 * 1024 * 1024
_WORKDIR = "/sandbox"
_DEVICES = ("null", "zero", "full", "random", "urandom")
_RELEASED = 125  # the barrier's exit code when it was never released

# Runs the program as __main__, then its `check` on the entry point; the secret is read only once both returned
# normally. With an entry point, an audit hook installed before the program runs refuses what would let it
# rewrite the scoring from inside: more audit hooks (the first hook cannot be removed), tracing and
# profiling (a tracer could jump over check's asserts or rebind its locals), ctypes and /proc/<pid>/mem.
HARNESS = """\
import _thread, os, sys, time, types
def main(secret_fd, result_fd, entry_point):
    read, write, leave, sleep, alive_threads = os.read, os.write, os._exit, time.sleep, _thread._count
    type_of, identity, new_set, function, code_type = type, id, set, types.FunctionType, types.CodeType
    plain_types = (int, float, complex, str, bytes, bool, type(None))
    container_types = (list, tuple, set, frozenset, dict)
    refused = ("sys.addaudithook", "sys.settrace", "sys.setprofile", "os.symlink")

    def refuse(event, args):
        if event in refused or event.startswith("ctypes."):
            raise RuntimeError(f"the harness refuses {event}")
        if event == "open" and type_of(args[0]) is not int:
            path = args[0]
            separator = {str: "/", bytes: b"/"}.get(type_of(path))
            if separator is None or path.rstrip(separator).rsplit(separator, 1)[-1] in ("mem", b"mem"):
                raise RuntimeError(f"the harness refuses to open {path!r}")

    def check_plain(value, depth, path):
        kind = type_of(value)
        if kind in plain_types:
            return
        if kind not in container_types or depth > 100 or identity(value) in path:
            raise TypeError(f"the candidate returned a {kind.__name__}, not a plain value")
        path.add(identity(value))
        for item in [*value.keys(), *value.values()] if kind is dict else value:
            check_plain(item, depth + 1, path)
        path.discard(identity(value))

    def wait_for_threads():
        while alive_threads():
            sleep(0.005)

    sys.argv = ["program.py"]
    module = types.ModuleType("__main__")
    module.__file__ = "program.py"
    sys.modules["__main__"] = module
    with open("program.py", encoding="utf-8") as source:
        code = compile(source.read(), "program.py", "exec")
    if entry_point:
        sys.addaudithook(refuse)
    exec(code, module.__dict__)
    if entry_point:
        wait_for_threads()
        namespace = module.__dict__
        check, candidate = namespace["check"], namespace[entry_point]
        own = [c for c in code.co_consts if type_of(c) is code_type and c.co_name == "check"]
        genuine = type_of(check) is function and own and check.__code__ is own[-1]
        if not (genuine and check.__globals__ is namespace):
            raise TypeError("check is not the function of the program's last top-level def check")

        def guarded(*args, **kwargs):
            result = candidate(*args, **kwargs)
            wait_for_threads()
            check_plain(result, 0, new_set())
            return result

        check(guarded)
    write(result_fd, read(secret_fd, 1024))
    leave(0)
main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
"""
# Started first, placed in the run's cgroup and given its limits by the parent, then released by a line on
# stdin: nothing of the program starts before it is contained.
_BARRIER = 'read -r _ || exit 125; exec "$@" </dev/null'
# As root: bind the read-only paths where uid 65534 can reach them, in a private mount namespace (the host's
# mounts are untouched and the binds vanish with the run).
_STAGE = 'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 125; shift 2; done; shift; exec "$@"'


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run; every field but stderr_tail is measured by the parent."""

    status: str  # "passed" | "failed" | "timeout" | "memory"
    passed: bool
    exit_code: int | None  # None when the run was killed for the wall-clock timeout
    seconds: float
    stderr_tail: str
    cpu_seconds: float | None = None  # the cgroup's (bubblewrap) or the child's (rlimits) CPU time
    memory_peak_bytes: int | None = None  # the cgroup's peak; None for rlimits or cgroup v2 before 5.19
    oom_kills: int = 0
    tasks_refused: int | None = None  # fork/clone refused by the cgroup's task limit


def run_in_sandbox(
    program: str,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    isolation: str = "bubblewrap",
    entry_point: str = "",
) -> SandboxResult:
    """Run a Python program (as `__main__` of `python -I`, stdin /dev/null, stdout read and discarded),
    then, given an `entry_point` (e.g. "add"), call the program's own `check` on that function, for pass@1
    scoring: each call of it must return a plain value (see HARNESS).

    Limits: memory `memory_mb` (the cgroup under bubblewrap, address space under rlimits), CPU time about
    `timeout_s` + 1 s, file size 10 MB, no core dumps; after `timeout_s` of wall-clock time the run is killed,
    and it is killed as well when the program ends, so nothing it started outlives it. Status: "timeout"
    (wall clock or CPU time used up), "memory" (the cgroup's OOM killer ran), "passed" (the harness returned
    the secret: program and check ran to their end), otherwise "failed". Call `isolation_problem(isolation)`
    first: under bubblewrap this raises if the sandbox cannot be built."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"sandbox isolation must be one of {ISOLATIONS}, got {isolation!r}")
    if entry_point and not entry_point.isidentifier():
        raise ValueError(f"entry_point must be a Python name, got {entry_point!r}")
    if isolation == "bubblewrap":
        layout = cgroup_layout()
        if isinstance(layout, str):
            raise RuntimeError(f"no cgroup for the sandbox: {layout}")
    cpu_s = math.ceil(timeout_s) + 1
    secret = secrets.token_hex(32).encode()
    with tempfile.TemporaryDirectory(prefix="madef-sandbox-") as tmp, _Fds() as fds:
        secret_read = fds.pipe_with(secret)
        result_read, result_write = fds.pipe()
        stdout_read, stdout_write = fds.pipe()
        stderr_read, stderr_write = fds.pipe()
        harness_args = [str(secret_read), str(result_write), entry_point]
        if isolation == "bubblewrap":
            seccomp_fd = fds.pipe_with(sandbox_filter(platform.machine()))
            program_fd = fds.memfd_with(program.encode("utf-8"))
            staged = stage_read_only_paths(tmp) if os.geteuid() == 0 else {}
            command = bwrap_command(program_fd, seccomp_fd, harness_args, staged)
            if staged:
                command = root_prefix(staged, command)
            inherited = (secret_read, result_write, seccomp_fd, program_fd)
        else:
            Path(tmp, "program.py").write_text(program, encoding="utf-8")
            command = [str(interpreter()), "-I", "-c", HARNESS, *harness_args]
            inherited = (secret_read, result_write)
        output = _Output({"stderr": stderr_read, "stdout": stdout_read, "result": result_read}, fds)
        cgroup = RunCgroup.create(layout, memory_mb * 1024 * 1024) if isolation == "bubblewrap" else None
        start = time.monotonic()
        try:
            process = subprocess.Popen(
                ["/bin/sh", "-c", _BARRIER, "madef-sandbox", *command],
                cwd=tmp,
                stdin=subprocess.PIPE,
                stdout=stdout_write,
                stderr=stderr_write,
                env={"PATH": os.environ.get("PATH", os.defpath)},
                start_new_session=True,
                pass_fds=inherited,
            )
            fds.close(stdout_write, stderr_write, *inherited)
            exit_code, timed_out, child_cpu = _supervise(
                process, cgroup, isolation, memory_mb, cpu_s, start + timeout_s, output
            )
            usage = cgroup.usage() if cgroup else None
        finally:
            if cgroup:
                cgroup.remove()
    seconds = time.monotonic() - start
    cpu_seconds = usage.cpu_seconds if usage else child_cpu
    oom_kills = usage.oom_kills if usage else 0
    harness_finished = exit_code == 0 and hmac.compare_digest(output.text("result"), secret)
    status = run_status(timed_out, cpu_seconds, cpu_s, oom_kills, harness_finished)
    return SandboxResult(
        status=status,
        passed=status == "passed",
        exit_code=None if timed_out else exit_code,
        seconds=seconds,
        stderr_tail=output.text("stderr").decode("utf-8", errors="replace")[-_STDERR_TAIL_CHARS:],
        cpu_seconds=cpu_seconds,
        memory_peak_bytes=usage.memory_peak_bytes if usage else None,
        oom_kills=oom_kills,
        tasks_refused=usage.tasks_refused if usage else None,
    )


def run_status(timed_out: bool, cpu_seconds: float | None, cpu_limit_s: float, oom_kills: int, finished: bool) -> str:
    """The status from what the parent measured: its wall clock, the CPU time, the cgroup's OOM kills and
    whether the harness handed back the secret."""
    if oom_kills > 0:
        return "memory"
    if timed_out or (cpu_seconds is not None and cpu_seconds >= cpu_limit_s):
        return "timeout"
    return "passed" if finished else "failed"


def _supervise(process, cgroup, isolation, memory_mb, cpu_s, deadline, output: _Output) -> tuple[int, bool, float]:
    """Contain the barrier process, release it, read its pipes until it ends or the deadline passes, kill
    everything it started. Returns (exit code, timed out, the child's own CPU seconds)."""
    try:
        if cgroup:
            cgroup.add(process.pid)
        _limit_resources(process.pid, cpu_s, memory_mb if isolation == "rlimits" else None)
        process.stdin.write(b"go\n")
        process.stdin.close()
        exited = output.read_until_exit(process.pid, deadline)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # it leads its own session; killing bwrap ends its PID namespace
        except ProcessLookupError:
            pass
        if cgroup:
            cgroup.kill_members()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if cgroup:
            reap_orphaned_inits()
    output.read_until_eof(time.monotonic() + 2.0)
    return process.returncode, not exited, usage.ru_utime + usage.ru_stime


class _Output:
    """The run's pipes, read as they fill: stderr's tail, the result's first KiB; stdout is read and
    dropped. Past _OUTPUT_LIMIT bytes in all the parent closes its ends (the program then gets EPIPE)."""

    def __init__(self, pipes: dict[str, int], fds: _Fds) -> None:
        self.kept = {name: bytearray() for name in pipes}
        self.total = 0
        self.fds = fds
        self.selector = selectors.DefaultSelector()
        for name, fd in pipes.items():
            os.set_blocking(fd, False)
            self.selector.register(fd, selectors.EVENT_READ, name)

    def read_until_exit(self, pid: int, deadline: float) -> bool:
        """Read until process `pid` exits (True) or `deadline` passes (False)."""
        pidfd = os.pidfd_open(pid)
        self.fds.open.add(pidfd)
        self.selector.register(pidfd, selectors.EVENT_READ, "exit")
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                for key, _ in self.selector.select(remaining):
                    if key.data == "exit":
                        return True
                    self._read(key)
            return False
        finally:
            self.selector.unregister(pidfd)
            self.fds.close(pidfd)

    def read_until_eof(self, deadline: float) -> None:
        """What is left once the writers are gone (killed with the run); a writer that escaped the kill
        (possible under rlimits only) is not waited for past `deadline`."""
        while self.selector.get_map() and (remaining := deadline - time.monotonic()) > 0:
            for key, _ in self.selector.select(remaining):
                self._read(key)
        for key in list(self.selector.get_map().values()):
            self._stop(key)
        self.selector.close()

    def _read(self, key) -> None:
        chunk = os.read(key.fd, 65536)
        self.total += len(chunk)
        if key.data == "stderr":
            self.kept["stderr"] = (self.kept["stderr"] + chunk)[-4 * _STDERR_TAIL_CHARS :]
        elif key.data == "result":
            self.kept["result"] = (self.kept["result"] + chunk)[:1024]
        if not chunk or self.total > _OUTPUT_LIMIT:
            self._stop(key)

    def _stop(self, key) -> None:
        self.selector.unregister(key.fd)
        self.fds.close(key.fd)

    def text(self, name: str) -> bytes:
        return bytes(self.kept[name])


def _limit_resources(pid: int, cpu_s: int, memory_mb: int | None) -> None:
    resource.prlimit(pid, resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (_FILE_SIZE_LIMIT,) * 2)
    resource.prlimit(pid, resource.RLIMIT_CORE, (0, 0))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (_OPEN_FILES_LIMIT,) * 2)  # also bounds AF_UNIX buffers queued
    if memory_mb is not None:  # rlimits has no cgroup: the address space is the only memory limit
        resource.prlimit(pid, resource.RLIMIT_AS, (memory_mb * 1024 * 1024,) * 2)


class _Fds:
    """The run's file descriptors, each closed exactly once (on exit at the latest)."""

    def __init__(self) -> None:
        self.open: set[int] = set()

    def __enter__(self) -> _Fds:
        return self

    def __exit__(self, *_) -> None:
        self.close(*list(self.open))

    def pipe(self) -> tuple[int, int]:
        read, write = os.pipe()
        self.open |= {read, write}
        return read, write

    def pipe_with(self, data: bytes) -> int:
        """The read end of a pipe holding `data` (under the pipe's 64 KiB buffer)."""
        read, write = self.pipe()
        os.write(write, data)
        self.close(write)
        return read

    def memfd_with(self, data: bytes) -> int:
        fd = os.memfd_create("madef-sandbox-program", os.MFD_CLOEXEC)
        self.open.add(fd)
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def close(self, *fds: int) -> None:
        for fd in fds:
            if fd in self.open:
                self.open.discard(fd)
                os.close(fd)


# --- the bubblewrap command -------------------------------------------------------------------------


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


def bwrap_command(program_fd: int, seccomp_fd: int, harness_args: list[str], staged: dict[Path, Path]) -> list[str]:
    """bwrap running the harness on the program copied from `program_fd`. `staged` maps a read-only path to
    where the unprivileged bwrap can reach it (see root_prefix)."""
    command = [
        shutil.which("bwrap") or "bwrap",
        "--unshare-all",
        "--unshare-user",  # not "-try": without a user namespace the sandbox would keep host root's powers
        "--disable-userns",  # and none nested inside it
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
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
        command += ["--ro-bind", str(staged.get(path, path)), str(path)]
    for link in ("/lib", "/lib64"):  # merged-/usr systems link these into /usr; others have real folders
        if Path(link).is_symlink():
            command += ["--symlink", os.readlink(link), link]
        elif Path(link).is_dir():
            command += ["--ro-bind", link, link]
    command += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache", "--proc", "/proc"]
    command += ["--size", str(_DEV_BYTES), "--tmpfs", "/dev"]
    for device in _DEVICES:
        command += ["--dev-bind", f"/dev/{device}", f"/dev/{device}"]
    for index, name in enumerate(("stdin", "stdout", "stderr")):
        command += ["--symlink", f"/proc/self/fd/{index}", f"/dev/{name}"]
    command += ["--symlink", "/proc/self/fd", "/dev/fd", "--perms", "1777", "--dir", "/dev/shm"]
    for tmpfs in ("/tmp", _WORKDIR):
        command += ["--size", str(_TMPFS_BYTES), "--tmpfs", tmpfs]
    command += [
        "--ro-bind-data",
        str(program_fd),
        f"{_WORKDIR}/program.py",
        "--remount-ro",
        "/",
        "--chdir",
        _WORKDIR,
        "--seccomp",
        str(seccomp_fd),
        str(interpreter()),
        "-I",
        "-c",
        HARNESS,
        *harness_args,
    ]
    return command


def stage_read_only_paths(tmp: str) -> dict[Path, Path]:
    """Empty folders in `tmp`, reachable by uid 65534, where root_prefix binds the read-only paths: bwrap
    running as that uid cannot resolve a path under a folder closed to it (an interpreter under /root)."""
    os.chmod(tmp, 0o711)
    staged = {path: Path(tmp, f"ro{index}") for index, path in enumerate(read_only_paths())}
    for folder in staged.values():
        folder.mkdir()
        folder.chmod(0o755)
    return staged


def root_prefix(staged: dict[Path, Path], bwrap: list[str]) -> list[str]:
    """For a root caller: in a private mount namespace bind each read-only path onto its staged folder,
    then drop to uid/gid 65534 without groups and with no-new-privileges before bwrap starts, so no part
    of the sandbox is host root."""
    bind_pairs = [str(p) for path, folder in staged.items() for p in (path, folder)]
    setpriv = [shutil.which("setpriv") or "setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}"]
    setpriv += ["--clear-groups", "--no-new-privs", "--"]
    unshare = [shutil.which("unshare") or "unshare", "--mount", "--propagation", "private", "--"]
    return [*unshare, "/bin/sh", "-c", _STAGE, "madef-stage", *bind_pairs, "--", *setpriv, *bwrap]


# --- the run's cgroup ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CgroupLayout:
    """Where run cgroups are created: cgroup v2 ({"unified": dir}) or v1 ({controller: dir})."""

    version: int
    parents: dict[str, Path]


@dataclass(frozen=True)
class CgroupUsage:
    cpu_seconds: float
    memory_peak_bytes: int | None
    oom_kills: int
    tasks_refused: int


V1_CONTROLLERS = ("memory", "pids", "cpuacct")


def parse_cgroup_layout(mountinfo: str, self_cgroup: str, unified_controllers: str | None) -> CgroupLayout | str:
    """The parents of run cgroups from /proc/self/mountinfo, /proc/self/cgroup and the cgroup.controllers of
    this process's v2 cgroup (None: unreadable); a message naming what is missing otherwise. v2 wins when
    its cgroup offers memory and pids; v1 needs memory, pids and cpuacct mounted."""
    own = {}
    for line in self_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else ["unified"]:
            own[controller] = path
    mounts = {}
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        fstype, _source, options = (tail.split(" ") + ["", ""])[:3]
        root, mountpoint = fields.split(" ")[3:5]
        if fstype == "cgroup2":
            mounts["unified"] = (root, mountpoint)
        elif fstype == "cgroup":
            for option in options.split(","):
                mounts[option] = (root, mountpoint)

    def parent(controller: str) -> Path:
        root, mountpoint = mounts[controller]
        path = own[controller]
        relative = os.path.relpath(path, root) if path == root or path.startswith(root.rstrip("/") + "/") else "."
        return Path(mountpoint, relative).resolve() if relative != "." else Path(mountpoint)

    if "unified" in mounts and "unified" in own and {"memory", "pids"} <= set((unified_controllers or "").split()):
        return CgroupLayout(2, {"unified": parent("unified")})
    missing = [c for c in V1_CONTROLLERS if c not in mounts or c not in own]
    if not missing:
        return CgroupLayout(1, {c: parent(c) for c in V1_CONTROLLERS})
    return (
        "neither a cgroup v2 offering the memory and pids controllers nor cgroup v1 memory, pids and cpuacct "
        f"hierarchies (v1 missing: {', '.join(missing)})"
    )


@cache
def cgroup_layout() -> CgroupLayout | str:
    """This machine's layout (once per process), checked writable by creating and removing a cgroup."""
    own = Path("/proc/self/cgroup").read_text()
    unified_path = next((line.split(":", 2)[2] for line in own.splitlines() if line.startswith("0::")), None)
    controllers = None
    if unified_path is not None:
        try:
            mountpoint = next(
                line.partition(" - ")[0].split(" ")[4]
                for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.partition(" - ")[2].startswith("cgroup2 ")
            )
            controllers = Path(mountpoint, unified_path.lstrip("/"), "cgroup.controllers").read_text()
        except (StopIteration, OSError):
            controllers = None
    layout = parse_cgroup_layout(Path("/proc/self/mountinfo").read_text(), own, controllers)
    if isinstance(layout, str):
        return layout
    try:
        if layout.version == 2:
            _enable_v2_controllers(layout.parents["unified"])
        RunCgroup.create(layout, 64 * 1024 * 1024).remove()
    except OSError as error:
        return f"cannot create a cgroup v{layout.version} under {sorted(map(str, layout.parents.values()))}: {error}"
    return layout


def _enable_v2_controllers(parent: Path) -> None:
    enabled = (parent / "cgroup.subtree_control").read_text().split()
    wanted = [c for c in ("memory", "pids") if c not in enabled]
    if wanted:
        try:
            (parent / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
        except OSError as error:  # EBUSY: a non-root cgroup holding processes cannot enable controllers below
            raise OSError(
                f"cannot enable {' and '.join(wanted)} for child cgroups of {parent} ({error}); run madef in a "
                "cgroup whose children get them (a delegated subtree, e.g. systemd-run -p Delegate=yes)"
            ) from error


@dataclass(frozen=True)
class RunCgroup:
    """One run's cgroup: a directory per v1 controller, or one v2 directory."""

    layout: CgroupLayout
    dirs: dict[str, Path]

    @classmethod
    def create(cls, layout: CgroupLayout, memory_bytes: int) -> RunCgroup:
        name = f"{CGROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        cgroup = cls(layout, {controller: parent / name for controller, parent in layout.parents.items()})
        try:
            for path in cgroup.dirs.values():
                path.mkdir()
            if layout.version == 2:
                path = cgroup.dirs["unified"]
                _write(path / "memory.max", memory_bytes)
                _write_if_present(path / "memory.swap.max", 0)
                _write_if_present(path / "memory.oom.group", 1)
                _write(path / "pids.max", TASKS_LIMIT)
            else:
                _write(cgroup.dirs["memory"] / "memory.limit_in_bytes", memory_bytes)
                _write_if_present(cgroup.dirs["memory"] / "memory.memsw.limit_in_bytes", memory_bytes)
                # v1 charges socket buffers only once this is set (v2 always does)
                _write_if_present(cgroup.dirs["memory"] / "memory.kmem.tcp.limit_in_bytes", memory_bytes)
                _write(cgroup.dirs["pids"] / "pids.max", TASKS_LIMIT)
        except BaseException:
            cgroup.remove()
            raise
        return cgroup

    def add(self, pid: int) -> None:
        for path in self.dirs.values():
            _write(path / "cgroup.procs", pid)

    def members(self) -> set[int]:
        found = set()
        for path in self.dirs.values():
            try:
                found |= {int(pid) for pid in (path / "cgroup.procs").read_text().split()}
            except FileNotFoundError:
                continue
        return found

    def kill_members(self, seconds: float = 5.0) -> None:
        """SIGKILL every process in the cgroup until none is left (the program cannot fork, so this ends
        quickly). Raises if members survive `seconds`."""
        kill_file = self.dirs.get("unified", Path("/nonexistent")) / "cgroup.kill"
        deadline = time.monotonic() + seconds
        while members := self.members():
            if time.monotonic() > deadline:
                raise RuntimeError(f"sandbox processes {sorted(members)} survived SIGKILL in {self.dirs}")
            if kill_file.exists():
                _write(kill_file, 1)
            else:
                for pid in members:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.005)

    def usage(self) -> CgroupUsage:
        if self.layout.version == 2:
            path = self.dirs["unified"]
            cpu = _key_values(path / "cpu.stat")["usage_usec"] / 1e6
            peak = int((path / "memory.peak").read_text()) if (path / "memory.peak").exists() else None
            oom = _key_values(path / "memory.events").get("oom_kill", 0)
            refused = _key_values(path / "pids.events").get("max", 0)
            return CgroupUsage(cpu, peak, oom, refused)
        memory, pids = self.dirs["memory"], self.dirs["pids"]
        return CgroupUsage(
            cpu_seconds=int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9,
            memory_peak_bytes=int((memory / "memory.max_usage_in_bytes").read_text()),
            oom_kills=_key_values(memory / "memory.oom_control").get("oom_kill", 0),
            tasks_refused=_key_values(pids / "pids.events").get("max", 0),
        )

    def remove(self) -> None:
        self.kill_members()
        for path in self.dirs.values():
            deadline = time.monotonic() + 5.0
            while path.exists():
                try:
                    path.rmdir()
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last member is still being torn down
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)


def reap_orphaned_inits() -> None:
    """Reap the sandboxes' PID-namespace inits that became this process's children. bwrap exits before
    its init, which the kernel then hands to the nearest subreaper: this process when it is PID 1 (as in a
    container) or a subreaper, and nobody else waits for it. Such a child is told apart from the ones this
    process started by its pid inside a namespace below this one (NSpid has two numbers). One still
    exiting is left to the next run."""
    for pid in _children_of(os.getpid()):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if len(nspid) > 1:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped meanwhile by another run's thread
                pass


def _children_of(pid: int) -> list[int]:
    """Child pids of process `pid` (those of all its threads), from /proc."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:  # the thread ended
            continue
    return children


def _write(path: Path, value: object) -> None:
    with open(path, "w") as handle:  # one write(2): cgroup files take a value per write
        handle.write(str(value))


def _write_if_present(path: Path, value: object) -> None:
    if path.exists():
        _write(path, value)


def _key_values(path: Path) -> dict[str, int]:
    pairs = (line.split() for line in path.read_text().splitlines())
    return {fields[0]: int(fields[1]) for fields in pairs if len(fields) == 2 and fields[1].lstrip("-").isdigit()}


# --- the process filter ---------------------------------------------------------------------------------

# Classic BPF for seccomp (linux/filter.h, linux/seccomp.h, linux/audit.h).
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL_PROCESS, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_EAGAIN, _ENOSYS, _EAFNOSUPPORT = 11, 38, 97
_CLONE_THREAD, _AF_UNIX = 0x00010000, 1
_ARG0_LOW = 16  # offset of the low 32 bits of args[0] in struct seccomp_data (both architectures little-endian)
# Answered ENOSYS: the kernel keyrings (the caller's session keyring is shared with the sandbox), io_uring (its
# own path to sockets and files), userfaultfd, bpf and perf_event_open (kernel attack surface a program needs not).
_NOSYS = ("clone3", "add_key", "request_key", "keyctl", "io_uring_setup", "io_uring_enter", "io_uring_register")
_NOSYS += ("userfaultfd", "bpf", "perf_event_open")
# machine: (AUDIT_ARCH_*, syscall numbers (asm/unistd_64.h, asm-generic/unistd.h), x32 syscall bit or None)
_SYSCALLS = {
    "x86_64": (
        0xC000003E,
        {"clone": 56, "fork": 57, "vfork": 58, "clone3": 435, "socket": 41, "socketpair": 53}
        | {"add_key": 248, "request_key": 249, "keyctl": 250, "io_uring_setup": 425, "io_uring_enter": 426}
        | {"io_uring_register": 427, "userfaultfd": 323, "bpf": 321, "perf_event_open": 298},
        0x40000000,
    ),
    "aarch64": (
        0xC00000B7,
        {"clone": 220, "clone3": 435, "socket": 198, "socketpair": 199}
        | {"add_key": 217, "request_key": 218, "keyctl": 219, "io_uring_setup": 425, "io_uring_enter": 426}
        | {"io_uring_register": 427, "userfaultfd": 282, "bpf": 280, "perf_event_open": 241},
        None,
    ),
}


def sandbox_filter(machine: str) -> bytes:
    """A seccomp program (struct sock_filter[]) that refuses fork, vfork and clone without CLONE_THREAD
    (EAGAIN, as a process limit would), lets socket and socketpair create AF_UNIX sockets only
    (EAFNOSUPPORT otherwise: TCP buffers escape a cgroup v1 memory limit), answers the _NOSYS calls
    (clone3 among them: the C library then falls back to clone, which is checked) with ENOSYS, allows
    everything else, and kills a process using another architecture's syscalls (x32, 32-bit), which would
    bypass the numbers checked."""
    if machine not in _SYSCALLS:
        raise ValueError(f"no seccomp filter for the {machine} architecture: use sandbox.isolation: rlimits")
    audit_arch, numbers, x32_bit = _SYSCALLS[machine]
    # (code, label jumped to when true, when false, k); a plain string marks where a label starts
    program: list = [(_LD_ABS, None, None, 4), (_JEQ, None, "kill", audit_arch), (_LD_ABS, None, None, 0)]
    if x32_bit:
        program.append((_JGE, "kill", None, x32_bit))
    program += [(_JEQ, "eagain", None, numbers[name]) for name in ("fork", "vfork") if name in numbers]
    program += [(_JEQ, "enosys", None, numbers[name]) for name in _NOSYS]
    program += [(_JEQ, "socket", None, numbers[name]) for name in ("socket", "socketpair")]
    program += [(_JEQ, None, "allow", numbers["clone"]), (_LD_ABS, None, None, _ARG0_LOW)]
    program += [(_JSET, "allow", "eagain", _CLONE_THREAD)]
    program += ["socket", (_LD_ABS, None, None, _ARG0_LOW), (_JEQ, "allow", "eafnosupport", _AF_UNIX)]
    returns = {"allow": _ALLOW, "eagain": _ERRNO | _EAGAIN, "enosys": _ERRNO | _ENOSYS}
    returns |= {"eafnosupport": _ERRNO | _EAFNOSUPPORT, "kill": _KILL_PROCESS}
    for label, value in returns.items():
        program += [label, (_RET, None, None, value)]
    instructions = [step for step in program if not isinstance(step, str)]
    targets, position = {}, 0
    for step in program:
        if isinstance(step, str):
            targets[step] = position
        else:
            position += 1

    def skip(index: int, label: str | None) -> int:
        return 0 if label is None else targets[label] - index - 1

    return b"".join(
        struct.pack("=HBBI", code, skip(i, true), skip(i, false), k)
        for i, (code, true, false, k) in enumerate(instructions)
    )


# --- can it run here? -----------------------------------------------------------------------------------


@cache
def isolation_problem(isolation: str) -> str | None:
    """Why `isolation` cannot run here (None: it can), checked once per process by running a program
    through it. The message names what is missing and the setting to change."""
    if isolation == "rlimits":
        return None
    if isolation != "bubblewrap":
        return f"sandbox.isolation must be one of {ISOLATIONS}, got {isolation!r}"
    advice = (
        "HumanEval runs model-written code; install bubblewrap (Debian: apt-get install bubblewrap) where "
        "unprivileged user namespaces and a writable cgroup (v1 memory+pids+cpuacct, or a delegated v2 subtree "
        "with memory and pids) are available, or set `sandbox: {isolation: rlimits}` in the profile to run it "
        "without isolation (the report then says so)"
    )
    if shutil.which("bwrap") is None:
        return f"sandbox.isolation is bubblewrap but bwrap is not installed: {advice}"
    if platform.machine() not in _SYSCALLS:
        return f"sandbox.isolation bubblewrap has no process filter for {platform.machine()}: {advice}"
    if os.geteuid() == 0:
        missing = [tool for tool in ("setpriv", "unshare", "mount") if shutil.which(tool) is None]
        if missing:
            return (
                f"sandbox.isolation is bubblewrap and this runs as root, but {', '.join(missing)} (util-linux) "
                f"is missing, so the sandbox cannot drop to uid {SANDBOX_UID}: {advice}"
            )
    layout = cgroup_layout()
    if isinstance(layout, str):
        return f"sandbox.isolation is bubblewrap but there is no usable cgroup: {layout}: {advice}"
    probe = run_in_sandbox("import os\nassert os.getuid() == 65534\n", timeout_s=30, memory_mb=256)
    if not probe.passed:
        reason = probe.stderr_tail.strip().splitlines()[-1] if probe.stderr_tail.strip() else probe.status
        return f"sandbox.isolation is bubblewrap but bwrap cannot create its sandbox here ({reason}): {advice}"
    return None
