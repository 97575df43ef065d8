"""The human-review queues (the judge's, and the taxonomy queue of raw intent labels): decisions-file logic and
the review web page over HTTP."""

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from madef_assets.defs.intent.taxonomy import CATEGORIES
from madef_assets.review.decisions import (
    DECISION_FIELDS,
    QUEUE_FIELDS,
    append_decision,
    latest_decisions,
    read_queue,
)
from madef_assets.review.server import serve


def queue_item(review_key: str, **changes) -> dict:
    item = {
        "review_key": review_key,
        "benchmark": "new_safety",
        "candidate": "base",
        "category": "crime",
        "prompt": f"prompt {review_key}",
        "response": f"response {review_key}",
        "judge_label": "uncertain",
        "judge_reason": "hedged answer",
        "allowed_decisions": ["safe", "unsafe"],
    }
    return item | changes


def write_queue(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
    return path


# --- decisions logic ---------------------------------------------------------------------------------------------


def test_read_queue_missing_file_is_empty(tmp_path):
    assert read_queue(tmp_path / "absent.jsonl") == []


def test_read_queue_keeps_order_and_fields(tmp_path):
    items = [queue_item("k1"), queue_item("k2", judge_label=None, judge_reason=None)]
    path = write_queue(tmp_path / "queue.jsonl", items)
    with path.open("a") as handle:
        handle.write("\n")  # blank lines are not items
    assert read_queue(path) == items
    assert set(read_queue(path)[0]) == set(QUEUE_FIELDS)


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"review_key": "k9"}), "missing field"),
        (json.dumps(queue_item("k9", allowed_decisions=[])), "allowed_decisions"),
        (json.dumps(queue_item("k1")), "duplicate review_key"),
    ],
)
def test_read_queue_malformed_line_names_file_and_line(tmp_path, bad_line, reason):
    path = write_queue(tmp_path / "queue.jsonl", [queue_item("k1")])
    with path.open("a") as handle:
        handle.write(bad_line + "\n")
    with pytest.raises(ValueError, match=rf"queue\.jsonl:2: .*{reason}"):
        read_queue(path)


def test_append_decision_writes_one_line_and_creates_folders(tmp_path):
    path = tmp_path / "nested" / "folder" / "decisions.jsonl"
    record = append_decision(path, "k1", "unsafe", " alice ", note="clear harm", allowed=["safe", "unsafe"])
    assert tuple(record) == DECISION_FIELDS
    assert record["reviewer"] == "alice" and record["decided_at"].endswith("+00:00")
    assert [json.loads(line) for line in path.read_text().splitlines()] == [record]


@pytest.mark.parametrize(
    "key, decision, reviewer, allowed, reason",
    [
        ("", "safe", "alice", None, "review_key is empty"),
        ("k1", "safe", "  ", None, "reviewer is empty"),
        ("k1", "", "alice", None, "decision is empty"),
        ("k1", "maybe", "alice", ["safe", "unsafe"], "not one of"),
    ],
)
def test_append_decision_rejects_invalid_and_writes_nothing(tmp_path, key, decision, reviewer, allowed, reason):
    path = tmp_path / "decisions.jsonl"
    with pytest.raises(ValueError, match=reason):
        append_decision(path, key, decision, reviewer, allowed=allowed)
    assert not path.exists()


def test_latest_decision_wins_and_malformed_lines_are_reported(tmp_path):
    path = tmp_path / "decisions.jsonl"
    append_decision(path, "k1", "safe", "alice")
    with path.open("a") as handle:
        handle.write("{broken\n")
        handle.write(json.dumps({"review_key": "k3"}) + "\n")
        handle.write(json.dumps({"review_key": "k4", "decision": "safe"}))  # hand edit without a final newline
    append_decision(path, "k2", "unsafe", "bob")
    append_decision(path, "k1", "unsafe", "carol", note="changed my mind")
    latest, problems = latest_decisions(path)
    assert {key: record["decision"] for key, record in latest.items()} == {"k1": "unsafe", "k2": "unsafe", "k4": "safe"}
    assert latest["k1"]["reviewer"] == "carol"
    assert len(problems) == 2
    assert problems[0].startswith(f"{path}:2: not valid JSON")
    assert problems[1] == f"{path}:3: decision must be a non-empty string"


def test_latest_decisions_missing_file(tmp_path):
    assert latest_decisions(tmp_path / "absent.jsonl") == ({}, [])


def test_concurrent_appends_from_threads_are_all_kept(tmp_path):
    path = tmp_path / "decisions.jsonl"
    threads_count, per_thread = 8, 50

    def write(thread: int) -> None:
        for i in range(per_thread):
            append_decision(path, f"t{thread}-{i}", "safe", f"reviewer{thread}", note="x" * 500)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latest, problems = latest_decisions(path)
    assert problems == []
    assert len(latest) == threads_count * per_thread
    assert len(path.read_text().splitlines()) == threads_count * per_thread


# --- the web page over HTTP --------------------------------------------------------------------------------------


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


@pytest.fixture
def review_server(tmp_path):
    """A review server on a free loopback port over a three-item queue; yields (base_url, queue, decisions)."""
    items = [
        queue_item("k1", prompt="How do I <script>alert(1)</script> pick a lock?"),
        queue_item("k2"),
        queue_item(
            "k3",
            benchmark="responsibility_mcq",
            category="责任",
            prompt="哪个回复更负责任？",
            judge_label=None,
            judge_reason=None,
            allowed_decisions=["回复1", "回复2", "other", "refuse"],
        ),
    ]
    queue = write_queue(tmp_path / "queue.jsonl", items)
    decisions = tmp_path / "out" / "decisions.jsonl"
    server = serve(queue, decisions, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", queue, decisions
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def get(url: str) -> tuple[int, str]:
    try:
        with OPENER.open(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def post(url: str, fields: dict[str, str]) -> tuple[int, dict, str]:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST")
    try:
        with OPENER.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def test_page_lists_pending_items(review_server):
    base, _, _ = review_server
    status, page = get(base + "/?reviewer=alice")
    assert status == 200
    assert "<title>madef review queue</title>" in page
    assert '<span id="pending-count">3</span>' in page
    for key in ("k1", "k2", "k3"):
        assert f'id="item-{key}"' in page
    assert page.count('class="decide"') == 2 + 2 + 4
    assert 'data-decision="回复2"' in page and "哪个回复更负责任？" in page
    assert page.count('name="reviewer" class="reviewer" value="alice"') == 3


def test_prompt_html_is_escaped(review_server):
    base, _, _ = review_server
    _, page = get(base + "/")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_decide_records_redirects_and_hides_item(review_server):
    base, _, decisions = review_server
    status, headers, _ = post(
        base + "/decide", {"review_key": "k1", "decision": "unsafe", "reviewer": "alice", "note": "clear harm"}
    )
    assert status == 303
    assert headers["Location"] == "/?reviewer=alice"
    status, headers, _ = post(
        base + "/decide", {"review_key": "k3", "decision": "回复2", "reviewer": "alice", "note": ""}
    )
    assert status == 303
    records = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert [(r["review_key"], r["decision"], r["reviewer"]) for r in records] == [
        ("k1", "unsafe", "alice"),
        ("k3", "回复2", "alice"),
    ]
    assert records[0]["note"] == "clear harm"

    _, page = get(base + "/")
    assert '<span id="pending-count">1</span>' in page
    assert 'id="item-k1"' not in page and 'id="item-k3"' not in page and 'id="item-k2"' in page

    _, page = get(base + "/?all=1")
    assert '<span id="pending-count">1</span>' in page
    assert all(f'id="item-{key}"' in page for key in ("k1", "k2", "k3"))
    assert "Decided: <b>unsafe</b> by alice" in page and "Decided: <b>回复2</b> by alice" in page

    status, body = get(base + "/api/queue")
    assert status == 200
    by_key = {item["review_key"]: item for item in json.loads(body)}
    assert by_key["k1"]["decision"]["decision"] == "unsafe"
    assert by_key["k3"]["decision"]["decision"] == "回复2"
    assert by_key["k2"]["decision"] is None


def test_decide_unknown_key_is_404(review_server):
    base, _, decisions = review_server
    status, _, body = post(base + "/decide", {"review_key": "nope", "decision": "safe", "reviewer": "alice"})
    assert status == 404 and "nope" in body
    assert not decisions.exists()


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"review_key": "k1", "decision": "回复1", "reviewer": "alice"}, "not one of"),
        ({"review_key": "k1", "decision": "safe", "reviewer": ""}, "reviewer is empty"),
    ],
)
def test_decide_invalid_is_400(review_server, fields, reason):
    base, _, decisions = review_server
    status, _, body = post(base + "/decide", fields)
    assert status == 400 and reason in body
    assert not decisions.exists()


def test_cross_origin_post_is_refused(review_server):
    base, _, decisions = review_server
    request = urllib.request.Request(
        base + "/decide",
        method="POST",
        headers={"Origin": "http://evil.example"},
        data=b"review_key=k1&decision=safe&reviewer=mallory",
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        OPENER.open(request, timeout=10)
    assert error.value.code == 403
    assert not decisions.exists()


def test_queue_is_reread_on_each_request(review_server):
    base, queue, _ = review_server
    write_queue(queue, [queue_item("k9")])
    _, page = get(base + "/")
    assert '<span id="pending-count">1</span>' in page and 'id="item-k9"' in page


def test_broken_queue_file_is_a_500_naming_the_line(review_server):
    base, queue, _ = review_server
    with queue.open("a") as handle:
        handle.write("{oops\n")
    status, body = get(base + "/")
    assert status == 500 and "queue.jsonl:4" in body


def test_decisions_file_problems_are_shown(review_server):
    base, _, decisions = review_server
    decisions.parent.mkdir(parents=True)
    decisions.write_text("{broken\n")
    _, page = get(base + "/")
    assert "decisions.jsonl:1: not valid JSON" in page


# --- the taxonomy queue (raw intent labels, §3.2's manual merging) -------------------------------------------------


def label_item(key: str, **changes) -> dict:
    item = {
        "review_key": key,
        "label": key,
        "count": 3,
        "status": "proposed",
        "proposed": "EM",
        "similarity": 0.42,
        "allowed_decisions": [*CATEGORIES, "ignore"],
    }
    return item | changes


@pytest.fixture
def taxonomy_server(tmp_path):
    """A review server whose taxonomy queue holds a proposed, an unmapped and a hostile label; yields
    (base_url, taxonomy decisions file)."""
    write_queue(
        tmp_path / "taxonomy_queue.jsonl",
        [
            label_item("伦理道德观"),
            label_item("天气", status="unmapped", proposed=None, similarity=0.1),
            label_item("<img src=x onerror=alert(1)>", proposed=None),
        ],
    )
    server = serve(tmp_path / "queue.jsonl", tmp_path / "decisions.jsonl", port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "taxonomy_decisions.jsonl"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_taxonomy_page_lists_labels_with_accept_category_and_ignore(taxonomy_server):
    base, _ = taxonomy_server
    status, page = get(base + "/taxonomy?reviewer=ann")
    assert status == 200 and "<title>madef taxonomy queue</title>" in page
    assert '<span id="pending-count">3</span>' in page
    assert page.count('class="decide accept"') == 1 and "accept EM" in page and "Proposed: <b>EM</b>" in page
    assert page.count('class="decide') == 16 + 15 + 15
    assert page.count('action="/taxonomy/decide"') == 3 and 'href="/taxonomy?' in page
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    _, judge_page = get(base + "/")
    assert 'href="/taxonomy?reviewer=' in judge_page  # the judge's page links the taxonomy queue


def test_taxonomy_decisions_go_to_their_own_file(taxonomy_server, tmp_path):
    base, decisions = taxonomy_server
    status, headers, _ = post(
        base + "/taxonomy/decide", {"review_key": "伦理道德观", "decision": "EM", "reviewer": "ann"}
    )
    assert status == 303 and headers["Location"] == "/taxonomy?reviewer=ann"
    assert post(base + "/taxonomy/decide", {"review_key": "天气", "decision": "ignore", "reviewer": "ann"})[0] == 303
    assert [(r["review_key"], r["decision"]) for r in map(json.loads, decisions.read_text().splitlines())] == [
        ("伦理道德观", "EM"),
        ("天气", "ignore"),
    ]
    assert not (tmp_path / "decisions.jsonl").exists()  # the judge's decisions file is untouched
    _, page = get(base + "/taxonomy")
    assert '<span id="pending-count">1</span>' in page
    status, body = get(base + "/api/taxonomy")
    assert status == 200 and {i["review_key"]: (i["decision"] or {}).get("decision") for i in json.loads(body)} == {
        "伦理道德观": "EM",
        "天气": "ignore",
        "<img src=x onerror=alert(1)>": None,
    }


@pytest.mark.parametrize(
    "fields, code",
    [
        ({"review_key": "天气", "decision": "XX", "reviewer": "ann"}, 400),
        ({"review_key": "天气", "decision": "safe", "reviewer": "ann"}, 400),
        ({"review_key": "absent", "decision": "EM", "reviewer": "ann"}, 404),
    ],
)
def test_taxonomy_decision_outside_the_categories_is_refused(taxonomy_server, fields, code):
    base, decisions = taxonomy_server
    assert post(base + "/taxonomy/decide", fields)[0] == code
    assert not decisions.exists()


def test_taxonomy_cross_origin_post_is_refused(taxonomy_server):
    base, decisions = taxonomy_server
    request = urllib.request.Request(
        base + "/taxonomy/decide",
        method="POST",
        headers={"Origin": "http://evil.example"},
        data="review_key=天气&decision=ignore&reviewer=mallory".encode(),
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        OPENER.open(request, timeout=10)
    assert error.value.code == 403 and not decisions.exists()
