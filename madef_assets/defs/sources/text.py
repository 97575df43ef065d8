"""Characters that must not enter a prompt, and a visible form of text for locations and excerpts.

The rule, by Unicode category (Python's `unicodedata`), so that characters not listed by hand are covered too:

* control characters (Cc) other than tab, line feed and carriage return break tokenizers, terminals and
  downstream formats;
* format characters (Cf) are invisible: bidirectional controls (Trojan Source, CVE-2021-42574) make a prompt
  display differently from what a model reads; zero-width spaces (U+200B), word joiners and invisible operators
  (U+2060-U+2064), the soft hyphen (U+00AD), the Mongolian vowel separator (U+180E), a byte order mark inside
  the text, interlinear annotations and tag characters (used to smuggle hidden instructions) hide text from a
  reviewer. The two exceptions are the zero-width non-joiner and joiner (U+200C/U+200D): Persian, Indic
  scripts and emoji sequences need them. Variation selectors (U+FE0F, category Mn) change how a visible
  character is drawn and are kept;
* line and paragraph separators (Zl U+2028, Zp U+2029) are line breaks to some readers and not to others;
* Hangul fillers (U+115F, U+1160, U+3164, U+FFA0) are letters that draw nothing;
* noncharacters U+FFFE/U+FFFF only come from a broken decoder; the whole tag block U+E0000-U+E007F is refused.
"""

from __future__ import annotations

import re
import unicodedata

_CONTROL = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_FILLERS = "\u115f\u1160\u3164\uffa0"
_KEPT_FORMAT = {"\u200c", "\u200d"}
_FORBIDDEN_CATEGORIES = {"Cf", "Zl", "Zp"}
# Format characters and separators exist only in the first two planes and plane 14 (tags).
_SCANNED = (range(0x20000), range(0xE0000, 0xE1000))


def _class_of(chars: list[str]) -> str:
    """A regular-expression character class body for a sorted list of characters, as ranges."""
    parts: list[str] = []
    start = previous = None
    for char in chars:
        if previous is not None and ord(char) == ord(previous) + 1:
            previous = char
            continue
        if start is not None:
            parts.append(re.escape(start) if start == previous else f"{re.escape(start)}-{re.escape(previous)}")
        start = previous = char
    if start is not None:
        parts.append(re.escape(start) if start == previous else f"{re.escape(start)}-{re.escape(previous)}")
    return "".join(parts)


_INVISIBLE = _class_of(
    sorted(
        {
            chr(code)
            for block in _SCANNED
            for code in block
            if unicodedata.category(chr(code)) in _FORBIDDEN_CATEGORIES and chr(code) not in _KEPT_FORMAT
        }
        | set(_FILLERS)
        | {"\ufffe", "\uffff"}
        | {chr(code) for code in range(0xE0000, 0xE0080)}  # the tag block, unassigned code points included
    )
)
FORBIDDEN = re.compile(f"[{_CONTROL}{_BIDI}{_INVISIBLE}]")
SURROGATE = re.compile(r"[\ud800-\udfff]")
_NOT_SHOWN = re.compile(f"[{_CONTROL}{_BIDI}{_INVISIBLE}\ud800-\udfff]")


def char_kind(char: str) -> str:
    if re.fullmatch(f"[{_CONTROL}]", char):
        return "control character"
    if re.fullmatch(f"[{_BIDI}]", char):
        return "bidirectional control"
    if unicodedata.category(char) in ("Zl", "Zp"):
        return "line or paragraph separator"
    if char in _FILLERS:
        return "invisible filler character"
    return "invisible format character"


def describe_char(char: str) -> str:
    """'U+202E RIGHT-TO-LEFT OVERRIDE' (control characters have no name: 'U+0000')."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}{' ' + name if name else ''}"


def forbidden_char_problem(text: str, field: str) -> str | None:
    """Why `text` (the value of `field`) may not be kept, or None."""
    found = FORBIDDEN.search(text)
    if found is None:
        return None
    char = found.group()
    return f"{char_kind(char)} {describe_char(char)} in field '{field}' at character {found.start() + 1}"


def has_surrogate(text: str) -> bool:
    """Lone surrogates are the bytes that were not UTF-8 (decoded with surrogateescape)."""
    return SURROGATE.search(text) is not None


def visible(text: str) -> str:
    """The text with every forbidden character and lone surrogate written as an escape (`\\u202e`), so that a
    quarantine excerpt or a file name shows what is there instead of acting on the reader's screen."""
    return _NOT_SHOWN.sub(lambda match: _escape(match.group()), text)


def _escape(char: str) -> str:
    return f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"
