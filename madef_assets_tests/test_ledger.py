"""The LLM-call ledger: a second materialization makes no backend call; a killed run resumes."""

import os
import signal
import subprocess
import sys
import time

import duckdb
import pytest
from dagster import DagsterInstance, materialize

from madef_assets.llm.ledger import Ledger, ledger_key
from madef_assets_tests.openai_server import OpenAICompatibleServer

VENV_BIN = os.path.dirname(sys.executable)


def ledger_rows(path) -> int:
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute("select count(*) from llm_ledger").fetchone()[0]


@pytest.fixture
def ledger_env(tmp_path, monkeypatch):
    def configure(server: OpenAICompatibleServer, prompts: int, concurrency: int = 8) -> dict:
        env = {
            "MADEF_DUCKDB_PATH": str(tmp_path / "ledger.duckdb"),
            "MADEF_TEST_OPENAI_URL": server.base_url,
            "MADEF_TEST_PROMPTS": str(prompts),
            "MADEF_TEST_CONCURRENCY": str(concurrency),
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        }
        os.makedirs(env["DAGSTER_HOME"], exist_ok=True)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return env

    return configure


def materialize_in_process():
    import importlib

    import madef_assets_tests.ledger_defs as ledger_defs

    importlib.reload(ledger_defs)
    return materialize(
        [ledger_defs.llm_answers], resources=ledger_defs.resources_from_env(), instance=DagsterInstance.ephemeral()
    )


def test_second_materialization_makes_zero_backend_calls(ledger_env, tmp_path):
    with OpenAICompatibleServer() as server:
        ledger_env(server, prompts=50)
        first = materialize_in_process()
        assert first.success
        assert server.total_requests == 50
        second = materialize_in_process()
        assert second.success
        assert server.total_requests == 50  # counted at the server: nothing sent again
    metadata = second.asset_materializations_for_node("llm_answers")[0].metadata
    assert metadata["llm_backend_calls"].value == 0
    assert metadata["llm_ledger_hits"].value == 50
    assert metadata["llm_ledger_hit_rate"].value == 1.0
    assert metadata["dagster/row_count"].value == 50
    table = second.output_for_node("llm_answers")
    assert table["cached"].all() and (table["status"] == "ok").all()
    assert ledger_rows(tmp_path / "ledger.duckdb") == 50


def test_error_rows_are_retried_and_final_rows_are_not(tmp_path):
    ledger = Ledger(tmp_path / "l.duckdb")
    fingerprint = {"model": "m"}
    ok_key = ledger_key("generate", "openai", fingerprint, {}, "p1", "v1")
    error_key = ledger_key("generate", "openai", fingerprint, {}, "p2", "v1")
    base = {
        "role": "judge",
        "kind": "generate",
        "backend": "openai",
        "model": "{}",
        "template_version": "v1",
        "params": "{}",
        "prompt_tokens": None,
        "completion_tokens": None,
        "latency_s": None,
        "run_id": None,
    }
    ledger.write(
        [
            {**base, "key": ok_key, "prompt": "p1", "output": "yes", "status": "ok", "error": None},
            {**base, "key": error_key, "prompt": "p2", "output": None, "status": "error", "error": "HTTP 500"},
        ]
    )
    assert set(ledger.lookup([ok_key, error_key])) == {ok_key}
    # the key changes with every part that determines the answer
    variants = {
        ledger_key("generate", "openai", fingerprint, {}, "p1", "v2"),
        ledger_key("generate", "openai", {"model": "m2"}, {}, "p1", "v1"),
        ledger_key("generate", "openai", fingerprint, {"temperature": 1.0}, "p1", "v1"),
        ledger_key("generate", "vllm", fingerprint, {}, "p1", "v1"),
        ledger_key("perplexity", "openai", fingerprint, {}, "p1", "v1"),
    }
    assert ok_key not in variants and len(variants) == 5


def test_killed_run_resumes_with_only_the_missing_calls(ledger_env, tmp_path):
    total = 400
    with OpenAICompatibleServer(latency_s=0.02) as server:
        env = ledger_env(server, prompts=total, concurrency=4)
        log = tmp_path / "killed_run.log"
        process = subprocess.Popen(
            [
                os.path.join(VENV_BIN, "dagster"),
                "asset",
                "materialize",
                "-m",
                "madef_assets_tests.ledger_defs",
                "--select",
                "llm_answers",
            ],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )
        deadline = time.monotonic() + 120
        while server.answered_ok < 150 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert process.poll() is None, log.read_text()[-2000:]
        process.send_signal(signal.SIGKILL)
        process.wait()
        sent_before_kill = server.answered_ok
        kept = ledger_rows(tmp_path / "ledger.duckdb")
        assert 64 <= kept < total
        # at most one flush window of finished calls is lost to SIGKILL
        assert kept >= sent_before_kill - 64 - 4

        requests_before_resume = server.total_requests
        resumed = materialize_in_process()
        assert resumed.success
        assert server.total_requests - requests_before_resume == total - kept
    table = resumed.output_for_node("llm_answers")
    assert table.height == total and (table["status"] == "ok").all()
    assert table["cached"].sum() == kept
    assert ledger_rows(tmp_path / "ledger.duckdb") == total


def test_parse_errors_are_recorded_and_reparsed_without_new_calls(tmp_path):
    import json as jsonlib

    from madef_assets.llm.resource import LLMResource, ParseError

    def answer_length(text: str) -> int:
        length = int(text.split("(")[1].split(")")[0])
        if length % 2:
            raise ParseError(f"odd length {length}")
        return length

    with OpenAICompatibleServer() as server:
        resource = LLMResource(
            role="judge",
            backend="openai",
            model="test-model",
            duckdb_path=str(tmp_path / "p.duckdb"),
            models_dir=str(tmp_path),
            options_json=jsonlib.dumps({"base_url": server.base_url, "api_key_env": None, "max_retries": 0}),
        )
        first = resource.generate(["ab", "abc", "[[400]]"], template_version="parse-test", parse=answer_length)
        assert [r.status for r in first.results] == ["ok", "parse_error", "error"]
        assert first.results[0].value == 2 and first.results[1].error == "odd length 3"
        with duckdb.connect(str(tmp_path / "p.duckdb"), read_only=True) as connection:
            stored = dict(connection.execute("select prompt, status from llm_ledger").fetchall())
        assert stored == {"ab": "ok", "abc": "parse_error", "[[400]]": "error"}
        # a fixed parser reads the stored answers again; only the error row is sent again
        again = resource.generate(["ab", "abc", "[[400]]"], template_version="parse-test", parse=lambda t: t.upper())
        assert [r.status for r in again.results] == ["ok", "ok", "error"]
        assert again.backend_calls == 1 and server.total_requests == 4


def test_progress_is_logged_at_a_steady_interval_while_calls_run(tmp_path, monkeypatch, caplog):
    import json
    import logging

    from madef_assets.llm import resource as resource_module
    from madef_assets.llm.resource import LLMResource

    monkeypatch.setattr(resource_module, "PROGRESS_EVERY_S", 0.2)
    with OpenAICompatibleServer(latency_s=0.1) as server:
        judge = LLMResource(
            role="judge",
            backend="openai",
            model="test-model",
            duckdb_path=str(tmp_path / "p.duckdb"),
            models_dir=str(tmp_path),
            options_json=json.dumps({"base_url": server.base_url, "api_key_env": None, "concurrency": 1}),
        )
        judge.generate(["warm"], template_version="progress")
        log = logging.getLogger("madef.test.progress")
        with caplog.at_level(logging.INFO, logger="madef.test.progress"):
            judge.generate(["warm"] + [f"question {i}" for i in range(12)], template_version="progress", log=log)
    lines = [r.getMessage() for r in caplog.records if "calls done" in r.getMessage()]
    assert len(lines) >= 4, lines  # ~1.2 s of calls, a line every 0.2 s
    assert all("/12 calls done" in line and "ETA" in line and "1 ledger hits" in line for line in lines)
    done = [int(line.split(": ")[1].split("/")[0]) for line in lines]
    assert done == sorted(done) and done[-1] > done[0]
