"""Low-level record iteration with locations: JSON, JSONL (also inside .zip), CSV, Parquet.

Every function yields `RawRecord`s carrying `file:line` so that quarantine rows point at the input.
A file that cannot be read at all (missing, empty, not JSON, not a zip archive, a JSON value of the
wrong shape as a whole) raises `SourceFileError`; a bad part of a readable file becomes a record with
an `error` and its location, and the rest is read:

* a record that is not a JSON object (`expected a JSON object, got a string`);
* in an object of arrays, a key whose value is not a list (location `file:line [key]`);
* a blank line (or a CSV row whose cells are all blank) between records (`blank line`); blank lines at
  the very end of a file are not rows: they hold nothing and separate nothing;
* a zip member that cannot be decompressed, or that is not `.jsonl` (documentation members such as
  README, LICENSE, *.txt, *.md and macOS resource forks are skipped).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
import zlib
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\r\n"
BLANK_LINE = "blank line"


class SourceFileError(ValueError):
    """A configured input file is missing, empty or unreadable as a whole."""

    def __init__(self, config_key: str, path: Path | str, problem: str):
        super().__init__(f"{config_key}: {path}: {problem}")


@dataclass
class RawRecord:
    location: str
    fields: dict[str, Any] | None = None
    error: str | None = None
    raw: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def describe(value: Any) -> str:
    """A JSON value's type in words, with its article: 'a JSON object', 'a string', 'null'."""
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null" if value is None else f"a {type(value).__name__}"


def _excerpt(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)[:2000]


def read_bytes(path: Path, config_key: str) -> bytes:
    if not path.exists():
        raise SourceFileError(config_key, path, "file does not exist")
    if path.is_dir():
        raise SourceFileError(config_key, path, "is a folder, expected a file")
    data = path.read_bytes()
    if not data.strip(b" \t\r\n\xef\xbb\xbf"):
        raise SourceFileError(config_key, path, "file is empty")
    return data


def _line_of(pos: int, line_starts: list[int]) -> int:
    return bisect_right(line_starts, pos)


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _parse_array(text: str, pos: int) -> tuple[list[tuple[int, Any]], int]:
    """Items (offset, value) of the JSON array at text[pos] == '[', and the offset after it."""
    items: list[tuple[int, Any]] = []
    pos = _skip(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        return items, pos + 1
    while True:
        pos = _skip(text, pos)
        value, end = _DECODER.raw_decode(text, pos)
        items.append((pos, value))
        pos = _skip(text, end)
        if pos >= len(text):
            raise json.JSONDecodeError("unterminated array", text, pos)
        if text[pos] == "]":
            return items, pos + 1
        if text[pos] != ",":
            raise json.JSONDecodeError("expected ',' or ']'", text, pos)
        pos += 1


def _json_record(location: str, value: Any, group: str) -> RawRecord:
    if not isinstance(value, dict):
        return RawRecord(location, error=f"expected a JSON object, got {describe(value)}", raw=_excerpt(value))
    return RawRecord(location, fields=value, raw=_excerpt(value), extra={"group": group})


def iter_json_records(path: Path, config_key: str, display: str | None = None) -> Iterator[RawRecord]:
    """Records of a JSON array, or of an object of arrays (`extra["group"]` = the key).

    In an object of arrays a key whose value is not a list becomes one error record located at
    `file:line [key]`. A `.json` file that holds JSON Lines (an object followed by more objects) is
    read as JSON Lines. Non-UTF-8 bytes are kept as lone surrogates so that the record holding them
    can be quarantined.
    """
    display = display or path.name
    text = read_bytes(path, config_key).decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    pos = _skip(text, 0)
    records: list[RawRecord] = []
    lists = 0
    other_keys: list[str] = []
    try:
        if text[pos] == "[":
            items, pos = _parse_array(text, pos)
            records = [_json_record(f"{display}:{_line_of(offset, line_starts)}", value, "") for offset, value in items]
            lists = 1
        elif text[pos] == "{":
            pos = _skip(text, pos + 1)
            while text[pos] != "}":
                key, pos = _DECODER.raw_decode(text, pos)
                if not isinstance(key, str):
                    raise json.JSONDecodeError("expected a string key", text, pos)
                pos = _skip(text, pos)
                if text[pos] != ":":
                    raise json.JSONDecodeError("expected ':'", text, pos)
                pos = _skip(text, pos + 1)
                if text[pos] == "[":
                    items, pos = _parse_array(text, pos)
                    records += [
                        _json_record(f"{display}:{_line_of(offset, line_starts)}", value, key)
                        for offset, value in items
                    ]
                    lists += 1
                else:
                    value, end = _DECODER.raw_decode(text, pos)
                    other_keys.append(key)
                    records.append(
                        RawRecord(
                            f"{display}:{_line_of(pos, line_starts)} [{key}]",
                            error=f"value of key {key!r} is {describe(value)}, expected a list of records",
                            raw=_excerpt(value),
                        )
                    )
                    pos = end
                pos = _skip(text, pos)
                if text[pos] == ",":
                    pos = _skip(text, pos + 1)
                elif text[pos] != "}":
                    raise json.JSONDecodeError("expected ',' or '}'", text, pos)
            pos = _skip(text, pos + 1)
            if pos < len(text) and text[pos] == "{":
                # JSON Lines saved as .json: one object per line
                yield from _jsonl_from_bytes(text.encode("utf-8", errors="surrogateescape"), display)
                return
        else:
            value, _ = _DECODER.raw_decode(text, pos)
            raise SourceFileError(
                config_key, path, f"expected a JSON array of records or an object of arrays, got {describe(value)}"
            )
        pos = _skip(text, pos)
        if pos < len(text):
            raise json.JSONDecodeError(
                f"extra data after the JSON value at line {_line_of(pos, line_starts)}", text, pos
            )
    except (json.JSONDecodeError, IndexError) as exc:
        problem = exc.msg if isinstance(exc, json.JSONDecodeError) and exc.msg.startswith("extra data") else exc
        raise SourceFileError(config_key, path, f"not valid JSON: {problem}") from exc
    if records and not lists:
        keys = ", ".join(repr(k) for k in other_keys[:5])
        raise SourceFileError(
            config_key,
            path,
            f"expected a JSON array of records or an object of arrays; this object has no list values (keys: {keys})",
        )
    if not records:
        raise SourceFileError(config_key, path, "the JSON holds no records")
    yield from records


def _blank_aware(items: Iterator[tuple[str, bool, Any]]) -> Iterator[tuple[str, bool, Any]]:
    """Hold (location, blank, item) triples that are blank until a non-blank one follows: blank lines
    between records come through, blank lines at the end of the file do not."""
    pending: list[tuple[str, bool, Any]] = []
    for item in items:
        if item[1]:
            pending.append(item)
            continue
        yield from pending
        pending.clear()
        yield item


def _iter_lines(data: bytes, display: str) -> Iterator[tuple[str, str, str]]:
    """Yield (location, line, error) for the lines of a byte string, up to the last non-blank one.

    A blank line comes back with the error `blank line`; a line that is not UTF-8 comes back decoded
    with replacement characters and an error.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]

    def lines() -> Iterator[tuple[str, bool, bytes]]:
        for number, raw_line in enumerate(data.split(b"\n"), start=1):
            raw_line = raw_line.rstrip(b"\r")
            yield f"{display}:{number}", not raw_line.strip(), raw_line

    for location, blank, raw_line in _blank_aware(lines()):
        if blank:
            yield location, raw_line.decode("utf-8", errors="replace"), BLANK_LINE
            continue
        try:
            yield location, raw_line.decode("utf-8"), ""
        except UnicodeDecodeError as exc:
            yield (
                location,
                raw_line.decode("utf-8", errors="replace"),
                f"non-UTF-8 bytes at byte {exc.start} of the line",
            )


_DOCUMENTATION = ("readme", "license", "licence", "copying", "notice")
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, OSError)


def _is_documentation(member: str) -> bool:
    name = PurePosixPath(member).name.lower()
    return name.startswith(".") or name.startswith(_DOCUMENTATION) or name.endswith((".txt", ".md"))


def iter_jsonl_records(path: Path, config_key: str) -> Iterator[RawRecord]:
    """JSON Lines, or every *.jsonl member of a .zip archive.

    A member that cannot be decompressed is one error record (`archive.zip!member`), as is a member
    that is not .jsonl (documentation members and macOS resource forks are skipped).
    """
    if path.suffix != ".zip":
        yield from _jsonl_from_bytes(read_bytes(path, config_key), path.name)
        return
    read_bytes(path, config_key)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SourceFileError(config_key, path, f"not a zip archive ({exc})") from exc
    with archive:
        members = [
            info for info in archive.infolist() if not info.is_dir() and not info.filename.startswith("__MACOSX/")
        ]
        if not any(info.filename.endswith(".jsonl") for info in members):
            raise SourceFileError(config_key, path, "zip archive holds no .jsonl file")
        for info in members:
            display = f"{path.name}!{info.filename}"
            if not info.filename.endswith(".jsonl"):
                if not _is_documentation(info.filename):
                    yield RawRecord(display, error="zip member is not a .jsonl file: not read", raw=info.filename)
                continue
            try:
                data = archive.read(info)
            except _ZIP_READ_ERRORS as exc:
                yield RawRecord(display, error=f"unreadable zip member: {exc}", raw=info.filename)
                continue
            yield from _jsonl_from_bytes(data, display)


def _jsonl_from_bytes(data: bytes, display: str) -> Iterator[RawRecord]:
    for location, line, error in _iter_lines(data, display):
        if error:
            yield RawRecord(location, error=error, raw=line)
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield RawRecord(location, error=f"invalid JSON: {exc.msg} at column {exc.colno}", raw=line)
            continue
        if not isinstance(value, dict):
            yield RawRecord(location, error=f"expected a JSON object, got {describe(value)}", raw=line)
            continue
        yield RawRecord(location, fields=value, raw=line)


def iter_csv_rows(path: Path, config_key: str, header: bool) -> Iterator[RawRecord]:
    """CSV rows as lists (headerless) or dicts (with header); BOM and CRLF handled.

    A row whose cells are all blank is an error record `blank line` (unless only blank rows follow it).
    """
    data = read_bytes(path, config_key)
    text = data.decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))

    def rows() -> Iterator[tuple[str, bool, list[str]]]:
        line = 1
        for row in reader:
            location = f"{path.name}:{line}"
            line = reader.line_num + 1
            yield location, not any(cell.strip() for cell in row), row

    columns: list[str] | None = None
    for location, blank, row in _blank_aware(rows()):
        raw = ",".join(row)
        if blank:
            yield RawRecord(location, error=BLANK_LINE, raw=raw)
        elif header and columns is None:
            columns = row
        elif columns is None:
            yield RawRecord(location, fields={"_cells": row}, raw=raw)
        elif len(row) != len(columns):
            yield RawRecord(location, error=f"expected {len(columns)} columns, got {len(row)}", raw=raw)
        else:
            yield RawRecord(location, fields=dict(zip(columns, row)), raw=raw)


def iter_parquet_rows(path: Path, config_key: str) -> Iterator[RawRecord]:
    import polars as pl

    read_bytes(path, config_key)
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise SourceFileError(config_key, path, f"not a readable Parquet file ({exc})") from exc
    for index, row in enumerate(frame.iter_rows(named=True), start=1):
        yield RawRecord(f"{path.name}:row {index}", fields=row, raw=json.dumps(row, default=str)[:2000])


def list_files(path: Path, config_key: str, pattern: str) -> list[Path]:
    """A file, or the files of a folder matching pattern (sorted)."""
    if not path.exists():
        raise SourceFileError(config_key, path, "does not exist")
    if path.is_dir():
        found = sorted(p for p in path.glob(pattern) if p.is_file())
        if not found:
            raise SourceFileError(config_key, path, f"folder holds no {pattern} file")
        return found
    return [path]
