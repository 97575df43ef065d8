"""What every backend takes and returns."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol

from madef_assets.llm.structured import OutputSpec

CallKind = Literal["generate", "option_logprobs", "perplexity"]
Status = Literal["ok", "error", "parse_error", "refused"]
FINAL_STATUSES = ("ok", "parse_error", "refused")


@dataclass(frozen=True)
class GenerationParams:
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, params: dict[str, Any]) -> GenerationParams:
        known = {k: v for k, v in params.items() if k in cls.__dataclass_fields__}
        if "stop" in known:
            known["stop"] = tuple(known["stop"])
        return cls(**known)

    def with_changes(self, **changes: Any) -> GenerationParams:
        """A copy with the given fields changed; a None value keeps the field (an unset config key)."""
        values = {k: (tuple(v) if k == "stop" else v) for k, v in changes.items() if v is not None}
        return replace(self, **values)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["stop"] = list(self.stop)
        return values


@dataclass
class Completion:
    """One backend answer. `output` is text for generate, a JSON-able value otherwise."""

    output: Any = None
    status: Status = "ok"
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def failed(cls, error: str, latency_s: float | None = None) -> Completion:
        return cls(status="error", error=error, latency_s=latency_s)


Indexed = Iterator[tuple[int, Completion]]


class Backend(Protocol):
    """Each method yields (index into the input, Completion) as results become ready, in any order."""

    name: str

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this model for caching: id, revision or file hash, template use."""

    def generate(self, prompts: Sequence[str], params: GenerationParams, output: OutputSpec | None = None) -> Indexed:
        """`output`: the shape to enforce at decoding (llm/structured.py); given only when the role's
        `structured_outputs` setting is not `none`."""

    def option_logprobs(self, prompts: Sequence[str], options: Sequence[str]) -> Indexed: ...

    def perplexity(self, texts: Sequence[str]) -> Indexed: ...

    def close(self) -> None: ...
