"""Low-level record iteration with locations: JSON, JSONL (also inside .zip), CSV, Parquet.

Every function yields `RawRecord`s carrying `file:line` so that quarantine rows point at the input.
Whole-file formats (JSON) that cannot be parsed at all raise `SourceFileError`; line formats put a
bad line in quarantine and go on.
"""

from __future__ import annotations

import csv
from bisect import bisect_right
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\r\n"


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


def iter_json_records(path: Path, config_key: str, display: str | None = None) -> Iterator[tuple[str, Any, str]]:
    """Yield (location, value, group) for a JSON array, or for an object of arrays (group = key).

    Non-UTF-8 bytes are kept as lone surrogates so that the record holding them can be quarantined.
    """
    display = display or path.name
    text = read_bytes(path, config_key).decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    pos = _skip(text, 0)
    try:
        if text[pos] == "[":
            items, _ = _parse_array(text, pos)
            for offset, value in items:
                yield f"{display}:{_line_of(offset, line_starts)}", value, ""
        elif text[pos] == "{":
            pos = _skip(text, pos + 1)
            while text[pos] != "}":
                key, pos = _DECODER.raw_decode(text, pos)
                pos = _skip(text, pos)
                if text[pos] != ":":
                    raise json.JSONDecodeError("expected ':'", text, pos)
                pos = _skip(text, pos + 1)
                if text[pos] == "[":
                    items, pos = _parse_array(text, pos)
                    for offset, value in items:
                        yield f"{display}:{_line_of(offset, line_starts)}", value, key
                else:
                    raise json.JSONDecodeError(f"value of {key!r} is not a list", text, pos)
                pos = _skip(text, pos)
                if text[pos] == ",":
                    pos = _skip(text, pos + 1)
        else:
            raise json.JSONDecodeError("expected a JSON array or object", text, pos)
    except (json.JSONDecodeError, IndexError) as exc:
        raise SourceFileError(config_key, path, f"not valid JSON: {exc}") from exc


def _iter_lines(data: bytes, display: str) -> Iterator[tuple[str, str, str]]:
    """Yield (location, line, error) for the non-blank lines of a byte string.

    A line that is not UTF-8 comes back decoded with replacement characters and an error.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, raw_line in enumerate(data.split(b"\n"), start=1):
        raw_line = raw_line.rstrip(b"\r")
        if not raw_line.strip():
            continue
        try:
            yield f"{display}:{number}", raw_line.decode("utf-8"), ""
        except UnicodeDecodeError as exc:
            yield (
                f"{display}:{number}",
                raw_line.decode("utf-8", errors="replace"),
                f"non-UTF-8 bytes at byte {exc.start} of the line",
            )


def iter_jsonl_records(path: Path, config_key: str) -> Iterator[RawRecord]:
    """JSON Lines, or every *.jsonl member of a .zip archive (macOS resource forks skipped)."""
    if path.suffix == ".zip":
        read_bytes(path, config_key)
        with zipfile.ZipFile(path) as archive:
            members = [
                name
                for name in archive.namelist()
                if name.endswith(".jsonl") and not name.startswith("__MACOSX/")
            ]
            if not members:
                raise SourceFileError(config_key, path, "zip archive holds no .jsonl file")
            for member in members:
                yield from _jsonl_from_bytes(archive.read(member), f"{path.name}!{member}")
    else:
        yield from _jsonl_from_bytes(read_bytes(path, config_key), path.name)


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
            yield RawRecord(location, error=f"expected a JSON object, got {type(value).__name__}", raw=line)
            continue
        yield RawRecord(location, fields=value, raw=line)


def iter_csv_rows(path: Path, config_key: str, header: bool) -> Iterator[RawRecord]:
    """CSV rows as lists (headerless) or dicts (with header); BOM and CRLF handled."""
    data = read_bytes(path, config_key)
    text = data.decode("utf-8", errors="surrogateescape").lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    columns: list[str] | None = None
    line = 1
    for row in reader:
        location = f"{path.name}:{line}"
        line = reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if header and columns is None:
            columns = row
            continue
        raw = ",".join(row)
        if columns is None:
            yield RawRecord(location, fields={"_cells": row}, raw=raw)
        elif len(row) != len(columns):
            yield RawRecord(location, error=f"expected {len(columns)} columns, got {len(row)}", raw=raw)
        else:
            yield RawRecord(location, fields=dict(zip(columns, row)), raw=raw)


def iter_parquet_rows(path: Path, config_key: str) -> Iterator[RawRecord]:
    import polars as pl

    read_bytes(path, config_key)
    for index, row in enumerate(pl.read_parquet(path).iter_rows(named=True), start=1):
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
