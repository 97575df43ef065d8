"""Characters that must not enter a prompt, and a visible form of text for locations and excerpts.

Control characters (C0 other than tab, line feed and carriage return, DEL, C1) break tokenizers, terminals
and downstream formats; bidirectional controls (Trojan Source, CVE-2021-42574) make a prompt display
differently from what a model reads; invisible format characters (a byte order mark inside the text, tag
characters used to smuggle hidden instructions, interlinear annotations) hide text from a reviewer;
noncharacters U+FFFE/U+FFFF only come from a broken decoder. Zero-width joiner and non-joiner (U+200C/D)
are legitimate in Persian, Indic scripts and emoji sequences and are kept.
"""

from __future__ import annotations

import re
import unicodedata

_CONTROL = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_INVISIBLE = "\u206a-\u206f\ufeff\ufff9-\ufffb\ufffe\uffff\U000e0000-\U000e007f"
FORBIDDEN = re.compile(f"[{_CONTROL}{_BIDI}{_INVISIBLE}]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_NOT_SHOWN = re.compile(f"[{_CONTROL}{_BIDI}{_INVISIBLE}\ud800-\udfff]")


def char_kind(char: str) -> str:
    if re.fullmatch(f"[{_CONTROL}]", char):
        return "control character"
    if re.fullmatch(f"[{_BIDI}]", char):
        return "bidirectional control"
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
    return _SURROGATE.search(text) is not None


def visible(text: str) -> str:
    """The text with every forbidden character and lone surrogate written as an escape (`\\u202e`), so that a
    quarantine excerpt or a file name shows what is there instead of acting on the reader's screen."""
    return _NOT_SHOWN.sub(lambda match: _escape(match.group()), text)


def _escape(char: str) -> str:
    return f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"
