"""A real PostgreSQL server for tests: Debian's binaries, a fresh cluster in a temporary folder, listening on a
free loopback port only; stopped and removed at the end. Skips (with the reason) where the binaries are missing.

As root the server runs as the `postgres` user (PostgreSQL refuses to run as root) on a folder it owns."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from madef_assets_tests.browser import free_port

START_TIMEOUT_S = 60


SERVER_TOOLS = ("initdb", "postgres", "pg_isready", "createdb")


def postgres_bin_dir() -> Path | None:
    """The folder of the server's tools (`postgres` on PATH, links followed, else Debian's
    /usr/lib/postgresql/<newest>/bin), or None when no folder has them all."""
    on_path = shutil.which("postgres")
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name), reverse=True
    )
    for server in ([Path(on_path).resolve()] if on_path else []) + versions:
        if all((server.parent / tool).exists() for tool in SERVER_TOOLS):
            return server.parent
    return None


@dataclass(frozen=True)
class PostgresServer:
    bin_dir: Path
    port: int
    user: str
    database: str

    def conninfo(self, database: str | None = None) -> str:
        """libpq key/value connection string (trust authentication on loopback: no password)."""
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={database or self.database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; its conninfo."""
        subprocess.run(
            [self.bin_dir / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name],
            check=True,
            capture_output=True,
        )
        return self.conninfo(name)


@contextmanager
def postgres_server(database: str = "madef") -> Iterator[PostgresServer]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip(
            f"PostgreSQL is not installed (no folder with {', '.join(SERVER_TOOLS)}; apt-get install postgresql)"
        )
    run_as: dict = {}
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as")
        run_as = {"user": "postgres", "group": "postgres", "extra_groups": []}
    root = Path(tempfile.mkdtemp(prefix="madef-pg-"))
    if run_as:
        shutil.chown(root, "postgres", "postgres")
    data, log = root / "data", root / "server.log"
    user, port = "madef", free_port()
    server = None
    try:
        subprocess.run(
            [bin_dir / "initdb", "-D", data, "-U", user, "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
            **run_as,
        )
        with open(log, "wb") as log_file:
            server = subprocess.Popen(
                [bin_dir / "postgres", "-D", data, "-p", str(port), "-c", "listen_addresses=127.0.0.1"]
                + ["-c", "unix_socket_directories=", "-c", "fsync=off"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                **run_as,
            )
        _wait_until_ready(bin_dir, port, user, server, log)
        postgres = PostgresServer(bin_dir=bin_dir, port=port, user=user, database=database)
        postgres.create_database(database)
        yield postgres
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)  # fast shutdown: ends the sessions, no waiting for clients
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_ready(bin_dir: Path, port: int, user: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"PostgreSQL exited at start (code {server.returncode}):\n{log.read_text()[-3000:]}")
        ready = subprocess.run(
            [bin_dir / "pg_isready", "-h", "127.0.0.1", "-p", str(port), "-U", user], capture_output=True
        )
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    pytest.fail(f"PostgreSQL did not accept connections within {START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")
