"""The human-review queues (the judge's, and the taxonomy queue of raw intent labels): decisions-file logic and
the review web page over HTTP."""

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from madef_assets.cli import main
from madef_assets.defs.intent.taxonomy import CATEGORIES
from madef_assets.project import PROJECT_ROOT
from madef_assets.review.decisions import (
    DECISION_FIELDS,
    QUEUE_FIELDS,
    append_decision,
    latest_decisions,
    read_queue,
    write_jsonl_atomically,
)
from madef_assets.review.server import ACCESS_TOKEN_ENV, allowed_host_headers, check_access_token, serve

pytestmark = pytest.mark.alone  # servers stopped by signal within deadlines: run after the parallel part


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


def form_token(base: str) -> str:
    """The form token the page's forms carry (what a reviewer's browser posts back)."""
    pages = get(base + "/")[1] + get(base + "/taxonomy")[1]
    tokens = set(re.findall(r'name="csrf_token" value="([^"]+)"', pages))
    assert len(tokens) == 1, pages[:2000]
    return tokens.pop()


def post(url: str, fields: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, dict, str]:
    """POST a form as the page would: with the server's form token unless the fields name one already."""
    parts = urllib.parse.urlsplit(url)
    fields = {"csrf_token": form_token(f"{parts.scheme}://{parts.netloc}")} | fields
    request = urllib.request.Request(
        url, data=urllib.parse.urlencode(fields).encode(), method="POST", headers=headers or {}
    )
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
    with OPENER.open(base + "/", timeout=10) as response:
        page = response.read().decode()
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
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


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},  # a sandboxed frame or a redirect chain
        {"Referer": "http://evil.example/attack.html"},
        {"Origin": "https://127.0.0.1:{port}"},  # right host, another scheme: another origin
        {"Origin": "http://127.0.0.1:{port}", "Referer": "http://evil.example/"},
    ],
)
def test_cross_origin_post_is_refused_even_with_the_form_token(review_server, headers):
    base, _, decisions = review_server
    port = urllib.parse.urlsplit(base).port
    headers = {name: value.format(port=port) for name, value in headers.items()}
    status, _, body = post(base + "/decide", {"review_key": "k1", "decision": "safe", "reviewer": "m"}, headers)
    assert status == 403 and "cross-site post refused" in body
    assert not decisions.exists()


def test_same_origin_post_with_origin_and_referer_is_recorded(review_server):
    base, _, decisions = review_server
    port = urllib.parse.urlsplit(base).port
    headers = {"Origin": f"http://localhost:{port}", "Referer": f"http://127.0.0.1:{port}/?reviewer=a"}
    status, _, _ = post(base + "/decide", {"review_key": "k1", "decision": "safe", "reviewer": "a"}, headers)
    assert status == 303 and json.loads(decisions.read_text())["decision"] == "safe"


@pytest.mark.parametrize("token", [None, "", "forged", "x" * 43])
def test_post_without_the_form_token_is_refused(review_server, token):
    base, _, decisions = review_server
    fields = {"review_key": "k1", "decision": "safe", "reviewer": "mallory"}
    data = urllib.parse.urlencode(fields | ({} if token is None else {"csrf_token": token})).encode()
    request = urllib.request.Request(base + "/decide", data=data, method="POST")
    with pytest.raises(urllib.error.HTTPError) as error:
        OPENER.open(request, timeout=10)
    assert error.value.code == 403 and "form token" in error.value.read().decode()
    assert not decisions.exists()


def test_every_form_carries_the_token_of_its_server(review_server, tmp_path):
    base, queue, _ = review_server
    _, page = get(base + "/?all=1")
    assert page.count("<form ") == 3 and len(re.findall(r'name="csrf_token" value="[\w-]{43}"', page)) == 3
    other = serve(queue, tmp_path / "other.jsonl", port=0)
    try:
        assert other.csrf_token != form_token(base)  # per server, random
    finally:
        other.server_close()


def raw_request(
    base: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b""
) -> tuple[int, str]:
    """Send a request with exactly these headers (http.client adds no Host of its own here)."""
    parts = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        if body:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.mark.parametrize(
    "hosts",
    [
        ["evil.example:{port}"],  # DNS rebinding: the attacker's name now resolves to 127.0.0.1
        ["evil.example"],
        ["127.0.0.1:1"],  # another port: another origin
        ["127.0.0.1.evil.example:{port}"],
        [],  # no Host at all
        ["127.0.0.1:{port}", "evil.example:{port}"],  # two Host headers
    ],
)
def test_a_foreign_host_header_is_refused_for_get_and_post(review_server, hosts):
    base, _, decisions = review_server
    port = urllib.parse.urlsplit(base).port
    headers = [("Host", host.format(port=port)) for host in hosts]
    token = form_token(base)
    for method, path in (("GET", "/"), ("GET", "/api/queue"), ("GET", "/api/taxonomy"), ("POST", "/decide")):
        body = urllib.parse.urlencode(
            {"csrf_token": token, "review_key": "k1", "decision": "safe", "reviewer": "mallory"}
        ).encode()
        status, text = raw_request(base, method, path, headers, body if method == "POST" else b"")
        assert status == 421, (method, path, status, text)
        assert "refused: this review server answers only" in text and "k1" not in text and "prompt" not in text
    assert not decisions.exists()


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "[::1]:{port}"])
def test_the_loopback_host_names_are_answered(review_server, host):
    base, _, _ = review_server
    port = urllib.parse.urlsplit(base).port
    status, text = raw_request(base, "GET", "/api/queue", [("Host", host.format(port=port))])
    assert status == 200 and [i["review_key"] for i in json.loads(text)] == ["k1", "k2", "k3"]


def test_allowed_host_names():
    assert allowed_host_headers("127.0.0.1", 8765) == {"127.0.0.1:8765", "localhost:8765", "[::1]:8765"}
    assert "review.lan:9000" in allowed_host_headers("0.0.0.0", 9000, ["Review.LAN"])
    assert "0.0.0.0:9000" not in allowed_host_headers("0.0.0.0", 9000)  # a wildcard is no name to be reached by
    assert "[fe80::1]:9000" in allowed_host_headers("fe80::1", 9000)
    assert {"localhost", "localhost:80"} <= allowed_host_headers("127.0.0.1", 80)  # browsers drop :80


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


def test_taxonomy_cross_origin_or_tokenless_post_is_refused(taxonomy_server):
    base, decisions = taxonomy_server
    fields = {"review_key": "天气", "decision": "ignore", "reviewer": "mallory"}
    assert post(base + "/taxonomy/decide", fields, {"Origin": "http://evil.example"})[0] == 403
    assert post(base + "/taxonomy/decide", fields | {"csrf_token": ""})[0] == 403
    assert not decisions.exists()


# --- slow clients, concurrent queue rewrites ------------------------------------------------------------------------


@pytest.fixture
def impatient_server(tmp_path):
    """A review server that drops a connection idle for 1 s, and any request not done within 3 s."""
    queue = write_queue(tmp_path / "queue.jsonl", [queue_item("k1")])
    server = serve(queue, tmp_path / "decisions.jsonl", port=0, idle_timeout_s=1.0, request_deadline_s=3.0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def closed_at(sock: socket.socket, limit_s: float = 15) -> float:
    """Read until the server closes the connection; when that was (time.monotonic)."""
    sock.settimeout(limit_s)
    while sock.recv(4096):
        pass
    return time.monotonic()


def still_open(sock: socket.socket) -> bool:
    """The server has neither closed the connection nor sent anything on it."""
    sock.setblocking(False)
    try:
        sock.recv(1)
        return False
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)


def test_a_silent_client_blocks_no_one_and_is_dropped(impatient_server):
    port = impatient_server
    start = time.monotonic()
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    try:
        status, _ = get(f"http://127.0.0.1:{port}/api/queue")
        assert status == 200 and all(still_open(sock) for sock in silent)  # answered while they still wait
        waited = [closed_at(sock) - start for sock in silent]  # then each dropped (closed_at gives up at 15 s)
        assert all(seconds > 0.9 for seconds in waited), waited
    finally:
        for sock in silent:
            sock.close()


def test_a_client_that_trickles_its_request_is_dropped_at_the_deadline(impatient_server):
    port = impatient_server
    trickle = socket.create_connection(("127.0.0.1", port))
    start = time.monotonic()
    try:
        trickle.sendall(f"GET /api/queue HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
        closed = False
        for _ in range(20):  # a header byte every 0.4 s: never idle for the 1 s timeout
            time.sleep(0.4)
            assert get(f"http://127.0.0.1:{port}/api/queue")[0] == 200
            try:
                trickle.sendall(b"X")
            except OSError:
                closed = True
                break
            trickle.setblocking(False)
            try:
                closed = trickle.recv(1) == b""
            except BlockingIOError:
                pass
            finally:
                trickle.setblocking(True)
            if closed:
                break
        elapsed = time.monotonic() - start
        assert closed and 2.5 < elapsed < 6, elapsed
    finally:
        trickle.close()


def test_readers_see_a_whole_queue_during_concurrent_rewrites(tmp_path):
    """Writers replace the queue with queues of different lengths while readers read it, directly and through
    the page: every read is one of the queues written, never a part."""
    path = tmp_path / "queue" / "base.jsonl"
    versions = [[queue_item(f"v{v}-{i}", response="r" * 20_000) for i in range(1 + v * 7)] for v in range(6)]
    write_jsonl_atomically(path, versions[0])
    lengths = {len(items) for items in versions}
    stop = threading.Event()
    failures: list[str] = []
    reads = [0]

    def rewrite(offset: int) -> None:
        for round_ in range(60):
            write_jsonl_atomically(path, versions[(round_ + offset) % len(versions)])

    def read() -> None:
        while not stop.is_set():
            try:
                queue = read_queue(path.parent)
            except ValueError as exc:
                failures.append(str(exc)[:200])
                continue
            version = queue[0]["review_key"].split("-")[0] if queue else "none"
            if len(queue) not in lengths or any(not item["review_key"].startswith(version + "-") for item in queue):
                failures.append(f"a part of a queue: {len(queue)} items")
            reads[0] += 1

    server = serve(path.parent, tmp_path / "decisions.jsonl", port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def read_page() -> None:
        while not stop.is_set():
            status, body = get(base + "/api/queue")
            if status != 200 or len(json.loads(body)) not in lengths:
                failures.append(f"page: {status} {body[:200]}")

    writers = [threading.Thread(target=rewrite, args=(k,)) for k in range(3)]
    readers = [threading.Thread(target=read), threading.Thread(target=read_page)]
    try:
        for t in readers + writers:
            t.start()
        for t in writers:
            t.join()
    finally:
        stop.set()
        for t in readers:
            t.join()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert failures == [] and reads[0] > 20
    assert sorted(p.name for p in path.parent.iterdir()) == ["base.jsonl"]  # no temporary file left behind
    assert read_queue(path) in versions


# --- an access token beyond loopback ---------------------------------------------------------------------------------

TOKEN = "Zq8-uN3_vR5kT1wY7pL0sD4fG6hJ9cXb"


def test_beyond_loopback_needs_an_access_token():
    for host in ("0.0.0.0", "::", "192.0.2.10", "review.lan"):
        with pytest.raises(ValueError, match=f"beyond loopback, without an access token: set \\${ACCESS_TOKEN_ENV}"):
            check_access_token(host, None)
        check_access_token(host, TOKEN)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        check_access_token(host, None)
    for weak in ("short", "with space in it and long enough", "quote\"'<>;;;;;;;;;;;;;"):
        with pytest.raises(ValueError, match="at least 16 characters"):
            check_access_token("0.0.0.0", weak)


def run_review_server(tmp_path: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    queue = write_queue(tmp_path / "queue.jsonl", [queue_item("k1")])
    command = [sys.executable, "-m", "madef_assets.review.server", "--queue", str(queue)]
    return subprocess.Popen(
        [*command, "--decisions", str(tmp_path / "decisions.jsonl"), *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_binding_beyond_loopback_without_a_token_is_refused_before_binding(tmp_path, monkeypatch, capsys):
    env = {k: v for k, v in os.environ.items() if k != ACCESS_TOKEN_ENV}
    server = run_review_server(tmp_path, ["--host", "0.0.0.0", "--port", "0"], env)
    stdout, stderr = server.communicate(timeout=60)
    assert server.returncode == 2 and stdout == ""
    assert f"beyond loopback, without an access token: set ${ACCESS_TOKEN_ENV}" in stderr
    assert "Traceback" not in stderr
    monkeypatch.delenv(ACCESS_TOKEN_ENV, raising=False)
    monkeypatch.setenv("MADEF_STATE_DIR", str(tmp_path / "state"))
    assert main(["review", "--host", "0.0.0.0", "--port", "0", "--allowed-host", "review.lan"]) == 2
    assert "without an access token" in capsys.readouterr().err


def test_access_token_sign_in_cookie_and_bearer_and_the_log_never_shows_it(tmp_path):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = run_review_server(
        tmp_path,
        ["--host", "127.0.0.1", "--port", str(port), "--allowed-host", "Review.LAN"],
        {**os.environ, ACCESS_TOKEN_ENV: TOKEN},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                status, body = get(base + "/")
                break
            except OSError:
                time.sleep(0.1)
        assert status == 401 and "needs its access token" in body and TOKEN not in body
        assert get(base + "/?token=" + TOKEN[:-1] + "x")[0] == 401
        assert get(base + "/api/queue")[0] == 401
        request = urllib.request.Request(base + "/api/queue", headers={"Authorization": f"Bearer {TOKEN}"})
        with OPENER.open(request, timeout=10) as response:
            assert response.status == 200 and json.loads(response.read())[0]["review_key"] == "k1"
        bearer = ("Authorization", f"Bearer {TOKEN}")
        assert raw_request(base, "GET", "/api/queue", [("Host", f"review.lan:{port}"), bearer])[0] == 200
        assert raw_request(base, "GET", "/api/queue", [("Host", f"other.lan:{port}"), bearer])[0] == 421
        try:
            OPENER.open(base + f"/taxonomy?reviewer=ann&token={TOKEN}", timeout=10)
            pytest.fail("no redirect after signing in")
        except urllib.error.HTTPError as error:
            assert error.code == 303 and error.headers["Location"] == "/taxonomy?reviewer=ann"
            cookie = error.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        cookie_header = {"Cookie": cookie.split(";")[0]}
        stale = urllib.request.Request(base + f"/?token={TOKEN}", headers={"Cookie": "madef_review_access=old"})
        with pytest.raises(urllib.error.HTTPError) as error:
            OPENER.open(stale, timeout=10)
        assert error.value.code == 303 and error.value.headers["Set-Cookie"].startswith(cookie_header["Cookie"])
        with OPENER.open(urllib.request.Request(base + "/", headers=cookie_header), timeout=10) as response:
            page = response.read().decode()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        data = urllib.parse.urlencode({"csrf_token": csrf, "review_key": "k1", "decision": "safe", "reviewer": "a"})
        decide = urllib.request.Request(base + "/decide", data=data.encode(), method="POST")
        with pytest.raises(urllib.error.HTTPError) as error:
            OPENER.open(decide, timeout=10)
        assert error.value.code == 401 and not (tmp_path / "decisions.jsonl").exists()
        decide.add_header("Cookie", cookie_header["Cookie"])
        with pytest.raises(urllib.error.HTTPError) as error:
            OPENER.open(decide, timeout=10)
        assert error.value.code == 303 and (tmp_path / "decisions.jsonl").exists()
    finally:
        server.terminate()
        stdout, stderr = server.communicate(timeout=10)
    assert f"http://127.0.0.1:{port}/" in stdout and f"?token=<the value of ${ACCESS_TOKEN_ENV}>" in stdout
    assert "GET /taxonomy?reviewer=ann&token=<redacted>" in stderr
    assert TOKEN not in stdout + stderr and TOKEN[:8] not in stdout + stderr


# --- malformed requests, connection flood ---------------------------------------------------------------------------


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes and read everything the server answers until it closes (or 10 s pass)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


# headers arrive as Latin-1: '²', '³' and '¹' are the characters str.isdigit() admits and int() refuses
@pytest.mark.parametrize("length", ["\u00b2", "1\u00b3", "\u00b9", "+3", "-1", " 3 4", "0x10", "", "1" * 40])
def test_a_content_length_that_is_not_ascii_digits_is_a_400(review_server, length):
    base, _, decisions = review_server
    port = urllib.parse.urlsplit(base).port
    head = f"POST /decide HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    answer = raw_exchange(port, head.encode("latin-1") + b"ab")
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"Traceback" not in answer and not decisions.exists()
    assert get(base + "/api/queue")[0] == 200  # the server still answers


def test_two_content_length_headers_are_a_400(review_server):
    base, _, _ = review_server
    port = urllib.parse.urlsplit(base).port
    head = f"POST /decide HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nab"
    assert b" 400 " in raw_exchange(port, head.encode()).split(b"\r\n")[0]


@pytest.mark.parametrize("target", ["http://evil.example/", "http://127.0.0.1/api/queue", "HTTP://127.0.0.1/", "*"])
def test_a_request_target_that_is_not_a_path_is_a_400(review_server, target):
    base, _, _ = review_server
    port = urllib.parse.urlsplit(base).port
    for method in ("GET", "POST"):
        request = (
            f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        )
        answer = raw_exchange(port, request.encode())
        assert b" 400 " in answer.split(b"\r\n")[0], answer[:200]
        assert b"k1" not in answer and b"prompt" not in answer


def test_connections_over_the_cap_are_answered_503_and_the_server_recovers(tmp_path):
    queue = write_queue(tmp_path / "queue.jsonl", [queue_item("k1")])
    server = serve(queue, tmp_path / "decisions.jsonl", port=0, idle_timeout_s=5.0, max_connections=4)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    port = server.server_address[1]
    threads_before = threading.active_count()
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
    try:
        time.sleep(0.3)  # the four are accepted, each held by its thread
        extra = [raw_exchange(port, b"") for _ in range(20)]
        assert all(answer.startswith(b"HTTP/1.1 503") and b"too many connections" in answer for answer in extra)
        assert threading.active_count() <= threads_before + 4 + 4  # handlers (+ their deadline timers)
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while get(f"http://127.0.0.1:{port}/api/queue")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert get(f"http://127.0.0.1:{port}/api/queue")[0] == 200  # slots come back when connections end
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
