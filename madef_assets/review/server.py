"""A small local web page for reviewing the LLM-judge queue and recording decisions (stdlib only).

Run ``python -m madef_assets.review.server --queue QUEUE.jsonl --decisions DECISIONS.jsonl`` and open the printed URL.
Both files are re-read on every request, so the page follows a re-run of the queue asset without a restart.
"""

import argparse
import html
import json
import os
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from madef_assets.review.decisions import append_decision, latest_decisions, read_queue

MAX_FORM_BYTES = 1 << 20

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
"""


class ReviewServer(ThreadingHTTPServer):
    """A threading HTTP server that knows where the queue and decisions files are."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], queue_path: Path, decisions_path: Path) -> None:
        super().__init__(address, ReviewHandler)
        self.queue_path = queue_path
        self.decisions_path = decisions_path


def _escape(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _render_item(item: dict, decided: dict | None, reviewer: str) -> str:
    """One queue item: what was asked and answered, the judge's view, any decision, and the decision form."""
    key = _escape(item["review_key"])
    judge_reason = f" — {_escape(item['judge_reason'])}" if item["judge_reason"] else ""
    decision_line = ""
    if decided is not None:
        note = f" ({_escape(decided.get('note'))})" if decided.get("note") else ""
        decision_line = (
            f'<p class="decision">Decided: <b>{_escape(decided["decision"])}</b> by {_escape(decided.get("reviewer"))}'
            f" at {_escape(decided.get('decided_at'))}{note}</p>"
        )
    buttons = "".join(
        f'<button type="submit" class="decide" name="decision" value="{_escape(d)}" data-decision="{_escape(d)}">'
        f"{_escape(d)}</button>"
        for d in item["allowed_decisions"]
    )
    return f"""<div class="item{' decided' if decided is not None else ''}" id="item-{key}">
<div class="meta">{_escape(item['benchmark'])} · {_escape(item['candidate'])} · {_escape(item['category'])}
 · <code>{key}</code></div>
<div>Prompt</div><pre class="prompt">{_escape(item['prompt'])}</pre>
<div>Response</div><pre class="response">{_escape(item['response'])}</pre>
<p class="judge">Judge: <b>{_escape(item['judge_label'] or 'no label')}</b>{judge_reason}</p>
{decision_line}
<form method="post" action="/decide">
<input type="hidden" name="review_key" value="{key}">
<label>Reviewer <input type="text" name="reviewer" class="reviewer" value="{_escape(reviewer)}" required></label>
<label>Note <input type="text" name="note" class="note"></label><br>
{buttons}
</form>
</div>"""


def render_page(queue: list[dict], latest: dict[str, dict], problems: list[str], reviewer: str, show_all: bool) -> str:
    """The whole review page: pending items (or all of them), the pending count, and decisions-file problems."""
    pending = [item for item in queue if item["review_key"] not in latest]
    shown = queue if show_all else pending
    toggle_query = urlencode({"reviewer": reviewer} | ({} if show_all else {"all": "1"}))
    toggle = f'<a href="/?{_escape(toggle_query)}">{"show pending only" if show_all else "show all"}</a>'
    problem_list = ""
    if problems:
        problem_list = ('<div class="problems"><p>Malformed lines in the decisions file (ignored):</p><ul>'
                        + "".join(f"<li>{_escape(p)}</li>" for p in problems) + "</ul></div>")
    items = "\n".join(_render_item(item, latest.get(item["review_key"]), reviewer) for item in shown)
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>madef review queue</title><style>{STYLE}</style></head>
<body>
<h1>madef review queue</h1>
<p><span id="pending-count">{len(pending)}</span> pending of {len(queue)} · {toggle}</p>
{problem_list}
{items or '<p id="empty">Nothing to review.</p>'}
</body>
</html>
"""


class ReviewHandler(BaseHTTPRequestHandler):
    """Serves the review page, the JSON queue, and records decisions posted from the page."""

    server: ReviewServer

    def _send(self, status: HTTPStatus, body: str, content_type: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, status: HTTPStatus, message: str) -> None:
        self._send(status, message + "\n", "text/plain")

    def _load(self) -> tuple[list[dict], dict[str, dict], list[str]] | None:
        """Read both files; on a broken queue file answer 500 and return None."""
        try:
            queue = read_queue(self.server.queue_path)
        except ValueError as exc:
            self._send_text(HTTPStatus.INTERNAL_SERVER_ERROR, f"cannot read the review queue: {exc}")
            return None
        latest, problems = latest_decisions(self.server.decisions_path)
        return queue, latest, problems

    def do_GET(self) -> None:
        """``/``: the review page; ``/api/queue``: every queue item with its latest decision record (or null)."""
        url = urlsplit(self.path)
        if url.path not in ("/", "/api/queue"):
            self._send_text(HTTPStatus.NOT_FOUND, f"no page {url.path}")
            return
        loaded = self._load()
        if loaded is None:
            return
        queue, latest, problems = loaded
        if url.path == "/api/queue":
            body = json.dumps([item | {"decision": latest.get(item["review_key"])} for item in queue],
                              ensure_ascii=False)
            self._send(HTTPStatus.OK, body, "application/json")
            return
        query = parse_qs(url.query)
        reviewer = query.get("reviewer", [""])[0]
        show_all = query.get("all", ["0"])[0] == "1"
        self._send(HTTPStatus.OK, render_page(queue, latest, problems, reviewer, show_all), "text/html")

    def do_POST(self) -> None:
        """``/decide``: append the posted decision and redirect back to the page, keeping the reviewer name."""
        if urlsplit(self.path).path != "/decide":
            self._send_text(HTTPStatus.NOT_FOUND, f"no page {self.path}")
            return
        # Another web site open in the reviewer's browser could otherwise post decisions to this loopback server.
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != self.headers.get("Host"):
            self._send_text(HTTPStatus.FORBIDDEN, f"cross-origin post from {origin} refused")
            return
        length_header = self.headers.get("Content-Length") or "0"
        if not length_header.isdigit():
            self._send_text(HTTPStatus.BAD_REQUEST, "bad Content-Length")
            return
        length = int(length_header)
        if length > MAX_FORM_BYTES:
            self._send_text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "form too large")
            return
        form = parse_qs(self.rfile.read(length).decode("utf-8", errors="replace"), keep_blank_values=True)
        field = {name: form.get(name, [""])[0] for name in ("review_key", "decision", "reviewer", "note")}
        loaded = self._load()
        if loaded is None:
            return
        item = next((i for i in loaded[0] if i["review_key"] == field["review_key"]), None)
        if item is None:
            self._send_text(HTTPStatus.NOT_FOUND, f"review_key {field['review_key']!r} is not in the queue")
            return
        try:
            append_decision(self.server.decisions_path, field["review_key"], field["decision"], field["reviewer"],
                            field["note"], allowed=item["allowed_decisions"])
        except ValueError as exc:
            self._send_text(HTTPStatus.BAD_REQUEST, f"decision not recorded: {exc}")
            return
        location = "/?" + urlencode({"reviewer": field["reviewer"].strip()})
        self._send(HTTPStatus.SEE_OTHER, f"recorded; see {location}\n", "text/plain", {"Location": location})


def serve(queue_path: str | os.PathLike, decisions_path: str | os.PathLike, host: str = "127.0.0.1",
          port: int = 8765) -> ThreadingHTTPServer:
    """Build (bind, not start) the review server; call ``serve_forever()`` on the result. Port 0 picks a free port."""
    return ReviewServer((host, port), Path(queue_path), Path(decisions_path))


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: serve the review page until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m madef_assets.review.server",
                                     description="Review LLM-judge results that need a human decision.")
    parser.add_argument("--queue", required=True, help="review queue: a JSONL file or a folder of them (the review_queue asset writes <review_dir>/queue/<candidate>.jsonl)")
    parser.add_argument("--decisions", required=True, help="append-only decisions JSONL this page writes")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind; 0 picks a free one")
    args = parser.parse_args(argv)
    server = serve(args.queue, args.decisions, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"madef review queue: http://{host}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
