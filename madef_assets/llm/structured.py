"""The shape an answer must have (an output spec), and the check every answer passes whatever enforced it.

A step asks a role for a JSON value matching a schema, one of a closed set of choices, or text matching a
regular expression. A backend that can enforce the shape at decoding time does (OpenAI / vLLM structured
outputs, a grammar-constrained logits processor, log-likelihood of each choice); the answer is still checked
here, and one that fails is `parse_error` with the reason. A role whose backend is configured without
structured outputs answers in free text, read by the step's own parser."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from jsonschema import Draft202012Validator

OutputKind = Literal["json_schema", "choice", "regex"]
ANSWER_FIELD = "answer"


class ParseError(ValueError):
    """A model answer that does not have the expected form; stored as status parse_error."""


class OutputError(ParseError):
    """An answer that does not have the shape its output spec asks for."""


@dataclass(frozen=True)
class OutputSpec:
    """`name` identifies the shape (it is part of the ledger key, with the shape itself); `read` turns the
    checked value (the JSON value, the chosen option, the matched text) into what the step's free-text parser
    returns, so the step's columns do not depend on how the answer was obtained."""

    name: str
    kind: OutputKind
    schema: Mapping[str, Any] | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    read: Callable[[Any], Any] = field(default=lambda value: value, compare=False, hash=False)

    def __post_init__(self) -> None:
        given = {"json_schema": self.schema is not None, "choice": bool(self.choices), "regex": bool(self.pattern)}
        if not given[self.kind] or sum(given.values()) != 1:
            raise ValueError(f"output spec {self.name}: a {self.kind} spec takes exactly its own field")
        if self.schema is not None:
            Draft202012Validator.check_schema(dict(self.schema))
        if self.pattern is not None:
            re.compile(self.pattern)

    def key(self) -> dict[str, Any]:
        """What the ledger key holds of this spec: a changed shape is a new question."""
        shape = {"json_schema": self.schema, "choice": list(self.choices), "regex": self.pattern}[self.kind]
        return {"name": self.name, "kind": self.kind, "shape": shape}

    def as_json_schema(self) -> dict[str, Any]:
        """The spec as one JSON schema: a choice or a regex becomes an object with one `answer` string (for
        endpoints that take only JSON schemas); `unwrap` takes the answer back out."""
        if self.kind == "json_schema":
            return dict(self.schema or {})
        if self.kind == "choice":
            answer = {"type": "string", "enum": list(self.choices)}
        else:
            answer = {"type": "string", "pattern": f"^(?:{self.pattern})$"}
        return {
            "type": "object",
            "properties": {ANSWER_FIELD: answer},
            "required": [ANSWER_FIELD],
            "additionalProperties": False,
        }

    def unwrap(self, text: str) -> str:
        """The answer text from an answer to `as_json_schema()` (unchanged for a JSON-schema spec)."""
        if self.kind == "json_schema":
            return text
        value = _json_value(text)
        if not isinstance(value, dict) or not isinstance(value.get(ANSWER_FIELD), str):
            raise OutputError(f"expected a JSON object with a string {ANSWER_FIELD!r}, got {text[:120]!r}")
        return value[ANSWER_FIELD]

    def check(self, text: str) -> Any:
        """The value an answer holds, or OutputError saying why it does not fit."""
        if self.kind == "choice":
            answer = text.strip()
            if answer not in self.choices:
                raise OutputError(f"{answer[:80]!r} is not one of {list(self.choices)}")
            return answer
        if self.kind == "regex":
            if re.fullmatch(self.pattern or "", text) is None:
                raise OutputError(f"{text[:80]!r} does not match {self.pattern!r}")
            return text
        value = _json_value(text)
        problems = sorted(Draft202012Validator(dict(self.schema or {})).iter_errors(value), key=lambda e: e.path)
        if problems:
            where = "/".join(map(str, problems[0].absolute_path)) or "the answer"
            raise OutputError(f"{where}: {problems[0].message[:160]}")
        return value

    def min_new_tokens(self) -> int:
        """A budget below which even the shortest answer of this shape cannot be written whole (a character
        counted as a token): for a choice or regex, the `{"answer": …}` object some endpoints need."""
        if self.kind == "json_schema":
            return 1
        longest = max(self.choices, key=len) if self.choices else ""
        return len(json.dumps({ANSWER_FIELD: longest}, ensure_ascii=False)) + 4

    def instruction(self) -> str:
        """The sentence added to a prompt for endpoints that enforce only 'some JSON object' (json_object
        mode): the schema the answer must follow."""
        return "\n\nAnswer with one JSON object that follows this JSON schema:\n" + json.dumps(
            self.as_json_schema(), ensure_ascii=False
        )


def _json_value(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_not_json_constant)
    except json.JSONDecodeError as exc:
        raise OutputError(f"not JSON ({exc.msg} at character {exc.pos}): {text[:120]!r}") from None


def _not_json_constant(name: str) -> Any:
    """Python's json reads NaN and Infinity, which JSON has not (and a range check lets NaN through)."""
    raise OutputError(f"not JSON: {name} is not a JSON number")


def choice_spec(name: str, choices: tuple[str, ...], read: Callable[[str], Any] = lambda value: value) -> OutputSpec:
    return OutputSpec(name, "choice", choices=choices, read=read)


def object_spec(
    name: str, properties: Mapping[str, Any], read: Callable[[dict[str, Any]], Any], required: tuple[str, ...] = ()
) -> OutputSpec:
    """A JSON object with these properties (all required unless `required` names some), nothing else."""
    schema = {
        "type": "object",
        "properties": dict(properties),
        "required": list(required or properties),
        "additionalProperties": False,
    }
    return OutputSpec(name, "json_schema", schema=schema, read=read)
