"""The Dagster web server on loopback with the project's definitions: every asset and check over GraphQL,
and the asset graph in a real headless Chromium, with a screenshot."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from madef_assets.cli import INSTANCE_YAML
from madef_assets.definitions import build_definitions
from madef_assets.settings import load_settings
from madef_assets_tests.browser import free_port, headless_chromium, save_screenshot, wait_until_answering

QUERY = """{ assetNodes { assetKey { path } groupName kinds description isObservable
  assetChecksOrError { ... on AssetChecks { checks { name blocking } } } } }"""
GROUPS = [
    "diversity",
    "evaluation",
    "intent",
    "qualification",
    "responses",
    "reward",
    "selection",
    "sources",
    "training",
]


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    """dagster-webserver over workspace.yaml, stopped by its own PID (process group) afterwards."""
    tmp_path = tmp_path_factory.mktemp("webserver")
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "MADEF_STATE_DIR": str(tmp_path / "state")}
    log = tmp_path / "webserver.log"
    server = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "dagster-webserver"),
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/server_info", server, log, timeout_s=120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not graphql(port, QUERY).get("data", {}).get("assetNodes"):
            time.sleep(1)  # the code location is still loading
        yield port, tmp_path
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert server.returncode is not None


def test_graphql_lists_every_asset_and_check(webserver):
    port, _ = webserver
    nodes = graphql(port, QUERY)["data"]["assetNodes"]
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    graph = build_definitions(load_settings("demo", env={})).resolve_asset_graph()
    expected = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert set(by_key) == expected
    for key in ("s_eval", "xsafety", "safetybench", "quarantine/s_eval", "quarantine", "source_summary"):
        assert by_key[key]["groupName"] == "sources" and by_key[key]["description"], key
        assert "duckdb" in by_key[key]["kinds"], key
    assert by_key["raw/s_eval"]["isObservable"]
    assert sorted({n["groupName"] for n in nodes}) == GROUPS
    served_checks = {
        ("/".join(n["assetKey"]["path"]), c["name"]): c["blocking"]
        for n in nodes
        for c in (n["assetChecksOrError"] or {}).get("checks", [])
    }
    defined_checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert set(served_checks) == defined_checks
    for gate in (
        ("sft_dataset", "no_overlap_with_evaluation_prompts"),
        ("safe_responses", "parse_failure_rate_within_limit"),
        ("s_eval", "quarantine_share_within_limit"),
        ("attack_prompts", "every_category_present"),
        ("new_safety_benchmark", "disjoint_from_sft_dataset"),
    ):
        assert served_checks[gate] is True, gate


@pytest.mark.browser
def test_asset_graph_in_headless_chromium(webserver):
    port, tmp_path = webserver
    driver = headless_chromium(tmp_path / "chromium-profile")
    try:
        driver.get(f"http://127.0.0.1:{port}/asset-groups")
        body = wait_for_text(driver, "training")
        for group in GROUPS:
            assert group in body, group
        dismiss_welcome_dialog(driver)
        save_screenshot(driver, tmp_path / "dagster_asset_lineage.png")
        driver.get(f"http://127.0.0.1:{port}/locations/madef/asset-groups/evaluation")
        wait_for_text(driver, "eval_report")
        dismiss_welcome_dialog(driver)
        data = save_screenshot(driver, tmp_path / "dagster_evaluation_group.png")
        # The group's graph is laid out to fit the window and draws what is in view: each asset's own page
        # shows it whatever the layout.
        for asset in ("candidate_model", "review_queue", "review_decisions", "new_safety_scores", "sft_dataset"):
            driver.get(f"http://127.0.0.1:{port}/assets/{asset}")
            assert "Materialize" in wait_for_text(driver, asset), asset
    finally:
        driver.quit()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20 * 1024


def wait_for_text(driver, text: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    body = ""
    while time.monotonic() < deadline:
        body = driver.find_element("tag name", "body").text
        if text in body:
            return body
        time.sleep(0.5)
    pytest.fail(f"{text!r} never appeared on {driver.current_url}:\n{body[:2000]}")


def dismiss_welcome_dialog(driver) -> None:
    """Dagster's first-visit community dialog covers the graph; its Skip button closes it."""
    for button in driver.find_elements("xpath", "//button[normalize-space()='Skip']"):
        button.click()
        time.sleep(0.5)
