"""Runs whose `madef run` process died (SIGKILL, OOM, a closed laptop) stay STARTED in the Dagster
instance and keep their pool slots (a device's, an endpoint's), so the next `madef run` would wait for
them forever. `madef run` executes its runs itself (execute_job: in its own process, or orchestrating the
executor's step processes from it) and tags each with its process's identity; before starting, runs whose
process is certainly gone are marked failed and their pool slots freed.

A pid and a hostname do not name a process: containers with host networking, or two machines of one name
sharing an instance, see other pid namespaces under the same hostname. The identity is the kernel's boot
id (one per booted kernel, the same in every container on it), the pid namespace (its inode, as
/proc/self/ns/pid links it), the pid and the process's start time in clock ticks since boot (field 22 of
/proc/<pid>/stat), so a recycled pid does not pass for the process that ran the run. A run is failed only
when the identity names this kernel and this pid namespace and its pid is free, held by a zombie or
by a process started at another time. A run tagged on another machine, in another namespace, by an older
madef (no tag, or the old host:pid:time tag) or with a tag this madef cannot read is left alone, for a
person to end from the run's page in the web UI."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

PROCESS_TAG = "madef/process_identity"
UNFINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
PROC = Path("/proc")
IDENTITY_FIELDS = ("boot_id", "pid_ns", "pid", "start_ticks")


class UncheckableProcess(Exception):
    """This process cannot tell whether the tagged process is alive (no /proc, a /proc of another pid
    namespace, a tag it cannot read)."""


def boot_id() -> str:
    return (PROC / "sys/kernel/random/boot_id").read_text().strip()


def pid_namespace(pid: int | str = "self") -> str:
    return os.readlink(PROC / str(pid) / "ns/pid")


def stat_fields(pid: int) -> list[str]:
    """Fields 3 onwards of /proc/<pid>/stat (field 2, the command, may hold spaces and parentheses)."""
    text = (PROC / str(pid) / "stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def process_identity(pid: int | None = None) -> dict[str, object]:
    """The identity of a process of this pid namespace (default: this one)."""
    pid = pid or os.getpid()
    return {
        "boot_id": boot_id(),
        "pid_ns": pid_namespace(pid),
        "pid": pid,
        "start_ticks": int(stat_fields(pid)[19]),
        "host": socket.gethostname(),  # for people reading the tag only
    }


def process_tag(pid: int | None = None) -> str:
    return json.dumps(process_identity(pid), sort_keys=True, separators=(",", ":"))


def parse_process_tag(tag: str) -> dict[str, object]:
    try:
        identity = json.loads(tag)
    except json.JSONDecodeError as exc:
        raise UncheckableProcess(f"not a process identity: {tag[:200]!r}") from exc
    if not isinstance(identity, dict) or any(field not in identity for field in IDENTITY_FIELDS):
        raise UncheckableProcess(f"a process identity needs {', '.join(IDENTITY_FIELDS)}: {tag[:200]!r}")
    if type(identity["pid"]) is not int or type(identity["start_ticks"]) is not int or identity["pid"] < 1:
        raise UncheckableProcess(f"pid and start_ticks must be whole numbers: {tag[:200]!r}")
    return identity


def process_gone(tag: str) -> bool:
    """True when the tagged process certainly no longer exists; False when it is alive or when this
    process cannot check (another kernel, another pid namespace). UncheckableProcess for a tag it cannot
    read or a /proc it cannot trust."""
    identity = parse_process_tag(tag)
    try:
        here_boot, here_ns = boot_id(), pid_namespace()
        proc_is_ours = os.readlink(PROC / "self") == str(os.getpid())
    except OSError as exc:
        raise UncheckableProcess(f"cannot read this process's identity from {PROC}: {exc}") from exc
    if identity["boot_id"] != here_boot or identity["pid_ns"] != here_ns:
        return False
    if not proc_is_ours:  # /proc mounted for another pid namespace: a missing pid there proves nothing
        raise UncheckableProcess(f"{PROC} does not show this process's pid namespace")
    # /proc is this namespace's, so /proc/<pid> is whatever process holds the tagged pid here now
    pid = identity["pid"]
    try:
        fields = stat_fields(pid)
        state, start_ticks = fields[0], int(fields[19])
    except FileNotFoundError:
        return True
    except (OSError, ValueError, IndexError) as exc:
        raise UncheckableProcess(f"cannot read {PROC}/{pid}/stat: {exc}") from exc
    return state in ("Z", "X") or start_ticks != identity["start_ticks"]  # Z: dead, not yet reaped


def fail_orphaned_runs(instance: DagsterInstance) -> list[str]:
    """Mark runs of dead `madef run` processes failed and free their pool slots; returns their ids."""
    orphaned = []
    for run in instance.get_runs(filters=RunsFilter(statuses=UNFINISHED)):
        tag = run.tags.get(PROCESS_TAG)
        try:
            if not tag or not process_gone(tag):
                continue
        except UncheckableProcess:
            continue
        instance.report_run_failed(run, message=f"the `madef run` process that ran it ({tag}) is gone")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        orphaned.append(run.run_id)
    return orphaned
