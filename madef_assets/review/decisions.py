"""The review queue and decisions files: read the queue, append decisions safely, fold them to the latest per key.

The queue file is written by a Dagster asset; the decisions file is append-only and written only by the review page
(or by hand), so the latest line for a review_key is the decision that counts.
"""

import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

QUEUE_FIELDS = (
    "review_key",
    "benchmark",
    "candidate",
    "category",
    "prompt",
    "response",
    "judge_label",
    "judge_reason",
    "allowed_decisions",
)
# The taxonomy queue (label_taxonomy): raw intent labels the taxonomy file leaves proposed or unmapped.
TAXONOMY_QUEUE_FIELDS = ("review_key", "label", "count", "status", "proposed", "similarity", "allowed_decisions")
DECISION_FIELDS = ("review_key", "decision", "reviewer", "note", "decided_at")


def _numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, raw line) for each non-blank line of a file."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


def _parse_object(line: bytes) -> dict:
    """Parse one JSONL line into a dict, raising ValueError with a short reason otherwise."""
    try:
        value = json.loads(line)  # bytes: undecodable UTF-8 raises UnicodeDecodeError, also a ValueError
    except ValueError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def _check_queue_item(item: dict, fields: tuple[str, ...]) -> None:
    """Raise ValueError when a queue item lacks a field or has an unusable key or decision list."""
    missing = [field for field in fields if field not in item]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    if not isinstance(item["review_key"], str) or not item["review_key"]:
        raise ValueError("review_key must be a non-empty string")
    allowed = item["allowed_decisions"]
    if not isinstance(allowed, list) or not allowed or not all(isinstance(d, str) and d for d in allowed):
        raise ValueError("allowed_decisions must be a non-empty list of non-empty strings")


def read_queue(path: str | os.PathLike, fields: tuple[str, ...] = QUEUE_FIELDS) -> list[dict]:
    """Read the review queue, in file order: a JSONL file, or a folder of them (one per candidate, read in
    name order); a missing file or folder is an empty queue.

    Raises ValueError naming ``file:line`` for a line that is not a JSON object with every one of ``fields``,
    or that repeats an earlier review_key: the asset owns these files, so a bad line is a bug to surface.
    """
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path] if path.exists() else []
    items: list[dict] = []
    seen: set[str] = set()
    for file in files:
        for number, line in _numbered_lines(file):
            try:
                item = _parse_object(line)
                _check_queue_item(item, fields)
                if item["review_key"] in seen:
                    raise ValueError(f"duplicate review_key {item['review_key']!r}")
            except ValueError as exc:
                raise ValueError(f"{file}:{number}: {exc}") from None
            seen.add(item["review_key"])
            items.append(item)
    return items


def write_jsonl_atomically(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Replace ``path`` with one JSON line per record, atomically: the lines go to a temporary file in the same
    folder (named ``.<name>.*.tmp``, so a folder read as ``*.jsonl`` never picks it up), are fsynced, and the file
    is renamed over ``path``. A reader (the review page) sees the old queue or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode("utf-8")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with open(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it 0600; the queue is no secret and was 0644 before
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)  # the rename itself survives a crash
    finally:
        os.close(folder)


def append_decision(
    path: str | os.PathLike,
    review_key: str,
    decision: str,
    reviewer: str,
    note: str = "",
    allowed: Iterable[str] | None = None,
) -> dict:
    """Validate a decision and append it as one line to the decisions file; return the record written.

    Raises ValueError for an empty review_key, reviewer or decision, or a decision outside ``allowed`` (when given).
    The line is written under an exclusive ``flock`` and fsynced, so concurrent writers (threads or processes)
    never interleave and a decision acknowledged to the reviewer survives a crash.
    """
    review_key, decision, reviewer = review_key.strip(), decision.strip(), reviewer.strip()
    if not review_key:
        raise ValueError("review_key is empty")
    if not reviewer:
        raise ValueError("reviewer is empty")
    if not decision:
        raise ValueError("decision is empty")
    if allowed is not None:
        allowed = list(allowed)
        if decision not in allowed:
            raise ValueError(f"decision {decision!r} is not one of {allowed}")
    record = {
        "review_key": review_key,
        "decision": decision,
        "reviewer": reviewer,
        "note": note.strip(),
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        # A hand-edited file may lack its final newline; without one this record would be glued onto that line.
        size = handle.seek(0, os.SEEK_END)
        if size:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                line = b"\n" + line
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    return record


def latest_decisions(path: str | os.PathLike) -> tuple[dict[str, dict], list[str]]:
    """Fold the decisions file to the latest record per review_key (file order wins, not decided_at).

    Returns ``(latest, problems)``: ``problems`` lists each malformed line as ``"file:line: reason"``; such lines
    are skipped but always reported. A missing file gives no decisions and no problems.
    """
    path = Path(path)
    latest: dict[str, dict] = {}
    problems: list[str] = []
    if not path.exists():
        return latest, problems
    for number, line in _numbered_lines(path):
        try:
            record = _parse_object(line)
            for field in ("review_key", "decision"):
                if not isinstance(record.get(field), str) or not record[field]:
                    raise ValueError(f"{field} must be a non-empty string")
        except ValueError as exc:
            problems.append(f"{path}:{number}: {exc}")
            continue
        latest[record["review_key"]] = record
    return latest, problems
