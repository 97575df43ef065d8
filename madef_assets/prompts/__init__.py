"""Prompt templates as files: load, version (hash of the text) and render."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

TEMPLATE_DIR = Path(__file__).parent


@dataclass(frozen=True)
class Template:
    name: str
    text: str

    @property
    def version(self) -> str:
        """Changes whenever the template text does, so the ledger never reuses answers to old wording."""
        return f"{self.name}@{hashlib.sha256(self.text.encode()).hexdigest()[:12]}"

    def render(self, **fields: str) -> str:
        return self.text.format(**fields)

    @property
    def example_text(self) -> str:
        """The template's own words (instruction and worked example): every line without a placeholder.
        A model answer that reproduces them is a copy, not an answer."""
        return example_text(self.text)


def example_text(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "{" not in line)


@lru_cache(maxsize=None)
def template(name: str, lang: str | None = None) -> Template:
    """`name_<lang>.txt` when a language is given (falling back to English), else `name.txt`."""
    candidates = [f"{name}_{lang}.txt", f"{name}_en.txt"] if lang else [f"{name}.txt"]
    for candidate in candidates:
        path = TEMPLATE_DIR / candidate
        if path.exists():
            # The final newline is dropped: the model continues right after the answer cue.
            return Template(path.stem, path.read_text(encoding="utf-8").rstrip("\n"))
    raise FileNotFoundError(f"no prompt template {candidates} in {TEMPLATE_DIR}")


def family_version(name: str) -> str:
    """One version for all language variants of a template (changes when any of them does)."""
    paths = sorted(TEMPLATE_DIR.glob(f"{name}_*.txt")) or [TEMPLATE_DIR / f"{name}.txt"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()[:12]
    return f"{name}@{digest}"
