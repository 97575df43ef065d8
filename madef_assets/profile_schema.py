"""The profile's schema: every key known, every role option checked against the backend that takes it.

Role and candidate options are read off the backends' own constructors (their parameters and types), so
a backend that gains an option is configurable at once and a misspelt one (`concurency`) is an error
that names the key and the allowed ones, instead of being dropped.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from madef_assets.llm.types import GenerationParams
from madef_assets.project import PANEL_ROLES
from madef_assets.secret_hygiene import openai_endpoint_problems

TOP_LEVEL = (
    "profile",
    "state_dir",
    "duckdb_path",
    "ducklake_data_path",
    "duckdb_lock_wait_seconds",
    "models_dir",
    "ingest",
    "sources",
    "method",
    "training",
    "execution",
    "automation",
    "evaluation",
    "models",
    "gpu",
    "sandbox",
    "taxonomy",
    "qualification",
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class Params(Strict):
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    seed: int | None = None
    stop: list[str] | None = None


class Ingest(Strict):
    max_prompt_chars: int = Field(8000, gt=0)
    max_quarantine_share: float = Field(0.05, ge=0, le=1)
    max_file_bytes: int = Field(1 << 30, gt=0)  # each input file, and a zip archive's members together


assert set(Params.model_fields) == set(GenerationParams.__dataclass_fields__), (
    "Params must list GenerationParams' fields"
)


def _constructor_fields(cls: type, skip: set[str]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls.__init__)
    fields = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        fields[name] = (hints.get(name, Any), ... if parameter.default is parameter.empty else parameter.default)
    return fields


def _role_models() -> dict[str, type[BaseModel]]:
    from madef_assets.llm.openai_backend import OpenAIBackend
    from madef_assets.llm.transformers_backend import TransformersBackend
    from madef_assets.llm.vllm_backend import VLLMBackend

    common = {"model": (str, ...), "params": (Params, Params())}
    return {
        name: create_model(
            f"{name.capitalize()}Role",
            __base__=Strict,
            backend=(Literal[name], ...),
            **common,
            **_constructor_fields(cls, skip),
        )
        for name, cls, skip in (
            ("openai", OpenAIBackend, {"self", "model"}),
            ("transformers", TransformersBackend, {"self", "model_path", "model_spec"}),
            ("vllm", VLLMBackend, {"self", "model_path", "model_spec"}),
        )
    }


def _candidate_models(roles: dict[str, type[BaseModel]]) -> dict[str, type[BaseModel]]:
    extra = {"checkpoint": (str | None, None), "model": (str | None, None)}
    models = {
        name: create_model(f"{name.capitalize()}Candidate", __base__=role, **extra) for name, role in roles.items()
    }
    models["openai"] = create_model(
        "OpenaiCandidate", __base__=models["openai"], raw_api=(Literal["completions", "chat", "none"] | None, None)
    )
    return models


def _format(error: dict, models: dict[str, type[BaseModel]] | None, where: str) -> str:
    location = [str(part) for part in error["loc"] if str(part) not in (models or {})]
    key = ".".join([where, *location]) if where else ".".join(location)
    if error["type"] == "extra_forbidden":
        tag = next((str(part) for part in error["loc"] if models and str(part) in models), None)
        allowed = sorted(models[tag].model_fields) if tag else None
        return f"{key}: unknown key{'; allowed: ' + ', '.join(allowed) if allowed else ''}"
    return f"{key}: {error['msg']}"


def _check(
    model: type[BaseModel] | Any, value: Any, where: str, models: dict[str, type[BaseModel]] | None = None
) -> list[str]:
    try:
        (model.model_validate if isinstance(model, type) else model.validate_python)(value)
    except ValidationError as exc:
        return [_format(error, models, where) for error in exc.errors()]
    return []


def _endpoint_problems(spec: dict[str, Any], where: str) -> list[str]:
    """A served model's base_url checked before any run: no credentials in it, no key over plain http."""
    if spec.get("backend") != "openai" or "base_url" not in spec:
        return []
    return [f"{where}.base_url: {problem}" for problem in openai_endpoint_problems(spec)]


def profile_problems(raw: dict[str, Any]) -> list[str]:
    """Every problem with a profile's keys and role/candidate options, each naming the key."""
    from pydantic import TypeAdapter

    problems = [f"{key}: unknown top-level key; allowed: {', '.join(TOP_LEVEL)}" for key in raw if key not in TOP_LEVEL]
    problems += _check(Ingest, raw.get("ingest") or {}, "ingest")
    roles = _role_models()
    role_union = TypeAdapter(typing.Annotated[typing.Union[tuple(roles.values())], Field(discriminator="backend")])
    for name, spec in (raw.get("models") or {}).items():
        if isinstance(spec, list) and name not in PANEL_ROLES:
            problems.append(f"models.{name}: only {', '.join(PANEL_ROLES)} may list several models (a panel)")
            continue
        members = spec if isinstance(spec, list) else [spec]
        for index, member in enumerate(members):
            where = f"models.{name}[{index}]" if members is spec else f"models.{name}"
            if not isinstance(member, dict) or "backend" not in member:
                problems.append(f"{where}: needs backend (openai, transformers or vllm) and model")
                continue
            problems += _check(role_union, member, where, roles)
            problems += _endpoint_problems(member, where)
    candidates = _candidate_models(roles)
    candidate_union = TypeAdapter(
        typing.Annotated[typing.Union[tuple(candidates.values())], Field(discriminator="backend")]
    )
    for name, spec in ((raw.get("evaluation") or {}).get("candidates") or {}).items():
        where = f"evaluation.candidates.{name}"
        if isinstance(spec, dict):
            problems += _check(candidate_union, {"backend": "transformers", **spec}, where, candidates)
            problems += _endpoint_problems(spec, where)
    return problems
