"""Low-level record iteration with locations: JSON, JSONL (also inside .zip), CSV, Parquet.

Every function yields `RawRecord`s carrying `file:line` so that quarantine rows point at the input.
A file that cannot be read at all raises `SourceFileError` naming the config key and the file:

* missing, empty, a folder, or not a regular file (a device such as /dev/zero, a FIFO, a socket: refused
  before it is opened, so nothing blocks or reads forever);
* larger than `ingest.max_file_bytes` (its declared size is checked, then the read stops at the cap);
* not UTF-8 text: UTF-16 or UTF-32 (with a byte order mark, or without one, told by its NUL bytes), or a
  compressed container (gzip, bzip2, xz, zstd, 7-Zip, zip, Parquet) given to a text reader; compressed
  files other than .zip archives of JSON Lines are never decompressed;
* not JSON, not a zip archive, not Parquet, or a JSON value of the wrong shape as a whole;
* a CSV header that repeats a column name, a zip archive with two members of one name;
* a Parquet file whose values would expand past the cap (`iter_parquet_rows`).

A bad part of a readable file becomes a record with an `error` and its location, and the rest is read:

* a record that is not a JSON object (`expected a JSON object, got a string`), or with a duplicate key in
  any of its objects (JSON would silently keep the last value), or nested deeper than `MAX_JSON_DEPTH`, or
  with a number JSON cannot hold (NaN, infinity, a float that overflows, an integer of more than
  `MAX_INT_DIGITS` digits), or with a lone surrogate escape (`\\ud800`); any other error decoding one record
  is that record's problem too, never the file's;
* in an object of arrays, a key whose value is not a list (location `file:line [key]`);
* a blank line (or a CSV row whose cells are all blank) between records (`blank line`); blank lines at
  the very end of a file are not rows: they hold nothing and separate nothing;
* a CSV quote that is not closed properly: the row where it starts is quarantined and the lines after it
  are read again as rows (without this one stray quote swallows every row up to the next quote);
* a zip member that cannot be decompressed, that is not `.jsonl` (documentation members such as README,
  LICENSE, *.txt, *.md and macOS resource forks are skipped), whose name is absolute or climbs out with
  `..`, that is compressed with anything but deflate, that is not UTF-8, or that would take the archive's
  expanded size past `ingest.max_file_bytes`;
* in a configured folder, a file that is a symbolic link leaving the folder, or not a regular file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import stat
import zipfile
import zlib
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from madef_assets.defs.sources.text import SURROGATE as _SURROGATE_CHAR
from madef_assets.defs.sources.text import visible

_WHITESPACE = " \t\r\n"
BLANK_LINE = "blank line"
MAX_JSON_DEPTH = 64
MAX_INT_DIGITS = 4000  # under Python's int() limit (4300 digits), which would otherwise raise mid-file
_READ_CHUNK = 1 << 20


class SourceFileError(ValueError):
    """A configured input file is missing, empty or unreadable as a whole."""

    def __init__(self, config_key: str, path: Path | str, problem: str):
        super().__init__(f"{config_key}: {visible(str(path))}: {problem}")


class DuplicateKeyError(ValueError):
    def __init__(self, key: str):
        super().__init__(f"duplicate key {visible(key)!r} in one JSON object")


@dataclass
class RawRecord:
    location: str
    fields: dict[str, Any] | None = None
    error: str | None = None
    raw: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataFile:
    """One file to read: its path, the config key and size cap it is read under, and its name in locations.

    A file listed in a configured folder (`in_folder`) was resolved and checked when listed (`list_files`):
    it is opened without following a symbolic link, so it cannot be swapped for one afterwards. A configured
    path itself may be a link (data folders often live on another disk)."""

    path: Path
    config_key: str
    max_bytes: int
    name: str = ""
    in_folder: bool = False

    @property
    def display(self) -> str:
        return visible(self.name or self.path.name)


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


# --- opening and reading whole files ----------------------------------------------------------


def _kind(mode: int) -> str | None:
    """What a file that is not a regular file is, in words; None for a regular file."""
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    )
    for test, name in kinds:
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def open_regular(path: Path, config_key: str, follow_links: bool = True) -> BinaryIO:
    """A regular file opened for reading. Anything else is refused from its stat before it is opened (a FIFO
    would block the reader, /dev/zero never ends) and again from the open descriptor (the path may have been
    swapped in between; O_NONBLOCK keeps a swapped-in FIFO from blocking the open)."""
    try:
        info = os.stat(path) if follow_links else os.lstat(path)
    except FileNotFoundError:
        raise SourceFileError(config_key, path, "file does not exist") from None
    except OSError as exc:
        raise SourceFileError(config_key, path, f"cannot be read ({exc.strerror})") from exc
    kind = _kind(info.st_mode)
    if kind:
        raise SourceFileError(config_key, path, f"is {kind}, expected a regular file: not read")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        raise SourceFileError(config_key, path, f"cannot be opened ({exc.strerror})") from exc
    kind = _kind(os.fstat(descriptor).st_mode)
    if kind:
        os.close(descriptor)
        raise SourceFileError(config_key, path, f"is {kind}, expected a regular file: not read")
    return os.fdopen(descriptor, "rb")


def over_cap(what: str, max_bytes: int) -> str:
    return f"{what}, over ingest.max_file_bytes ({max_bytes:,} bytes): not read"


def read_capped(handle: BinaryIO, limit: int) -> bytes | None:
    """All of a stream's bytes, or None as soon as there are more than `limit` (sizes on disk can lie:
    /proc files say 0, a file may grow while it is read)."""
    chunks: list[bytes] = []
    total = 0
    while chunk := handle.read(min(_READ_CHUNK, limit + 1 - total)):
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def read_bytes(file: DataFile) -> bytes:
    with open_regular(file.path, file.config_key, follow_links=not file.in_folder) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > file.max_bytes:
            raise SourceFileError(file.config_key, file.path, over_cap(f"is {size:,} bytes", file.max_bytes))
        data = read_capped(handle, file.max_bytes)
    if data is None:
        raise SourceFileError(
            file.config_key, file.path, over_cap(f"holds more than its size on disk ({size:,} bytes)", file.max_bytes)
        )
    if not data.strip(b" \t\r\n\xef\xbb\xbf"):
        raise SourceFileError(file.config_key, file.path, "file is empty")
    return data


# --- is it UTF-8 text? --------------------------------------------------------------------------

_BYTE_ORDER_MARKS = (
    (b"\xff\xfe\x00\x00", "UTF-32-LE"),
    (b"\x00\x00\xfe\xff", "UTF-32-BE"),
    (b"\xff\xfe", "UTF-16-LE"),
    (b"\xfe\xff", "UTF-16-BE"),
)
_CONTAINERS = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip"),
    (b"PK\x03\x04", "zip"),
    (b"PAR1", "Parquet"),
)
_BZIP2 = re.compile(rb"BZh[1-9]1AY&SY")
_SNIFF_BYTES = 1 << 16


def _wide_encoding(sample: bytes) -> str | None:
    """UTF-32 or UTF-16 without a byte order mark, told by where its NUL bytes are.

    UTF-32: every code unit's high byte is 0 and the next at most 0x10. UTF-16-LE: NUL bytes only at odd
    offsets, and either most odd bytes are NUL (mostly ASCII text) or every line feed is a whole code unit
    (0A 00 at an even offset); mirrored for big-endian. A UTF-8 file with a few NUL characters in it does
    not pass (its line feeds fall anywhere), so its rows are quarantined one by one instead.
    """
    if b"\x00" not in sample:
        return None
    units = sample[: len(sample) // 4 * 4]
    if len(units) >= 8:
        if not any(units[3::4]) and max(units[2::4]) <= 0x10 and any(units[0::4]):
            return "UTF-32-LE"
        if not any(units[0::4]) and max(units[1::4]) <= 0x10 and any(units[3::4]):
            return "UTF-32-BE"
    pairs = sample[: len(sample) // 2 * 2]
    even, odd = pairs[0::2], pairs[1::2]
    for name, low, high in (("UTF-16-LE", even, odd), ("UTF-16-BE", odd, even)):
        if low.count(0) or not high.count(0):
            continue
        line_feeds = [i for i, byte in enumerate(low) if byte == 0x0A]
        whole_line_feeds = line_feeds and all(high[i] == 0 for i in line_feeds) and b"\n" not in high
        if high.count(0) * 2 >= len(high) or whole_line_feeds:
            return name
    return None


def text_problem(data: bytes) -> str | None:
    """Why bytes given to a text reader are not UTF-8 text, or None."""
    for mark, name in _BYTE_ORDER_MARKS:
        if data.startswith(mark):
            return f"is {name} text (byte order mark); sources must be UTF-8: convert it (iconv -f {name} -t UTF-8)"
    for magic, name in _CONTAINERS:
        if data.startswith(magic):
            return f"is a {name} file, not UTF-8 text: not read (compressed files are never decompressed here)"
    if _BZIP2.match(data):
        return "is a bzip2 file, not UTF-8 text: not read (compressed files are never decompressed here)"
    wide = _wide_encoding(data[:_SNIFF_BYTES])
    if wide:
        return (
            f"looks like {wide} text without a byte order mark (NUL bytes between its characters); "
            f"sources must be UTF-8: convert it (iconv -f {wide} -t UTF-8)"
        )
    return None


def read_text(file: DataFile) -> str:
    """A file's UTF-8 text; bytes that are not UTF-8 are kept as lone surrogates so that the record holding
    them can be quarantined."""
    data = read_bytes(file)
    problem = text_problem(data)
    if problem:
        raise SourceFileError(file.config_key, file.path, problem)
    return data.decode("utf-8", errors="surrogateescape").lstrip("\ufeff")


# --- JSON ----------------------------------------------------------------------------------------


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return record


class NumberRefused(ValueError):
    """A JSON number that cannot be kept as it is: NaN or infinity (not JSON; a later `json.dumps` would
    write it as non-JSON), or an integer with more digits than `int()` converts."""


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS + 1:  # + 1: the sign
        raise NumberRefused(f"integer with {len(text.lstrip('-')):,} digits (at most {MAX_INT_DIGITS:,} are read)")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NumberRefused(f"number {text[:40]} is out of the range of a float (infinity is not JSON)")
    return value


def _refuse_constant(name: str) -> Any:
    raise NumberRefused(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys,
    parse_int=_bounded_int,
    parse_float=_finite_float,
    parse_constant=_refuse_constant,
)
TOO_DEEP = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
LONE_SURROGATE = "lone surrogate escape (\\ud800-\\udfff without its pair) in a string: not valid Unicode"


def _has_surrogate_escape(value: Any, source: str) -> bool:
    """Whether a decoded value holds a lone surrogate that came from a `\\ud800`-style escape in its JSON text
    (and not from bytes that were not UTF-8, which are reported as such)."""
    if not _SURROGATE_ESCAPE.search(source) or _SURROGATE_CHAR.search(source):
        return False
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE_CHAR.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def loads_strict(text: str) -> Any:
    """json.loads that refuses a duplicate key in any object (DuplicateKeyError) instead of keeping the last."""
    return _DECODER.decode(text)


def nested_too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether lists and dicts nest deeper than `limit` (walked without recursion)."""
    stack = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _decode_line(line: str) -> tuple[Any, str | None]:
    """(value, None), or (None, why the line is not a record)."""
    try:
        value = loads_strict(line)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} at column {exc.colno}"
    except RecursionError:
        return None, TOO_DEEP
    except ValueError as exc:  # a duplicate key, a refused number: this record's problem, never the file's
        return None, str(exc)
    if nested_too_deep(value):
        return None, TOO_DEEP
    if _has_surrogate_escape(value, line):
        return None, LONE_SURROGATE
    if not isinstance(value, dict):
        return None, f"expected a JSON object, got {describe(value)}"
    return value, None


_STRUCTURAL = re.compile(r'[\[\]{}"]')
_SCALAR = re.compile(r"[^\s,\]}]*")
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def _value_end(text: str, pos: int) -> int:
    """The offset after the JSON value at text[pos], by matching brackets outside strings: how a record the
    decoder refused (nested too deep, a duplicate key, a refused number) is stepped over. One pass, each
    character read once: a string that is never closed ends the search (a rescan from every quote after it
    would take quadratic time). A value that is not an array or object (a refused number) ends at the next
    delimiter."""
    if text[pos] not in "[{":
        return _SCALAR.match(text, pos).end()
    depth = 0
    search = pos
    while match := _STRUCTURAL.search(text, search):
        token = match.group()
        if token == '"':
            rest = _STRING_REST.match(text, match.end())
            if rest is None:
                raise json.JSONDecodeError("unterminated string", text, match.start())
            search = rest.end()
            continue
        search = match.end()
        depth += 1 if token in "[{" else -1
        if depth == 0:
            return search
    raise json.JSONDecodeError("unterminated array or object", text, pos)


def _decode_item(text: str, pos: int) -> tuple[Any, int, str | None]:
    """(value, end, problem) of the JSON value at text[pos]; a refused value comes back with its problem."""
    try:
        value, end = _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError:
        raise  # the text is not JSON from here on: the file cannot be read further
    except RecursionError:
        return None, _value_end(text, pos), TOO_DEEP
    except ValueError as exc:  # a duplicate key, a refused number: this record's problem, never the file's
        return None, _value_end(text, pos), str(exc)
    if nested_too_deep(value):
        return None, end, TOO_DEEP
    if _has_surrogate_escape(value, text[pos:end]):
        return None, end, LONE_SURROGATE
    return value, end, None


def _line_of(pos: int, line_starts: list[int]) -> int:
    return bisect_right(line_starts, pos)


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


@dataclass
class _Item:
    offset: int
    end: int
    value: Any
    problem: str | None


def _parse_array(text: str, pos: int) -> tuple[list[_Item], int]:
    """Items of the JSON array at text[pos] == '[', and the offset after it."""
    items: list[_Item] = []
    pos = _skip(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        return items, pos + 1
    while True:
        pos = _skip(text, pos)
        value, end, problem = _decode_item(text, pos)
        items.append(_Item(pos, end, value, problem))
        pos = _skip(text, end)
        if pos >= len(text):
            raise json.JSONDecodeError("unterminated array", text, pos)
        if text[pos] == "]":
            return items, pos + 1
        if text[pos] != ",":
            raise json.JSONDecodeError("expected ',' or ']'", text, pos)
        pos += 1


def _json_record(location: str, item: _Item, text: str, group: str) -> RawRecord:
    raw = text[item.offset : min(item.end, item.offset + 2000)]
    if item.problem:
        return RawRecord(location, error=item.problem, raw=raw)
    if not isinstance(item.value, dict):
        return RawRecord(location, error=f"expected a JSON object, got {describe(item.value)}", raw=raw)
    return RawRecord(location, fields=item.value, raw=raw, extra={"group": group})


def iter_json_records(file: DataFile) -> Iterator[RawRecord]:
    """Records of a JSON array, or of an object of arrays (`extra["group"]` = the key).

    In an object of arrays a key whose value is not a list becomes one error record located at
    `file:line [key]`. A `.json` file that holds JSON Lines (an object followed by more objects) is
    read as JSON Lines.
    """
    display = file.display
    text = read_text(file)
    line_starts = [0] + [match.end() for match in re.finditer("\n", text)]
    pos = _skip(text, 0)
    records: list[RawRecord] = []
    lists = 0
    other_keys: list[str] = []

    def located(offset: int) -> str:
        return f"{display}:{_line_of(offset, line_starts)}"

    try:
        if text[pos] == "[":
            items, pos = _parse_array(text, pos)
            records = [_json_record(located(item.offset), item, text, "") for item in items]
            lists = 1
        elif text[pos] == "{":
            pos = _skip(text, pos + 1)
            while text[pos] != "}":
                if text[pos] != '"':
                    raise json.JSONDecodeError("expected a string key", text, pos)
                key, pos = _DECODER.raw_decode(text, pos)
                pos = _skip(text, pos)
                if text[pos] != ":":
                    raise json.JSONDecodeError("expected ':'", text, pos)
                pos = _skip(text, pos + 1)
                if text[pos] == "[":
                    items, pos = _parse_array(text, pos)
                    records += [_json_record(located(item.offset), item, text, key) for item in items]
                    lists += 1
                else:
                    value, end, problem = _decode_item(text, pos)
                    other_keys.append(key)
                    records.append(
                        RawRecord(
                            f"{located(pos)} [{visible(key)}]",
                            error=problem
                            or f"value of key {visible(key)!r} is {describe(value)}, expected a list of records",
                            raw=text[pos : min(end, pos + 2000)],
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
            value, _, problem = _decode_item(text, pos)
            raise SourceFileError(
                file.config_key,
                file.path,
                f"expected a JSON array of records or an object of arrays, got {problem or describe(value)}",
            )
        pos = _skip(text, pos)
        if pos < len(text):
            raise json.JSONDecodeError(
                f"extra data after the JSON value at line {_line_of(pos, line_starts)}", text, pos
            )
    except (json.JSONDecodeError, IndexError) as exc:
        problem = exc.msg if isinstance(exc, json.JSONDecodeError) and exc.msg.startswith("extra data") else exc
        raise SourceFileError(file.config_key, file.path, f"not valid JSON: {problem}") from exc
    if records and not lists:
        keys = ", ".join(repr(visible(k)) for k in other_keys[:5])
        raise SourceFileError(
            file.config_key,
            file.path,
            f"expected a JSON array of records or an object of arrays; this object has no list values (keys: {keys})",
        )
    if not records:
        raise SourceFileError(file.config_key, file.path, "the JSON holds no records")
    yield from records


# --- JSON Lines, also in zip archives -----------------------------------------------------------


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


def _jsonl_from_bytes(data: bytes, display: str) -> Iterator[RawRecord]:
    for location, line, error in _iter_lines(data, display):
        if error:
            yield RawRecord(location, error=error, raw=line)
            continue
        value, problem = _decode_line(line)
        if problem:
            yield RawRecord(location, error=problem, raw=line)
        else:
            yield RawRecord(location, fields=value, raw=line)


_DOCUMENTATION = ("readme", "license", "licence", "copying", "notice")
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, OSError)
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def _is_documentation(member: str) -> bool:
    name = PurePosixPath(member).name.lower()
    return name.startswith(".") or name.startswith(_DOCUMENTATION) or name.endswith((".txt", ".md"))


def _escapes_archive(name: str) -> bool:
    """An absolute member name, a drive letter, or a `..` part (either slash): extracted, it would land
    outside the folder it is extracted to."""
    return name.startswith(("/", "\\")) or bool(re.match(r"[A-Za-z]:", name)) or ".." in re.split(r"[\\/]", name)


def iter_jsonl_records(file: DataFile) -> Iterator[RawRecord]:
    """JSON Lines, or every *.jsonl member of a .zip archive (see the module docstring for what a member
    is refused for; each refused member is one error record `archive.zip!member`)."""
    if file.path.suffix != ".zip":
        data = read_bytes(file)
        problem = text_problem(data)
        if problem:
            raise SourceFileError(file.config_key, file.path, problem)
        yield from _jsonl_from_bytes(data, file.display)
        return
    with open_regular(file.path, file.config_key, follow_links=not file.in_folder) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > file.max_bytes:
            raise SourceFileError(file.config_key, file.path, over_cap(f"is {size:,} bytes", file.max_bytes))
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise SourceFileError(file.config_key, file.path, f"not a zip archive ({exc})") from exc
        with archive:
            yield from _zip_members(archive, file)


def _zip_members(archive: zipfile.ZipFile, file: DataFile) -> Iterator[RawRecord]:
    members = [info for info in archive.infolist() if not info.is_dir() and not info.filename.startswith("__MACOSX/")]
    if not any(info.filename.endswith(".jsonl") for info in members):
        raise SourceFileError(file.config_key, file.path, "zip archive holds no .jsonl file")
    repeated = sorted(name for name, count in Counter(info.filename for info in members).items() if count > 1)
    if repeated:
        # both members would have the same locations, and an unzip tool keeps only one of them
        listed = ", ".join(repr(visible(name)) for name in repeated[:5])
        raise SourceFileError(file.config_key, file.path, f"zip archive holds two members named {listed}")
    budget = file.max_bytes  # for the archive's members together: many small members expand as far as one big
    for info in members:
        display = f"{file.display}!{visible(info.filename)}"
        raw = visible(info.filename)
        if _escapes_archive(info.filename):
            yield RawRecord(display, error="zip member name is absolute or climbs out with '..': not read", raw=raw)
            continue
        if not info.filename.endswith(".jsonl"):
            if not _is_documentation(info.filename):
                yield RawRecord(display, error="zip member is not a .jsonl file: not read", raw=raw)
            continue
        if info.compress_type not in _ZIP_METHODS:
            # bzip2 and lzma members are decompressed by zipfile without an output limit per read
            problem = f"zip member compressed with method {info.compress_type} (only stored and deflate are read)"
            yield RawRecord(display, error=f"{problem}: not read", raw=raw)
            continue
        if info.file_size > budget:
            what = f"zip member declares {info.file_size:,} bytes uncompressed"
            if info.file_size <= file.max_bytes:
                what += f" and the members before it {file.max_bytes - budget:,}"
            yield RawRecord(display, error=over_cap(what, file.max_bytes), raw=raw)
            continue
        try:
            with archive.open(info) as member:
                data = read_capped(member, budget)
        except _ZIP_READ_ERRORS as exc:
            yield RawRecord(display, error=f"unreadable zip member: {exc}", raw=raw)
            continue
        if data is None:
            problem = over_cap("zip member expands past its declared size", file.max_bytes)
            yield RawRecord(display, error=problem, raw=raw)
            continue
        budget -= len(data)
        problem = text_problem(data)
        if problem:
            yield RawRecord(display, error=f"zip member {problem}", raw=raw)
            continue
        yield from _jsonl_from_bytes(data, display)


# --- CSV -----------------------------------------------------------------------------------------


@dataclass
class _CsvItem:
    line: int
    row: list[str] | None = None
    error: str | None = None
    raw: str = ""
    is_header: bool = False


def _csv_items(lines: list[str], header: bool) -> Iterator[tuple[int, bool, _CsvItem]]:
    """(line, blank, item) for every row of a CSV, the header row marked `is_header`.

    Parsed strictly: a quote that is never closed, or that closes and is followed by more text, is an error
    at the line where its row starts, and parsing starts again on the next line. So is a row that runs over
    several lines (a quoted field) and ends with the wrong number of columns: a stray opening quote closed
    by some later quote. Without this a stray quote turns every row up to the next quote into one cell.
    """
    columns: list[str] | None = None
    start = 0  # index of the first line not yet parsed
    while start < len(lines):
        reader = csv.reader((lines[i] for i in range(start, len(lines))), strict=True)
        consumed = start
        first = start + 1
        try:
            for row in reader:
                first, consumed = consumed + 1, start + reader.line_num
                blank = not any(cell.strip() for cell in row)
                if header and columns is None and not blank:
                    columns = row
                    yield first, False, _CsvItem(first, row, is_header=True)
                    continue
                if columns is not None and consumed > first and len(row) != len(columns) and not blank:
                    yield first, False, _CsvItem(first, error=_quote_error(first, consumed), raw=lines[first - 1])
                    start = first
                    break
                yield first, blank, _CsvItem(first, row)
            else:
                return
        except csv.Error as exc:
            first = consumed + 1
            yield first, False, _CsvItem(first, error=_quote_error(first, None, str(exc)), raw=lines[first - 1])
            start = first


def _quote_error(first: int, last: int | None, detail: str = "") -> str:
    where = f"runs to line {last} with the wrong number of columns" if last else f"is not closed properly ({detail})"
    return (
        f"unbalanced quote: the quoted field of the row starting on line {first} {where}; "
        "the lines after it are read as rows"
    )


def iter_csv_rows(file: DataFile, header: bool) -> Iterator[RawRecord]:
    """CSV rows as lists (headerless) or dicts (with header); BOM and CRLF handled.

    A row whose cells are all blank is an error record `blank line` (unless only blank rows follow it).
    """
    text = read_text(file)
    # Any field of a file under the size cap is read (a prompt over ingest.max_prompt_chars is quarantined
    # later): the csv module's default limit (128 KiB) would raise on a legitimate long field mid-file. The
    # limit is process-wide; it is only ever raised.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    lines = io.StringIO(text, newline="").readlines()
    display = file.display
    columns: list[str] | None = None
    for line, blank, item in _blank_aware(_csv_items(lines, header)):
        location = f"{display}:{line}"
        if item.is_header:
            columns = item.row
            repeated = sorted(name for name, count in Counter(columns).items() if count > 1)
            if repeated:
                # a dict of the row would keep only the last of the columns that share a name
                names = ", ".join(repr(visible(name)) for name in repeated)
                raise SourceFileError(file.config_key, file.path, f"header line {line} repeats column {names}")
            continue
        if item.error:
            yield RawRecord(location, error=item.error, raw=item.raw.rstrip("\r\n"))
            continue
        row = item.row or []
        raw = ",".join(row)
        if blank:
            yield RawRecord(location, error=BLANK_LINE, raw=raw)
        elif columns is None:
            yield RawRecord(location, fields={"_cells": row}, raw=raw)
        elif len(row) != len(columns):
            yield RawRecord(location, error=f"expected {len(columns)} columns, got {len(row)}", raw=raw)
        else:
            yield RawRecord(location, fields=dict(zip(columns, row)), raw=raw)


# --- Parquet -------------------------------------------------------------------------------------


def _excerpt(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)[:2000]


MIN_VALUE_BYTES = 8  # each decoded value counts at least this much (a number, a null, a list entry)
_PARQUET_BATCH_ROWS = 64


def _decoded_size(array: Any) -> int:
    """How many bytes an Arrow array's values take once decoded: text by its length (a dictionary-encoded
    value once per use, not once per file), every value, list entry and map entry at least
    `MIN_VALUE_BYTES`. Computed on the Arrow side, before any value becomes a Python object."""
    import pyarrow as pa
    import pyarrow.compute as pc

    list_types = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    size, stack = 0, [array]
    while stack:
        item = stack.pop()
        size += len(item) * MIN_VALUE_BYTES
        kind = item.type
        if pa.types.is_dictionary(kind):
            lengths = pc.binary_length(item.dictionary) if _is_text(pa, kind.value_type) else None
            if lengths is not None:
                size += pc.sum(lengths.take(item.indices)).as_py() or 0
            else:
                stack.append(item.dictionary.take(item.indices))
        elif _is_text(pa, kind):
            size += pc.sum(pc.binary_length(item)).as_py() or 0
        elif pa.types.is_struct(kind):
            stack.extend(item.flatten())
        elif pa.types.is_map(kind):
            first, last = (item.offsets[0].as_py(), item.offsets[-1].as_py()) if len(item) else (0, 0)
            stack += [item.keys.slice(first, last - first), item.items.slice(first, last - first)]
        elif any(test(kind) for test in list_types):
            stack.append(item.flatten())
    return size


def _column_values(column: Any) -> list[Any]:
    """A column's Python values; a dictionary-encoded column shares one object per dictionary entry (a row
    that repeats a 10 MB value a thousand times does not become 10 GB here)."""
    import pyarrow as pa

    if not pa.types.is_dictionary(column.type):
        return column.to_pylist()
    indices = column.indices.to_pylist()
    used = sorted({index for index in indices if index is not None})
    values = dict(zip(used, column.dictionary.take(pa.array(used, type=pa.int64())).to_pylist()))
    return [None if index is None else values[index] for index in indices]


def _is_text(pa: Any, kind: Any) -> bool:
    tests = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    return any(test(kind) for test in tests)


def iter_parquet_rows(file: DataFile) -> Iterator[RawRecord]:
    """Parquet rows. A Parquet file's columns may expand far past its size (a dictionary-encoded 1 MB value
    used in every row, inside a list or a map too), so nothing is decoded past `ingest.max_file_bytes`: the
    uncompressed size its metadata declares, and its number of values (at `MIN_VALUE_BYTES` each), must be
    under the cap; every text column, nested ones included, is read dictionary-encoded (a repeated value is
    not copied per row); rows are read in small batches and each batch's decoded size (`_decoded_size`) is
    added up and checked before any of its values becomes a Python object."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = read_bytes(file)
    unreadable = (pa.ArrowException, OSError, ValueError)
    try:
        schema = pq.ParquetFile(pa.BufferReader(data)).schema
        text_columns = [column.path for column in schema if column.physical_type == "BYTE_ARRAY"]
        parquet = pq.ParquetFile(pa.BufferReader(data), read_dictionary=text_columns)
        metadata = parquet.metadata
        chunks = [
            metadata.row_group(group).column(column)
            for group in range(metadata.num_row_groups)
            for column in range(metadata.num_columns)
        ]
        declared = sum(chunk.total_uncompressed_size for chunk in chunks)
        values = sum(chunk.num_values for chunk in chunks)
    except unreadable as exc:
        raise SourceFileError(file.config_key, file.path, f"not a readable Parquet file ({exc})") from exc
    if declared > file.max_bytes:
        raise SourceFileError(
            file.config_key, file.path, over_cap(f"declares {declared:,} bytes uncompressed", file.max_bytes)
        )
    if values * MIN_VALUE_BYTES > file.max_bytes:
        what = f"holds {values:,} values ({MIN_VALUE_BYTES} bytes each at least)"
        raise SourceFileError(file.config_key, file.path, over_cap(what, file.max_bytes))
    number, expanded = 0, 0
    batches = parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS)
    while True:
        try:
            batch = next(batches, None)
        except unreadable as exc:
            raise SourceFileError(
                file.config_key, file.path, f"not a readable Parquet file after row {number} ({exc})"
            ) from exc
        if batch is None:
            return
        expanded += sum(_decoded_size(column) for column in batch.columns)
        if expanded > file.max_bytes:
            what = f"expands past the cap in rows {number + 1}-{number + batch.num_rows}"
            raise SourceFileError(file.config_key, file.path, over_cap(what, file.max_bytes))
        columns = [_column_values(column) for column in batch.columns]
        for values in zip(*columns):
            number += 1
            row = dict(zip(batch.schema.names, values))
            location = f"{file.display}:row {number}"
            if nested_too_deep(row):
                yield RawRecord(location, error=TOO_DEEP, raw="")
            else:
                yield RawRecord(location, fields=row, raw=_excerpt(row))


# --- folders -------------------------------------------------------------------------------------


def _listed(root: Path, path: Path, file: DataFile) -> DataFile | RawRecord:
    """A file found in a configured folder, or why it is not read."""
    name = path.relative_to(root).as_posix()
    location = visible(name)
    info = os.lstat(path)
    target = path
    if stat.S_ISLNK(info.st_mode):
        target = Path(os.path.realpath(path))
        if not target.is_relative_to(root):
            reason = f"symbolic link to {visible(str(target))}, outside the folder {visible(str(root))}: not read"
            return RawRecord(location, error=reason, raw=location)
        try:
            info = os.stat(target)
        except OSError as exc:
            return RawRecord(location, error=f"broken symbolic link ({exc.strerror}): not read", raw=location)
    kind = _kind(info.st_mode)
    if kind:
        return RawRecord(location, error=f"is {kind}, expected a regular file: not read", raw=location)
    return DataFile(target, file.config_key, file.max_bytes, name=name, in_folder=True)


def list_files(file: DataFile, pattern: str, recursive: bool = False) -> list[DataFile | RawRecord]:
    """A file, or the entries of a folder whose names match pattern, sorted by name: a `DataFile` for each
    regular file (a symbolic link that stays inside the folder is resolved), an error record for a link that
    leaves the folder (its target is never opened) and for anything that is not a regular file. Subfolders
    are entered when `recursive`, never through a link."""
    try:
        info = os.stat(file.path)
    except OSError:
        raise SourceFileError(file.config_key, file.path, "does not exist") from None
    if not stat.S_ISDIR(info.st_mode):
        kind = _kind(info.st_mode)
        if kind:
            problem = f"is {kind}, expected a regular file or a folder: not read"
            raise SourceFileError(file.config_key, file.path, problem)
        return [file]
    root = file.path.resolve()
    found: list[DataFile | RawRecord] = []
    folders = [root]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        folders.append(Path(entry.path))
                elif fnmatch(entry.name, pattern):
                    found.append(_listed(root, Path(entry.path), file))
    if not found:
        raise SourceFileError(file.config_key, file.path, f"folder holds no {pattern} file")
    return sorted(found, key=lambda item: PurePosixPath(item.name if isinstance(item, DataFile) else item.location))
