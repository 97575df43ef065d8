"""The LLM-call ledger: a second materialization makes no backend call; a killed run resumes; the
append-only table, its two-pass lookup and the writer thread."""

import hashlib
import os
import signal
import subprocess
import sys
import time

import duckdb
import pytest
from dagster import DagsterInstance, materialize

from madef_assets.llm.ledger import FLUSH_ROWS, Ledger, LedgerWriter, key_hash, ledger_key, row_ranges
from madef_assets_tests.ledger_process import MATERIALIZE_COMMAND, ledger_rows, process_env
from madef_assets_tests.openai_server import OpenAICompatibleServer
from madef_assets_tests.test_openai_backend import served_resource

VENV_BIN = os.path.dirname(sys.executable)


def judge_without_retries(tmp_path, server: OpenAICompatibleServer):
    """An `openai` judge on the test server whose ledger is tmp_path/ledger.duckdb; an error is not retried."""
    return served_resource(tmp_path, server.base_url, api_key_env=None)


@pytest.fixture
def ledger_env(tmp_path, monkeypatch):
    def configure(server: OpenAICompatibleServer, prompts: int, concurrency: int = 8) -> dict:
        env = process_env(tmp_path, server.base_url, prompts, concurrency, tmp_path / "dagster_home")
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
    ledger.write([ledger_row(ok_key, "p1"), ledger_row(error_key, "p2", "error", None)])
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
    total, concurrency = 1000, 4
    with OpenAICompatibleServer(latency_s=0.02) as server:
        env = ledger_env(server, prompts=total, concurrency=concurrency)
        log = tmp_path / "killed_run.log"
        process = subprocess.Popen(
            MATERIALIZE_COMMAND,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )
        deadline = time.monotonic() + 120
        while server.answered_ok < 2 * FLUSH_ROWS and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert process.poll() is None, log.read_text()[-2000:]
        process.send_signal(signal.SIGKILL)
        process.wait()
        sent_before_kill = server.answered_ok
        kept = ledger_rows(tmp_path / "ledger.duckdb")
        assert FLUSH_ROWS <= kept < total
        # lost to SIGKILL: at most the rows waiting for the writer (a flush's worth, plus what arrived while
        # the previous flush was writing) and the answers still in flight
        assert kept >= sent_before_kill - 2 * FLUSH_ROWS - concurrency

        requests_before_resume = server.total_requests
        resumed = materialize_in_process()
        assert resumed.success
        assert server.total_requests - requests_before_resume == total - kept
    table = resumed.output_for_node("llm_answers")
    assert table.height == total and (table["status"] == "ok").all()
    assert table["cached"].sum() == kept
    assert ledger_rows(tmp_path / "ledger.duckdb") == total


def test_parse_errors_are_recorded_and_reparsed_without_new_calls(tmp_path):

    from madef_assets.llm.resource import ParseError

    def answer_length(text: str) -> int:
        length = int(text.split("(")[1].split(")")[0])
        if length % 2:
            raise ParseError(f"odd length {length}")
        return length

    with OpenAICompatibleServer() as server:
        resource = judge_without_retries(tmp_path, server)
        first = resource.generate(["ab", "abc", "[[400]]"], template_version="parse-test", parse=answer_length)
        assert [r.status for r in first.results] == ["ok", "parse_error", "error"]
        assert first.results[0].value == 2 and first.results[1].error == "odd length 3"
        with duckdb.connect(str(tmp_path / "ledger.duckdb"), read_only=True) as connection:
            stored = dict(connection.execute("select prompt, status from llm_ledger").fetchall())
        assert stored == {"ab": "ok", "abc": "parse_error", "[[400]]": "error"}
        # a fixed parser reads the stored answers again; only the error row is sent again
        again = resource.generate(["ab", "abc", "[[400]]"], template_version="parse-test", parse=lambda t: t.upper())
        assert [r.status for r in again.results] == ["ok", "ok", "error"]
        assert again.backend_calls == 1 and server.total_requests == 4


def test_progress_is_logged_at_a_steady_interval_while_calls_run(tmp_path, monkeypatch, caplog):
    import logging

    from madef_assets.llm import resource as resource_module

    monkeypatch.setattr(resource_module, "PROGRESS_EVERY_S", 0.2)
    with OpenAICompatibleServer(latency_s=0.1) as server:
        judge = served_resource(tmp_path, server.base_url, api_key_env=None, concurrency=1)
        judge.generate(["warm"], template_version="progress")
        log = logging.getLogger("madef.test.progress")
        with caplog.at_level(logging.INFO, logger="madef.test.progress"):
            judge.generate(["warm"] + [f"question {i}" for i in range(12)], template_version="progress", log=log)
    lines = [r.getMessage() for r in caplog.records if "calls done" in r.getMessage()]
    assert len(lines) >= 4, lines  # ~1.2 s of calls, a line every 0.2 s
    assert all("/12 calls done" in line and "ETA" in line and "1 ledger hits" in line for line in lines)
    done = [int(line.split(": ")[1].split("/")[0]) for line in lines]
    assert done == sorted(done) and done[-1] > done[0]


def ledger_row(key: str, prompt: str, status: str = "ok", output: str | None = "yes") -> dict:
    return {
        "key": key,
        "role": "judge",
        "kind": "generate",
        "backend": "openai",
        "model": "{}",
        "template_version": "v1",
        "params": "{}",
        "prompt": prompt,
        "output": output,
        "status": status,
        "error": None if status != "error" else "HTTP 500",
        "prompt_tokens": None,
        "completion_tokens": None,
        "latency_s": None,
        "run_id": None,
    }


def test_row_ranges_join_neighbours_closer_than_a_row_group():
    assert row_ranges([]) == []
    assert row_ranges([5]) == [(5, 5)]
    assert row_ranges([1, 2, 3, 10], gap=4) == [(1, 3), (10, 10)]
    assert row_ranges([0, 3, 6, 20, 22], gap=4) == [(0, 6), (20, 22)]


# Rows written for one key, in order -> what lookup returns: (status, index of the winning row), or None
# when the call is to be sent again. ok > refused > parse_error; the latest row within the best status.
PRECEDENCE_CASES = [
    (["ok", "refused"], ("ok", 0)),
    (["ok", "parse_error"], ("ok", 0)),
    (["ok", "error"], ("ok", 0)),
    (["ok", "refused", "parse_error", "error"], ("ok", 0)),
    (["refused", "ok"], ("ok", 1)),
    (["parse_error", "ok"], ("ok", 1)),
    (["error", "ok"], ("ok", 1)),
    (["parse_error", "refused"], ("refused", 1)),
    (["refused", "parse_error"], ("refused", 0)),
    (["refused", "error"], ("refused", 0)),
    (["parse_error", "error"], ("parse_error", 0)),
    (["error", "parse_error"], ("parse_error", 1)),
    (["ok", "ok"], ("ok", 1)),
    (["refused", "refused", "parse_error"], ("refused", 1)),
    (["ok", "refused", "ok", "error"], ("ok", 2)),
    (["error"], None),
    (["error", "error", "error"], None),
]


def check_precedence(ledger: Ledger) -> None:
    """The precedence table, all keys in one ledger: the n-th row of every key goes in the n-th write,
    so rows of different keys interleave as racing processes write them."""
    keys = [ledger_key("generate", "openai", {}, {}, f"case {i}", "v1") for i in range(len(PRECEDENCE_CASES))]
    for position in range(max(len(statuses) for statuses, _ in PRECEDENCE_CASES)):
        ledger.write(
            ledger_row(key, f"case {i}", statuses[position], f"row {position}")
            for i, (key, (statuses, _)) in enumerate(zip(keys, PRECEDENCE_CASES))
            if position < len(statuses)
        )
    found = ledger.lookup(keys)
    for key, (statuses, expected) in zip(keys, PRECEDENCE_CASES):
        got = (found[key]["status"], int(found[key]["output"].split()[1])) if key in found else None
        assert got == expected, statuses


def test_a_final_answer_is_never_replaced_by_a_later_worse_row(tmp_path):
    ledger = Ledger(tmp_path / "l.duckdb")
    check_precedence(ledger)
    # two rows of one key in one write (one created_at): the later one wins within its status
    key = ledger_key("generate", "openai", {}, {}, "same batch", "v1")
    ledger.write([ledger_row(key, "same batch", output="first"), ledger_row(key, "same batch", output="second")])
    assert ledger.lookup([key])[key]["output"] == "second"


def test_a_row_of_unknown_status_is_refused_with_a_clear_error(tmp_path):
    ledger = Ledger(tmp_path / "l.duckdb")
    key = ledger_key("generate", "openai", {}, {}, "p", "v1")
    with pytest.raises(ValueError, match=r"unknown status \['cached'\]"):
        ledger.write([ledger_row(key, "p", "ok"), ledger_row(key, "p", "cached")])
    assert ledger_rows(tmp_path / "l.duckdb") == 0


def test_a_rerun_sends_only_calls_whose_best_row_is_not_final(tmp_path):
    """Through LLMResource and a server that counts requests: an answer, a moderation refusal and an
    error; the re-run sends the error again only. Rows a racing process appends later (a refusal, a
    parse error, an error for the answered key) change nothing: the third run sends nothing."""

    prompts = ["answered", "moderated [[moderated]]", "failed once [[500x1]]"]
    with OpenAICompatibleServer() as server:
        resource = judge_without_retries(tmp_path, server)
        first = resource.generate(prompts, template_version="precedence")
        assert [r.status for r in first.results] == ["ok", "refused", "error"]
        second = resource.generate(prompts, template_version="precedence")
        assert [r.status for r in second.results] == ["ok", "refused", "ok"]
        assert second.backend_calls == 1 and server.total_requests == 4
        answered, moderated = first.results[0].key, first.results[1].key
        Ledger(tmp_path / "ledger.duckdb").write(
            [
                ledger_row(answered, prompts[0], "refused", "moderated later"),
                ledger_row(answered, prompts[0], "parse_error", "unparsable later"),
                ledger_row(answered, prompts[0], "error", None),
                ledger_row(moderated, prompts[1], "parse_error", "unparsable later"),
            ]
        )
        third = resource.generate(prompts, template_version="precedence")
        assert third.backend_calls == 0 and server.total_requests == 4
    assert [(r.status, r.output) for r in third.results] == [(r.status, r.output) for r in second.results]


def test_lookup_reads_only_the_row_ranges_that_hold_the_keys_and_finds_them_all(tmp_path):
    """A ledger over three row groups: keys from its start and its end (two ranges), keys never written,
    and keys whose 64-bit prefix is stored under another full key all get the right answer."""
    path = tmp_path / "big.duckdb"
    Ledger(path)
    with duckdb.connect(str(path)) as connection:
        connection.execute(
            "INSERT INTO llm_ledger SELECT k, ('0x' || substr(k, 1, 16))::UBIGINT, 'judge', 'generate', 'openai', "
            "'{}', 'v1', '{}', 'prompt ' || i, 'answer ' || i, 'ok', NULL, NULL, NULL, NULL, NULL, now() "
            "FROM (SELECT i, sha256(i::VARCHAR) AS k FROM range(300000) t(i))"
        )
    wanted = [0, 1, 299_998, 299_999]
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in wanted]
    impostor = keys[0][:16] + "0" * 48  # same key_hash as key 0, another key
    found = Ledger(path).lookup([*keys, impostor, "f" * 64])
    assert {k: v["output"] for k, v in found.items()} == {k: f"answer {i}" for k, i in zip(keys, wanted)}


def test_a_ledger_with_the_old_primary_key_is_moved_to_the_append_only_table(tmp_path):
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute(KEYED_LEDGER_DDL)
        connection.execute(
            "INSERT INTO llm_ledger VALUES (?, 'judge', 'generate', 'openai', '{}', 'v1', '{}', 'p', 'kept', 'ok', "
            "NULL, 3, 4, 0.5, 'run-1', TIMESTAMP '2026-01-01 00:00:00')",
            [ledger_key("generate", "openai", {}, {}, "p", "v1")],
        )
    ledger = Ledger(path)
    key = ledger_key("generate", "openai", {}, {}, "p", "v1")
    assert ledger.lookup([key])[key]["output"] == "kept"
    ledger.write([ledger_row(key, "p", output="again")])  # the same key twice: no unique index any more
    assert ledger.lookup([key])[key]["output"] == "again"
    with duckdb.connect(str(path), read_only=True) as connection:
        constraints = connection.execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'"
        ).fetchone()[0]
        stored = connection.execute(
            "SELECT key_hash, prompt_tokens, run_id FROM llm_ledger ORDER BY created_at"
        ).fetchall()
    assert constraints == 0 and stored[0] == (key_hash(key), 3, "run-1")
    assert Ledger(path).lookup([key])[key]["output"] == "again"  # opened again: nothing moved twice


KEYED_LEDGER_DDL = """CREATE TABLE llm_ledger (key VARCHAR PRIMARY KEY, role VARCHAR NOT NULL, kind VARCHAR NOT NULL,
backend VARCHAR NOT NULL, model VARCHAR NOT NULL, template_version VARCHAR, params VARCHAR, prompt VARCHAR NOT NULL,
output VARCHAR, status VARCHAR NOT NULL, error VARCHAR, prompt_tokens INTEGER, completion_tokens INTEGER,
latency_s DOUBLE, run_id VARCHAR, created_at TIMESTAMP NOT NULL)"""


class FailingLedger(Ledger):
    """A ledger whose writes fail (a full disk, a lock never released) until `healthy` is set."""

    healthy = False

    def write(self, rows):
        if not self.healthy:
            raise OSError("disk full")
        return super().write(rows)


def rows_written(path) -> int:
    """Rows in the ledger, read from this process while its writer thread may open the file too (DuckDB
    allows one configuration per file in a process: read-write here as there)."""
    with duckdb.connect(str(path)) as connection:
        return connection.execute("select count(*) from llm_ledger").fetchone()[0]


def test_the_writer_flushes_by_rows_and_by_time_off_the_callers_thread(tmp_path):
    ledger = Ledger(tmp_path / "w.duckdb")
    rows = [ledger_row(ledger_key("generate", "openai", {}, {}, str(i), "v1"), str(i)) for i in range(25)]
    with LedgerWriter(ledger, rows=10, seconds=60) as writer:
        for row in rows[:20]:
            writer.add(row)
        deadline = time.monotonic() + 10
        while rows_written(tmp_path / "w.duckdb") < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rows_written(tmp_path / "w.duckdb") == 20  # two full batches, written while the block runs
        writer.add(rows[20])
    assert rows_written(tmp_path / "w.duckdb") == 21  # the rest at the end
    with LedgerWriter(ledger, rows=1000, seconds=0.2) as writer:
        writer.add(rows[21])
        time.sleep(1.0)
        assert rows_written(tmp_path / "w.duckdb") == 22  # by time, with few rows waiting
    with pytest.raises(KeyboardInterrupt), LedgerWriter(ledger, rows=1000, seconds=60) as writer:
        writer.add(rows[22])
        raise KeyboardInterrupt
    assert rows_written(tmp_path / "w.duckdb") == 23  # interrupted: what finished is still written


def test_a_failing_writer_stops_the_caller_and_keeps_its_rows_for_one_more_try(tmp_path):
    ledger = FailingLedger(tmp_path / "f.duckdb")
    rows = [ledger_row(ledger_key("generate", "openai", {}, {}, str(i), "v1"), str(i)) for i in range(3)]
    with pytest.raises(RuntimeError, match="disk full"), LedgerWriter(ledger, rows=1, seconds=60) as writer:
        writer.add(rows[0])
        deadline = time.monotonic() + 10
        while writer._error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        ledger.healthy = True  # the disk has room again: the rows kept are written at the end
        writer.add(rows[1])
    assert rows_written(tmp_path / "f.duckdb") == 1
