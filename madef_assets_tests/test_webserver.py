"""The Dagster web server loads the project's workspace and serves the sources group over GraphQL."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from madef_assets.cli import INSTANCE_YAML

QUERY = "{ assetNodes { assetKey { path } groupName kinds description isObservable } }"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_webserver_serves_sources_group(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "MADEF_STATE_DIR": str(tmp_path / "state")}
    log = tmp_path / "webserver.log"
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        nodes = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                nodes = graphql(port, QUERY)["data"]["assetNodes"]
                if nodes:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert nodes, log.read_text()[-3000:]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    for key in ("s_eval", "xsafety", "safetybench", "quarantine/s_eval", "quarantine", "source_summary"):
        assert by_key[key]["groupName"] == "sources" and by_key[key]["description"], key
        assert "duckdb" in by_key[key]["kinds"], key
    assert by_key["raw/s_eval"]["isObservable"]
