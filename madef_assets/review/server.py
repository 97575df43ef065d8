"""A small local web page for reviewing the LLM-judge queue and recording decisions (stdlib only).

Run ``python -m madef_assets.review.server --queue QUEUE.jsonl --decisions DECISIONS.jsonl`` and open the printed URL.
Both files are re-read on every request, so the page follows a re-run of the queue asset without a restart.
A second section, ``/taxonomy``, serves the taxonomy queue (raw intent labels the taxonomy file leaves proposed
or unmapped, written by label_taxonomy) and its own decisions file, the same way.
"""

import argparse
import html
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
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
    render_item: Callable[[dict, dict | None, str, str], str]


class ReviewServer(ThreadingHTTPServer):
    """A threading HTTP server that knows where each section's queue and decisions files are."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        queue_path: Path,
        decisions_path: Path,
        taxonomy_queue_path: Path,
        taxonomy_decisions_path: Path,
    ) -> None:
        super().__init__(address, ReviewHandler)
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


def _form(action: str, key: str, reviewer: str, buttons: str) -> str:
    return f"""<form method="post" action="{action}">
<input type="hidden" name="review_key" value="{key}">
<label>Reviewer <input type="text" name="reviewer" class="reviewer" value="{_escape(reviewer)}" required></label>
<label>Note <input type="text" name="note" class="note"></label><br>
{buttons}
</form>"""


def _render_item(item: dict, decided: dict | None, reviewer: str, action: str) -> str:
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
{_form(action, key, reviewer, buttons)}
</div>"""


def _render_label(item: dict, decided: dict | None, reviewer: str, action: str) -> str:
    """One raw intent label: how often the labeler wrote it, the proposed category (nearest reviewed label),
    any decision, and buttons to accept the proposal, pick one of the categories or ignore the label."""
    key = _escape(item["review_key"])
    similarity = f" (similarity {_escape(item['similarity'])})" if item["similarity"] is not None else ""
    proposal = (
        f"Proposed: <b>{_escape(item['proposed'])}</b>{similarity}" if item["proposed"] else f"No proposal{similarity}"
    )
    accept = _button(item["proposed"], f"accept {item['proposed']}", " accept") if item["proposed"] else ""
    buttons = accept + "".join(_button(d, d) for d in item["allowed_decisions"])
    return f"""<div class="item{" decided" if decided is not None else ""}" id="item-{key}">
<div class="meta">{_escape(item["status"])} · {_escape(item["count"])} label(s) · <code>{key}</code></div>
<p class="label">{_escape(item["label"])}</p>
<p class="proposal">{proposal}</p>
{_decision_line(decided)}
{_form(action, key, reviewer, buttons)}
</div>"""


def render_page(
    queue: list[dict], latest: dict[str, dict], problems: list[str], reviewer: str, show_all: bool, section: Section
) -> str:
    """A section's page: pending items (or all of them), the pending count, decisions-file problems, and links
    to every section."""
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
        section.render_item(item, latest.get(item["review_key"]), reviewer, section.decide) for item in shown
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
    """Serves each section's page and JSON queue, and records decisions posted from the pages."""

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
        self._send(HTTPStatus.OK, render_page(queue, latest, problems, reviewer, show_all, section), "text/html")

    def do_POST(self) -> None:
        """``/decide`` and ``/taxonomy/decide``: append the posted decision to the section's decisions file and
        redirect back to its page, keeping the reviewer name."""
        section = next((s for s in self.server.sections if urlsplit(self.path).path == s.decide), None)
        if section is None:
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
) -> ThreadingHTTPServer:
    """Build (bind, not start) the review server; call ``serve_forever()`` on the result. Port 0 picks a free port.
    The taxonomy files default to taxonomy_queue.jsonl and taxonomy_decisions.jsonl next to the decisions file
    (label_taxonomy's layout in <review_dir>)."""
    decisions_path = Path(decisions_path)
    return ReviewServer(
        (host, port),
        Path(queue_path),
        decisions_path,
        Path(taxonomy_queue_path or decisions_path.parent / "taxonomy_queue.jsonl"),
        Path(taxonomy_decisions_path or decisions_path.parent / "taxonomy_decisions.jsonl"),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: serve the review page until interrupted."""
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
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind; 0 picks a free one")
    args = parser.parse_args(argv)
    server = serve(args.queue, args.decisions, args.host, args.port, args.taxonomy_queue, args.taxonomy_decisions)
    host, port = server.server_address[:2]
    print(f"madef review queue: http://{host}:{port}/ (taxonomy queue: http://{host}:{port}/taxonomy)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
