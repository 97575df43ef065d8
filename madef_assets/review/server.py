"""A small local web page for reviewing the LLM-judge queue and recording decisions (stdlib only).

Run ``python -m madef_assets.review.server --queue QUEUE.jsonl --decisions DECISIONS.jsonl`` and open the printed URL.
Both files are re-read on every request, so the page follows a re-run of the queue asset without a restart.
A second section, ``/taxonomy``, serves the taxonomy queue (raw intent labels the taxonomy file leaves proposed
or unmapped, written by label_taxonomy) and its own decisions file, the same way.

Other web pages open in the reviewer's browser must not read the queue or record decisions: the server answers
only requests whose Host header names it (``127.0.0.1:<port>``, ``localhost:<port>``, ``[::1]:<port>``, the bound
address, or a name given with ``--allowed-host``), which defeats DNS rebinding; every form carries a per-server
random token that each POST must return, and a POST whose Origin or Referer names another site is refused. A slow
client is dropped after a bounded time. Bound beyond loopback, the page also needs an access token from
``$MADEF_REVIEW_TOKEN`` (sent once as ``?token=``, then kept in a cookie, or as ``Authorization: Bearer``).
"""

import argparse
import hmac
import html
import ipaddress
import json
import os
import re
import secrets
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from madef_assets.review.decisions import (
    QUEUE_FIELDS,
    TAXONOMY_QUEUE_FIELDS,
    append_decision,
    latest_decisions,
    read_queue,
)

MAX_FORM_BYTES = 1 << 20
ACCESS_TOKEN_ENV = "MADEF_REVIEW_TOKEN"
MIN_ACCESS_TOKEN_CHARS = 16
ACCESS_COOKIE = "madef_review_access"
CSRF_FIELD = "csrf_token"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
# Seconds a connection may sit without sending anything, and the most one request may take in all (a client
# sending a byte at a time keeps within the first, not the second).
IDLE_TIMEOUT_S = 10.0
REQUEST_DEADLINE_S = 30.0
# Connections handled at once (one thread each); one more is answered 503 and closed, so a flood of connections
# cannot start threads without bound. Each held connection ends by its request deadline at the latest.
MAX_CONNECTIONS = 32
_BUSY_TEXT = b"busy: too many connections; try again soon\n"
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nRetry-After: 5\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_TEXT), _BUSY_TEXT)
)
_CONTENT_LENGTH = re.compile(r"[0-9]{1,9}")

STYLE = """
body { font-family: "Noto Sans CJK SC", "Noto Sans", "DejaVu Sans", sans-serif; margin: 1.5rem; max-width: 60rem; }
.item { border: 1px solid #bbb; border-radius: 6px; padding: 0.8rem 1rem; margin: 1rem 0; }
.item.decided { background: #f3f7f3; }
.meta { color: #555; font-size: 0.9rem; }
pre { white-space: pre-wrap; word-break: break-word; background: #f6f6f6; padding: 0.5rem; margin: 0.3rem 0; }
.judge, .decision { margin: 0.4rem 0; }
.problems { color: #a00; }
form input[type=text] { margin-right: 0.8rem; }
button.decide { margin: 0.4rem 0.3rem 0 0; padding: 0.3rem 0.9rem; }
button.accept { font-weight: bold; }
.label { font-size: 1.2rem; }
"""


@dataclass(frozen=True)
class Section:
    """One queue the page serves: its files, the fields of its items, its routes and how an item renders."""

    title: str
    queue_path: Path
    decisions_path: Path
    fields: tuple[str, ...]
    page: str
    api: str
    decide: str
    render_item: Callable[[dict, dict | None, str, str, str], str]


def is_loopback(host: str) -> bool:
    """Whether a bind address reaches only this machine (a name other than localhost counts as beyond it)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_host_headers(bind_host: str, port: int, extra_hosts: Sequence[str] = ()) -> frozenset[str]:
    """The Host header values the server answers: each loopback name, the bound address (not a wildcard one)
    and each extra name, with the port (and without it on port 80, as browsers send it)."""
    names = set(LOOPBACK_NAMES) | {name.strip().lower() for name in extra_hosts if name.strip()}
    bare = bind_host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        address = None
    if address is None and bare:
        names.add(bare)
    elif address is not None and not address.is_unspecified:
        names.add(f"[{address.compressed}]" if address.version == 6 else address.compressed)
    with_port = {f"{name}:{port}" for name in names}
    return frozenset(with_port | (names if port == 80 else set()))


def same_site_url(url: str, allowed: frozenset[str]) -> bool:
    """Whether an Origin or Referer value is a page of this server (http, one of its allowed Host values)."""
    parts = urlsplit(url.strip())
    return parts.scheme == "http" and parts.netloc.lower() in allowed


def redact_tokens(text: str) -> str:
    """The text with the value of every ``token=`` / ``csrf_token=`` parameter blanked (for the request log)."""
    return re.sub(r"(token=)[^&\s\"']*", r"\1<redacted>", text)


def check_access_token(bind_host: str, access_token: str | None) -> None:
    """Raise ValueError when the page would serve beyond loopback without an access token, or the token is short."""
    if access_token is not None and not re.fullmatch(rf"[A-Za-z0-9._~-]{{{MIN_ACCESS_TOKEN_CHARS},}}", access_token):
        raise ValueError(
            f"${ACCESS_TOKEN_ENV} must be at least {MIN_ACCESS_TOKEN_CHARS} characters of A-Z a-z 0-9 . _ ~ - "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if access_token is None and not is_loopback(bind_host):
        raise ValueError(
            f"refusing to serve the review page on {bind_host!r}, beyond loopback, without an access token: "
            f"set ${ACCESS_TOKEN_ENV} (at least {MIN_ACCESS_TOKEN_CHARS} random characters) or bind 127.0.0.1"
        )


class ReviewServer(ThreadingHTTPServer):
    """A threading HTTP server that knows where each section's queue and decisions files are, which Host
    headers it answers, its form token and its optional access token."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        queue_path: Path,
        decisions_path: Path,
        taxonomy_queue_path: Path,
        taxonomy_decisions_path: Path,
        extra_hosts: Sequence[str] = (),
        access_token: str | None = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        request_deadline_s: float = REQUEST_DEADLINE_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        check_access_token(address[0], access_token)
        self._connection_slots = threading.BoundedSemaphore(max_connections)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, ReviewHandler)
        self.allowed_hosts = allowed_host_headers(address[0], self.server_address[1], extra_hosts)
        self.csrf_token = secrets.token_urlsafe(32)
        self.access_token = access_token
        self.idle_timeout_s = idle_timeout_s
        self.request_deadline_s = request_deadline_s
        self.sections = (
            Section(
                "madef review queue",
                queue_path,
                decisions_path,
                QUEUE_FIELDS,
                "/",
                "/api/queue",
                "/decide",
                _render_item,
            ),
            Section(
                "madef taxonomy queue",
                taxonomy_queue_path,
                taxonomy_decisions_path,
                TAXONOMY_QUEUE_FIELDS,
                "/taxonomy",
                "/api/taxonomy",
                "/taxonomy/decide",
                _render_label,
            ),
        )

    def process_request(self, request, client_address) -> None:
        """Start a thread for the connection if one of `max_connections` slots is free, else answer 503."""
        if not self._connection_slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(BUSY_RESPONSE)
            except OSError:
                pass  # the client went away
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connection_slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connection_slots.release()

    def handle_error(self, request, client_address) -> None:
        """One log line, not a traceback, for a client that went away (or was dropped at its deadline)."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            sys.stderr.write(f"{client_address[0]} - - connection ended: {error}\n")
            return
        super().handle_error(request, client_address)


def _escape(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _decision_line(decided: dict | None) -> str:
    if decided is None:
        return ""
    note = f" ({_escape(decided.get('note'))})" if decided.get("note") else ""
    return (
        f'<p class="decision">Decided: <b>{_escape(decided["decision"])}</b> by {_escape(decided.get("reviewer"))}'
        f" at {_escape(decided.get('decided_at'))}{note}</p>"
    )


def _button(decision: str, text: str, extra_class: str = "") -> str:
    return (
        f'<button type="submit" class="decide{extra_class}" name="decision" value="{_escape(decision)}" '
        f'data-decision="{_escape(decision)}">{_escape(text)}</button>'
    )


def _form(action: str, key: str, reviewer: str, buttons: str, csrf_token: str) -> str:
    return f"""<form method="post" action="{action}">
<input type="hidden" name="{CSRF_FIELD}" value="{_escape(csrf_token)}">
<input type="hidden" name="review_key" value="{key}">
<label>Reviewer <input type="text" name="reviewer" class="reviewer" value="{_escape(reviewer)}" required></label>
<label>Note <input type="text" name="note" class="note"></label><br>
{buttons}
</form>"""


def _render_item(item: dict, decided: dict | None, reviewer: str, action: str, csrf_token: str) -> str:
    """One queue item: what was asked and answered, the judge's view, any decision, and the decision form."""
    key = _escape(item["review_key"])
    judge_reason = f" — {_escape(item['judge_reason'])}" if item["judge_reason"] else ""
    decision_line = _decision_line(decided)
    buttons = "".join(_button(d, d) for d in item["allowed_decisions"])
    return f"""<div class="item{" decided" if decided is not None else ""}" id="item-{key}">
<div class="meta">{_escape(item["benchmark"])} · {_escape(item["candidate"])} · {_escape(item["category"])}
 · <code>{key}</code></div>
<div>Prompt</div><pre class="prompt">{_escape(item["prompt"])}</pre>
<div>Response</div><pre class="response">{_escape(item["response"])}</pre>
<p class="judge">Judge: <b>{_escape(item["judge_label"] or "no label")}</b>{judge_reason}</p>
{decision_line}
{_form(action, key, reviewer, buttons, csrf_token)}
</div>"""


def _render_label(item: dict, decided: dict | None, reviewer: str, action: str, csrf_token: str) -> str:
    """One raw intent label: how often the labeler wrote it, the proposed category (nearest reviewed label),
    any decision, and buttons to accept the proposal, pick one of the categories or ignore the label."""
    key = _escape(item["review_key"])
    similarity = f" (similarity {_escape(item['similarity'])})" if item["similarity"] is not None else ""
    proposal = (
        f"Proposed: <b>{_escape(item['proposed'])}</b>{similarity}" if item["proposed"] else f"No proposal{similarity}"
    )
    if item.get("choice"):  # the labeler's choice (label_taxonomy): unsure, so a person decides
        confidence = item.get("choice_confidence")
        sure = f"confidence {confidence:.2f}" if isinstance(confidence, int | float) else "no confidence"
        proposal += f" · labeler's choice <b>{_escape(item['choice'])}</b> ({sure})"
    accept = _button(item["proposed"], f"accept {item['proposed']}", " accept") if item["proposed"] else ""
    buttons = accept + "".join(_button(d, d) for d in item["allowed_decisions"])
    return f"""<div class="item{" decided" if decided is not None else ""}" id="item-{key}">
<div class="meta">{_escape(item["status"])} · {_escape(item["count"])} label(s) · <code>{key}</code></div>
<p class="label">{_escape(item["label"])}</p>
<p class="proposal">{proposal}</p>
{_decision_line(decided)}
{_form(action, key, reviewer, buttons, csrf_token)}
</div>"""


def render_page(
    queue: list[dict],
    latest: dict[str, dict],
    problems: list[str],
    reviewer: str,
    show_all: bool,
    section: Section,
    csrf_token: str,
) -> str:
    """A section's page: pending items (or all of them), the pending count, decisions-file problems, and links
    to every section; each item's form carries the server's form token."""
    pending = [item for item in queue if item["review_key"] not in latest]
    shown = queue if show_all else pending
    toggle_query = urlencode({"reviewer": reviewer} | ({} if show_all else {"all": "1"}))
    toggle = f'<a href="{section.page}?{_escape(toggle_query)}">{"show pending only" if show_all else "show all"}</a>'
    who = _escape(urlencode({"reviewer": reviewer}))
    nav = f'<p class="nav"><a href="/?{who}">judge queue</a> · <a href="/taxonomy?{who}">taxonomy queue</a></p>'
    problem_list = ""
    if problems:
        problem_list = (
            '<div class="problems"><p>Malformed lines in the decisions file (ignored):</p><ul>'
            + "".join(f"<li>{_escape(p)}</li>" for p in problems)
            + "</ul></div>"
        )
    items = "\n".join(
        section.render_item(item, latest.get(item["review_key"]), reviewer, section.decide, csrf_token)
        for item in shown
    )
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{section.title}</title><style>{STYLE}</style></head>
<body>
<h1>{section.title}</h1>
{nav}
<p><span id="pending-count">{len(pending)}</span> pending of {len(queue)} · {toggle}</p>
{problem_list}
{items or '<p id="empty">Nothing to review.</p>'}
</body>
</html>
"""


class ReviewHandler(BaseHTTPRequestHandler):
    """Serves each section's page and JSON queue, and records decisions posted from the pages. Every request
    passes the Host check (and the access token, when one is set) first; a POST also the form token."""

    server: ReviewServer

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout_s  # per read: a client that sends nothing is dropped
        super().setup()
        self._dropped = False
        # The idle timeout restarts with every byte; this bounds the whole request however slowly it arrives.
        self._deadline = threading.Timer(self.server.request_deadline_s, self._drop_connection)
        self._deadline.daemon = True
        self._deadline.start()

    def _drop_connection(self) -> None:
        self._dropped = True
        self.close_connection = True
        self.log_message("dropped: the request was not complete within %.0f s", self.server.request_deadline_s)
        try:
            self.connection.shutdown(socket.SHUT_RDWR)  # wakes the read blocked on this socket
        except OSError:
            pass  # already closed

    def finish(self) -> None:
        self._deadline.cancel()
        try:
            super().finish()
        except OSError:
            pass  # the client went away (or was dropped) before its answer was flushed

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        sys.stderr.write(
            f"{self.address_string()} - - [{self.log_date_time_string()}] {redact_tokens(format % args)}\n"
        )

    def _send(self, status: HTTPStatus, body: str, content_type: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        # No script, no framing (clickjacking), forms post only to this server.
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, message + "\n", "text/plain", headers)

    def _admitted(self) -> bool:
        """Whether to act on this request: it came whole before its deadline, names this server as its Host and
        presents the access token when one is set (each refusal already answered)."""
        return not self._dropped and self._target_allowed() and self._host_allowed() and self._access_allowed()

    def _target_allowed(self) -> bool:
        """Answer 400 unless the request target is a path (`/...`): an absolute URL (`GET http://other/`) names
        some other server, whatever its path says (a leading `//` is already collapsed to `/` by the base class)."""
        if self.path.startswith("/"):
            return True
        self._send_text(HTTPStatus.BAD_REQUEST, "refused: the request target must be a path starting with /")
        return False

    def _host_allowed(self) -> bool:
        """Answer 421 unless the request carries exactly one Host header naming this server: a page that
        rebinds its own name to 127.0.0.1 still sends that name."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) == 1 and hosts[0].strip().lower() in self.server.allowed_hosts:
            return True
        shown = ", ".join(repr(h) for h in hosts) or "none"
        allowed = ", ".join(sorted(self.server.allowed_hosts))
        self._send_text(
            HTTPStatus.MISDIRECTED_REQUEST,
            f"Host header {shown} refused: this review server answers only {allowed} "
            "(start it with --allowed-host NAME to add a name)",
        )
        return False

    def _presented_access_token(self, query: dict[str, list[str]]) -> tuple[str, str]:
        """(where, token) of the access token this request presents, or ("", "")."""
        authorization = self.headers.get("Authorization") or ""
        if authorization.startswith("Bearer "):
            return "header", authorization.removeprefix("Bearer ").strip()
        if "token" in query:  # before the cookie, so signing in again replaces a stale one
            return "query", query["token"][0]
        try:
            cookie = SimpleCookie(self.headers.get("Cookie") or "").get(ACCESS_COOKIE)
        except CookieError:
            cookie = None
        return ("cookie", cookie.value) if cookie is not None else ("", "")

    def _access_allowed(self) -> bool:
        """With an access token set: pass a request that presents it; a GET presenting it as ``?token=`` is
        redirected to the same page without it, with the token in an HttpOnly cookie. Otherwise answer 401."""
        expected = self.server.access_token
        if expected is None:
            return True
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        where, token = self._presented_access_token(query)
        if not hmac.compare_digest(token.encode(), expected.encode()):
            self._send_text(
                HTTPStatus.UNAUTHORIZED,
                f"this review page needs its access token: open /?token=<the value of ${ACCESS_TOKEN_ENV}> once "
                "(a cookie keeps it), or send it as 'Authorization: Bearer <token>'",
            )
            return False
        if where == "query" and self.command == "GET":
            rest = urlencode([(k, v) for k, values in query.items() if k != "token" for v in values])
            self._send_text(
                HTTPStatus.SEE_OTHER,
                "signed in",
                {
                    "Location": url.path + (f"?{rest}" if rest else ""),
                    "Set-Cookie": f"{ACCESS_COOKIE}={expected}; HttpOnly; SameSite=Strict; Path=/",
                },
            )
            return False
        return True

    def _post_allowed(self, form: dict[str, list[str]]) -> bool:
        """A POST must return the server's form token and, when it names its Origin or Referer, come from a page
        of this server; answer 403 otherwise."""
        for header in ("Origin", "Referer"):
            value = self.headers.get(header)
            if value is not None and not same_site_url(value, self.server.allowed_hosts):
                self._send_text(HTTPStatus.FORBIDDEN, f"cross-site post refused: {header} is {value!r}")
                return False
        token = form.get(CSRF_FIELD, [""])[0]
        if not hmac.compare_digest(token.encode(), self.server.csrf_token.encode()):
            self._send_text(
                HTTPStatus.FORBIDDEN,
                f"post refused: it lacks this server's form token ({CSRF_FIELD}); reload the page and decide again",
            )
            return False
        return True

    def _load(self, section: Section) -> tuple[list[dict], dict[str, dict], list[str]] | None:
        """Read a section's two files; on a broken queue file answer 500 and return None."""
        try:
            queue = read_queue(section.queue_path, section.fields)
        except ValueError as exc:
            self._send_text(HTTPStatus.INTERNAL_SERVER_ERROR, f"cannot read the review queue: {exc}")
            return None
        latest, problems = latest_decisions(section.decisions_path)
        return queue, latest, problems

    def do_GET(self) -> None:
        """``/`` and ``/taxonomy``: a section's page; ``/api/queue`` and ``/api/taxonomy``: every item of its queue
        with its latest decision record (or null)."""
        if not self._admitted():
            return
        url = urlsplit(self.path)
        section = next((s for s in self.server.sections if url.path in (s.page, s.api)), None)
        if section is None:
            self._send_text(HTTPStatus.NOT_FOUND, f"no page {url.path}")
            return
        loaded = self._load(section)
        if loaded is None:
            return
        queue, latest, problems = loaded
        if url.path == section.api:
            body = json.dumps(
                [item | {"decision": latest.get(item["review_key"])} for item in queue], ensure_ascii=False
            )
            self._send(HTTPStatus.OK, body, "application/json")
            return
        query = parse_qs(url.query)
        reviewer = query.get("reviewer", [""])[0]
        show_all = query.get("all", ["0"])[0] == "1"
        page = render_page(queue, latest, problems, reviewer, show_all, section, self.server.csrf_token)
        self._send(HTTPStatus.OK, page, "text/html")

    def do_POST(self) -> None:
        """``/decide`` and ``/taxonomy/decide``: append the posted decision to the section's decisions file and
        redirect back to its page, keeping the reviewer name."""
        if not self._admitted():
            return
        section = next((s for s in self.server.sections if urlsplit(self.path).path == s.decide), None)
        if section is None:
            self._send_text(HTTPStatus.NOT_FOUND, f"no page {self.path}")
            return
        length_headers = self.headers.get_all("Content-Length") or ["0"]
        length_header = length_headers[0].strip()
        # ASCII digits only: str.isdigit() also admits '²' and other digits int() refuses
        if len(length_headers) != 1 or not _CONTENT_LENGTH.fullmatch(length_header):
            self._send_text(HTTPStatus.BAD_REQUEST, "bad Content-Length")
            return
        length = int(length_header)
        if length > MAX_FORM_BYTES:
            self._send_text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "form too large")
            return
        body = self.rfile.read(length)
        if len(body) != length or self._dropped:
            self._send_text(HTTPStatus.BAD_REQUEST, "incomplete form: the connection ended before its end")
            return
        form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        if not self._post_allowed(form):
            return
        field = {name: form.get(name, [""])[0] for name in ("review_key", "decision", "reviewer", "note")}
        loaded = self._load(section)
        if loaded is None:
            return
        item = next((i for i in loaded[0] if i["review_key"] == field["review_key"]), None)
        if item is None:
            self._send_text(HTTPStatus.NOT_FOUND, f"review_key {field['review_key']!r} is not in the queue")
            return
        try:
            append_decision(
                section.decisions_path,
                field["review_key"],
                field["decision"],
                field["reviewer"],
                field["note"],
                allowed=item["allowed_decisions"],
            )
        except ValueError as exc:
            self._send_text(HTTPStatus.BAD_REQUEST, f"decision not recorded: {exc}")
            return
        location = f"{section.page}?" + urlencode({"reviewer": field["reviewer"].strip()})
        self._send(HTTPStatus.SEE_OTHER, f"recorded; see {location}\n", "text/plain", {"Location": location})


def serve(
    queue_path: str | os.PathLike,
    decisions_path: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8765,
    taxonomy_queue_path: str | os.PathLike | None = None,
    taxonomy_decisions_path: str | os.PathLike | None = None,
    extra_hosts: Sequence[str] = (),
    access_token: str | None = None,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    request_deadline_s: float = REQUEST_DEADLINE_S,
    max_connections: int = MAX_CONNECTIONS,
) -> ReviewServer:
    """Build (bind, not start) the review server; call ``serve_forever()`` on the result. Port 0 picks a free port.
    The taxonomy files default to taxonomy_queue.jsonl and taxonomy_decisions.jsonl next to the decisions file
    (label_taxonomy's layout in <review_dir>). Raises ValueError for a bind address beyond loopback without an
    access token."""
    decisions_path = Path(decisions_path)
    return ReviewServer(
        (host, port),
        Path(queue_path),
        decisions_path,
        Path(taxonomy_queue_path or decisions_path.parent / "taxonomy_queue.jsonl"),
        Path(taxonomy_decisions_path or decisions_path.parent / "taxonomy_decisions.jsonl"),
        extra_hosts,
        access_token,
        idle_timeout_s,
        request_deadline_s,
        max_connections,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: serve the review page until interrupted; 2 when it refuses to start."""
    parser = argparse.ArgumentParser(
        prog="python -m madef_assets.review.server",
        description="Review LLM-judge results and raw intent labels that need a human decision.",
    )
    parser.add_argument(
        "--queue",
        required=True,
        help="review queue: a JSONL file or a folder of them (the review_queue asset writes "
        "<review_dir>/queue/<candidate>.jsonl)",
    )
    parser.add_argument("--decisions", required=True, help="append-only decisions JSONL this page writes")
    parser.add_argument(
        "--taxonomy-queue",
        help="taxonomy queue JSONL (label_taxonomy writes "
        "<review_dir>/taxonomy_queue.jsonl; default: next to --decisions)",
    )
    parser.add_argument(
        "--taxonomy-decisions",
        help="append-only taxonomy decisions JSONL this page writes "
        "(default: taxonomy_decisions.jsonl next to --decisions)",
    )
    add_network_arguments(parser)
    args = parser.parse_args(argv)
    access_token = os.environ.get(ACCESS_TOKEN_ENV) or None
    try:
        server = serve(
            args.queue,
            args.decisions,
            args.host,
            args.port,
            args.taxonomy_queue,
            args.taxonomy_decisions,
            args.allowed_host,
            access_token,
        )
    except (ValueError, OSError) as exc:
        print(f"madef review: {exc}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    url_host = f"[{host}]" if ":" in host else host
    sign_in = f" — open it once with ?token=<the value of ${ACCESS_TOKEN_ENV}>" if access_token else ""
    print(
        f"madef review queue: http://{url_host}:{port}/ (taxonomy queue: http://{url_host}:{port}/taxonomy){sign_in}",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    """--host, --port and --allowed-host (shared with `madef review`)."""
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help=f"address to bind (default: loopback only; any other needs ${ACCESS_TOKEN_ENV})",
    )
    parser.add_argument("--port", type=int, default=8765, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a further host name the page may be reached by (its Host header), e.g. a LAN name; repeatable",
    )


if __name__ == "__main__":
    sys.exit(main())
