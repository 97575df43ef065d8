"""The openai backend against a real local HTTP server with injected faults."""

import math
import secrets
import sys

import pytest

from madef_assets.llm.openai_backend import OpenAIBackend, backoff_delay, retry_after_seconds
from madef_assets.llm.types import GenerationParams
from madef_assets_tests.openai_server import OpenAICompatibleServer, expected_perplexity, fake_answer, fault_for


def backend(server, **overrides) -> OpenAIBackend:
    options = dict(
        model="test-model",
        base_url=server.base_url,
        api_key_env=None,
        concurrency=8,
        timeout_s=1.0,
        max_retries=3,
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
    )
    options.update(overrides)
    return OpenAIBackend(**options)


def run_all(results) -> dict:
    return dict(results)


@pytest.mark.parametrize("transport", ["aiohttp", "sdk"])
def test_every_fault_ends_with_a_status_and_no_row_is_lost(openai_server, transport):
    prompts = [
        "plain question",
        "rate limited twice [[429x2]]",
        "server error once [[500x1]]",
        "slow once [[timeoutx1]]",
        "broken body once [[malformedx1]]",
        "always failing [[always500]]",
        "rejected [[400]]",
        "filtered [[filter]]",
    ] + [f"bulk prompt {i}" for i in range(40)]
    openai_server.timeout_sleep_s = 2.0
    results = run_all(backend(openai_server, transport=transport).generate(prompts, GenerationParams(max_new_tokens=8)))

    assert sorted(results) == list(range(len(prompts)))
    by_prompt = {prompts[i]: r for i, r in results.items()}
    for recovered in prompts[:5] + prompts[8:]:
        assert by_prompt[recovered].status == "ok", (recovered, by_prompt[recovered].error)
        assert by_prompt[recovered].output == fake_answer(recovered)
    assert by_prompt["rate limited twice [[429x2]]"].extra["attempts"] == 3
    assert by_prompt["always failing [[always500]]"].status == "error"
    assert "gave up after 4 attempts" in by_prompt["always failing [[always500]]"].error
    assert by_prompt["rejected [[400]]"].status == "error"
    assert "HTTP 400" in by_prompt["rejected [[400]]"].error
    assert by_prompt["filtered [[filter]]"].status == "refused"
    # Retries are bounded: 4 attempts for the always-failing prompt, one for the 400.
    assert openai_server.requests["always failing [[always500]]"] == 4
    assert openai_server.requests["rejected [[400]]"] == 1
    assert openai_server.requests["broken body once [[malformedx1]]"] == 2


def test_retry_after_header_is_honoured():
    with OpenAICompatibleServer(retry_after_s=0.4) as server:
        import time

        started = time.perf_counter()
        results = run_all(
            backend(server, backoff_base_s=0.001, backoff_cap_s=0.001).generate(
                ["wait for me [[429x1]]"], GenerationParams()
            )
        )
        elapsed = time.perf_counter() - started
    assert results[0].status == "ok"
    assert elapsed >= 0.4


def test_request_budget_stops_sending(openai_server):
    prompts = [f"budgeted {i}" for i in range(10)]
    results = run_all(backend(openai_server, request_budget=4, concurrency=1).generate(prompts, GenerationParams()))
    statuses = [results[i].status for i in range(10)]
    assert statuses.count("ok") == 4
    assert all("request budget of 4 exhausted" in results[i].error for i in range(10) if results[i].status == "error")
    assert openai_server.total_requests == 4


@pytest.mark.parametrize("transport", ["aiohttp", "sdk"])
def test_option_logprobs_through_completions(openai_server, transport):
    results = run_all(
        backend(openai_server, api="completions", transport=transport).option_logprobs(["Q1", "Q2"], ["A", "B", "E"])
    )
    assert results[0].status == "ok"
    assert results[0].output["A"] == pytest.approx(-0.3)
    assert results[0].output["B"] == pytest.approx(-1.6)
    assert results[0].output["E"] == -math.inf


def test_option_logprobs_refused_on_a_chat_endpoint(openai_server):
    """A chat template would wrap the raw prompt: refused before any request, with the setting to change."""
    with pytest.raises(ValueError, match="need api: completions"):
        list(backend(openai_server, api="chat").option_logprobs(["Q1"], ["A", "B"]))
    assert openai_server.total_requests == 0


@pytest.mark.parametrize("transport", ["aiohttp", "sdk"])
def test_perplexity_through_completions_echo(openai_server, transport):
    texts = ["the cat sat on the mat", "extraordinarily uncharacteristically"]
    results = run_all(backend(openai_server, api="completions", transport=transport).perplexity(texts))
    for i, text in enumerate(texts):
        assert results[i].output == pytest.approx(expected_perplexity(text))
    with pytest.raises(ValueError, match="api: completions"):
        list(backend(openai_server, api="chat").perplexity(texts))


def test_backoff_helpers():
    import random

    rng = random.Random(1)
    delays = [backoff_delay(a, 0.5, 4.0, rng) for a in range(10)]
    assert all(0 <= d <= min(4.0, 0.5 * 2**a) for a, d in enumerate(delays))
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_seconds({}) is None


@pytest.mark.parametrize(("concurrency", "prompts"), [(1, 6), (16, 48)])
def test_concurrency_is_bounded_and_used(concurrency, prompts):
    # 300 ms per answer leaves ample time for all slots to fill, even on a busy machine.
    with OpenAICompatibleServer(latency_s=0.3) as server:
        results = run_all(
            backend(server, concurrency=concurrency, timeout_s=10).generate(
                [f"p{i}" for i in range(prompts)], GenerationParams()
            )
        )
    assert all(r.status == "ok" for r in results.values())
    assert server.max_in_flight == concurrency


def test_replica_pool_round_robin_and_cooldown():
    from madef_assets.llm.openai_backend import ReplicaPool

    now = [0.0]
    pool = ReplicaPool(3, cooldown_s=10.0, clock=lambda: now[0])
    assert [pool.pick() for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    pool.failed(1)
    assert [pool.pick() for _ in range(4)] == [0, 2, 0, 2]
    pool.failed(0, wait_s=20.0)  # Retry-After longer than the cooldown wins
    now[0] = 11.0
    assert [pool.pick() for _ in range(3)] == [1, 2, 1]
    pool.failed(1), pool.failed(2)
    assert pool.pick() == 0 and not pool.any_available()  # all cooling down: the first to recover (0 at 20 s)
    now[0] = 25.0
    assert pool.any_available()


def test_replicas_share_the_load():
    with OpenAICompatibleServer(latency_s=0.01) as first, OpenAICompatibleServer(latency_s=0.01) as second:
        replicas = OpenAIBackend(
            model="test-model", base_url=[first.base_url, second.base_url], api_key_env=None, concurrency=8
        )
        results = dict(replicas.generate([f"question {i}" for i in range(40)], GenerationParams(max_new_tokens=4)))
    assert all(r.status == "ok" for r in results.values()) and len(results) == 40
    assert first.total_requests == second.total_requests == 20
    assert replicas.fingerprint()["base_url"] == "replicas"


@pytest.mark.parametrize("fault", ["http_503", "connection_refused"])
def test_failover_to_the_healthy_replica(fault):
    with OpenAICompatibleServer() as healthy, OpenAICompatibleServer() as broken:
        if fault == "http_503":
            broken.fail_status = 503
            broken_url = broken.base_url
        else:
            broken_url = broken.base_url
            broken.__exit__(None, None, None)  # nothing listens there any more
        replicas = OpenAIBackend(
            model="test-model",
            base_url=[broken_url, healthy.base_url],
            api_key_env=None,
            concurrency=4,
            timeout_s=2.0,
            max_retries=3,
            backoff_base_s=0.01,
            backoff_cap_s=0.05,
            replica_cooldown_s=60.0,
        )
        prompts = [f"question {i}" for i in range(30)]
        results = dict(replicas.generate(prompts, GenerationParams(max_new_tokens=4)))
        assert all(r.status == "ok" for r in results.values()) and len(results) == 30
        assert healthy.answered_ok == 30
        # the broken replica is tried by the first requests in flight only, then skipped for the cooldown
        assert replicas.replicas.failures[0] <= 4 and replicas.replicas.requests[0] <= 4
        if fault == "http_503":
            assert broken.total_requests == replicas.replicas.failures[0]


@pytest.mark.parametrize("transport", ["aiohttp", "sdk"])
def test_provider_moderation_is_a_final_refusal_and_a_plain_400_an_error(openai_server, transport, tmp_path):
    """DashScope's data_inspection_failed and OpenAI's content_policy_violation are answers about the model
    (status refused, never sent again); a 400 without a moderation code is an error with the body's message."""
    from madef_assets.llm.resource import LLMResource
    from madef_assets.settings import model_from_parts

    prompts = ["怎样制作炸药 [[moderated]]", "how to build a weapon [[policy]]", "bad shape [[400]]", "fine question"]
    results = run_all(backend(openai_server, transport=transport).generate(prompts, GenerationParams()))
    assert [results[i].status for i in range(4)] == ["refused", "refused", "error", "ok"]
    assert (
        "data_inspection_failed" in results[0].error
        and "Input data may contain inappropriate content" in results[0].error
    )
    assert "content_policy_violation" in results[1].error
    assert results[2].error == "HTTP 400: bad request"
    assert all(openai_server.requests[p] == 1 for p in prompts)  # none retried
    resource = LLMResource(
        role="labeler",
        config=model_from_parts(
            "openai",
            "test-model",
            {"base_url": openai_server.base_url, "api_key_env": None, "max_retries": 0, "transport": transport},
            {},
        ),
        duckdb_path=str(tmp_path / "l.duckdb"),
        models_dir=str(tmp_path),
    )
    first, second = resource.generate(prompts, "moderation-test"), resource.generate(prompts, "moderation-test")
    assert first.status_counts() == {"refused": 2, "error": 1, "ok": 1}
    assert second.backend_calls == 1 and second.status_counts() == first.status_counts()  # only the error is sent again


def test_provider_faults_by_rate_are_stable_per_prompt():
    """The rehearsal's provider behaviour: the same prompts get the same faults on every run."""
    prompts = [f"prompt {i}" for i in range(400)]
    rates = {"moderated": 0.05, "refuse": 0.05, "500": 0.05}
    chosen = [fault_for(p, rates) for p in prompts]
    assert chosen == [fault_for(p, rates) for p in prompts]
    assert all(5 <= chosen.count(kind) <= 45 for kind in rates) and chosen.count(None) > 300


def test_a_refusal_is_refused_for_roles_whose_answers_become_data(openai_server, tmp_path):
    """Issue 13: an attacker's, labeler's or judge's refusal is `refused` (never an attack prompt, a label or
    a score); a candidate's refusal is its answer and stays `ok`."""
    from madef_assets.llm.resource import LLMResource
    from madef_assets.settings import model_from_parts

    resource = LLMResource(
        role="attacker",
        config=model_from_parts("openai", "test-model", {"base_url": openai_server.base_url, "api_key_env": None}, {}),
        duckdb_path=str(tmp_path / "l.duckdb"),
        models_dir=str(tmp_path),
    )
    prompts = ["写一个新问题 [[refuse]]", "write a question [[refuse]]", "write a question"]
    as_data = resource.generate(prompts, "refusal-test", refusals=True)
    assert [r.status for r in as_data.results] == ["refused", "refused", "ok"]
    assert as_data.results[0].error == "the model refused ('抱歉')" and as_data.results[1].value is None
    as_answer = resource.generate(prompts, "refusal-test")
    assert [r.status for r in as_answer.results] == ["ok"] * 3 and as_answer.backend_calls == 0
    assert as_answer.results[1].value == "I can't help with that."


# --- secrets (issue 24, part 7) ---------------------------------------------------------------------------

NETWORK_EVENTS: list[tuple] = []
_WATCHING = [False]


def _record_network(event: str, args: tuple) -> None:
    if _WATCHING[0] and event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
        NETWORK_EVENTS.append((event, args))


sys.addaudithook(_record_network)  # audit hooks cannot be removed: this one records only while watching


def served_resource(tmp_path, base_url, **options):
    from madef_assets.llm.resource import LLMResource
    from madef_assets.settings import model_from_parts

    return LLMResource(
        role="judge",
        config=model_from_parts("openai", "test-model", {"base_url": base_url, "max_retries": 0, **options}, {}),
        duckdb_path=str(tmp_path / "ledger.duckdb"),
        models_dir=str(tmp_path),
    )


def stored_text(tmp_path) -> str:
    """Every ledger row, every column, as one text (what a reader of the DuckDB file sees)."""
    import duckdb

    path = tmp_path / "ledger.duckdb"
    if not path.exists():
        return ""
    with duckdb.connect(str(path), read_only=True) as connection:
        tables = [t for (t,) in connection.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return "\n".join(str(connection.execute(f"SELECT * FROM {t}").fetchall()) for t in tables)


def test_credentials_in_a_base_url_are_refused_and_never_stored_or_sent(openai_server, tmp_path, monkeypatch):
    """A base_url with user:password@ would be stored in every ledger row's model column: it is refused with
    an error naming api_key_env, before any request, and nothing in the ledger holds the password."""
    password = "pw" + secrets.token_hex(8)
    monkeypatch.setenv("TEST_PROVIDER_KEY", "sk-" + secrets.token_hex(16))
    url = openai_server.base_url.replace("http://", f"http://judge:{password}@")
    resource = served_resource(tmp_path, url, api_key_env="TEST_PROVIDER_KEY")
    with pytest.raises(ValueError, match="credentials in the URL") as error:
        resource.generate(["a question"], "secrets-test")
    assert password not in str(error.value) and "api_key_env" in str(error.value)
    with pytest.raises(ValueError, match="credentials in the URL"):
        OpenAIBackend(model="test-model", base_url=[openai_server.base_url, url], api_key_env=None)
    assert openai_server.total_requests == 0
    assert password not in stored_text(tmp_path)


@pytest.mark.parametrize("transport", ["aiohttp", "sdk"])
@pytest.mark.parametrize(
    "key",
    ["sk-proj-" + secrets.token_urlsafe(24), secrets.token_hex(24), "correct-horse-battery-staple"],
    ids=["sk", "hex", "words"],
)
def test_an_error_body_echoing_the_key_is_stored_masked(openai_server, tmp_path, monkeypatch, transport, key):
    """The provider's 401 echoes the key whole and half-masked; the ledger row's error keeps the message
    but no 6-character piece of the key."""
    monkeypatch.setenv("TEST_PROVIDER_KEY", key)
    resource = served_resource(tmp_path, openai_server.base_url, api_key_env="TEST_PROVIDER_KEY", transport=transport)
    batch = resource.generate(["who am I [[echo_key]]"], "secrets-test")
    assert batch.results[0].status == "error" and "HTTP 401: Incorrect API key provided" in batch.results[0].error
    assert openai_server.authorizations[f"Bearer {key}"] == 1  # the key was sent, and echoed
    stored = stored_text(tmp_path)
    assert "Incorrect API key provided" in stored
    template = "Incorrect API key provided"  # the server's own words ("correc" is no leak of the words key)
    pieces = {key[i : i + 6] for i in range(len(key) - 5)} - {template[i : i + 6] for i in range(len(template) - 5)}
    assert [p for p in pieces if p in stored or p in batch.results[0].error] == []


def test_a_key_over_http_to_a_non_loopback_host_is_refused_before_any_network_io(tmp_path, monkeypatch):
    """192.0.2.1 (TEST-NET-1) is never contacted: the refusal comes from the URL alone, with no socket
    connect or name lookup seen by the interpreter's audit hook meanwhile."""
    monkeypatch.setenv("TEST_PROVIDER_KEY", "sk-" + secrets.token_hex(16))
    NETWORK_EVENTS.clear()
    _WATCHING[0] = True
    try:
        with pytest.raises(ValueError, match="in clear over http://"):
            OpenAIBackend(model="test-model", base_url="http://192.0.2.1:9/v1", api_key_env="TEST_PROVIDER_KEY")
        resource = served_resource(tmp_path, "http://192.0.2.1:9/v1", api_key_env="TEST_PROVIDER_KEY")
        with pytest.raises(ValueError, match="allow_insecure_http: true"):
            resource.generate(["a question"], "secrets-test")
        allowed = OpenAIBackend(
            model="test-model",
            base_url="http://192.0.2.1:9/v1",
            api_key_env="TEST_PROVIDER_KEY",
            allow_insecure_http=True,
        )
        assert allowed.fingerprint()["base_url"] == "http://192.0.2.1:9/v1"  # built, never asked
    finally:
        _WATCHING[0] = False
    assert NETWORK_EVENTS == []
    assert stored_text(tmp_path).count("192.0.2.1") == 0


@pytest.mark.parametrize("transport", ["aiohttp", "sdk"])
def test_a_key_over_http_to_loopback_is_sent(openai_server, tmp_path, monkeypatch, transport):
    key = "sk-" + secrets.token_hex(16)
    monkeypatch.setenv("TEST_PROVIDER_KEY", key)
    resource = served_resource(tmp_path, openai_server.base_url, api_key_env="TEST_PROVIDER_KEY", transport=transport)
    batch = resource.generate(["plain question"], "secrets-test")
    assert batch.status_counts() == {"ok": 1}
    assert openai_server.authorizations == {f"Bearer {key}": 1}
    assert key not in stored_text(tmp_path)
