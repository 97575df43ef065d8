"""Profile configuration: one YAML file per profile under `config/`.

A profile chooses data paths, sample sizes, limits and the model for each LLM role. Environment
variables override the profile choice and the storage paths:

- `MADEF_PROFILE`: a profile name (`demo`, `production`) or a path to a YAML file;
- `MADEF_STATE_DIR`: the folder for the DuckDB file, converted models, reports and Dagster's state;
- `MADEF_DUCKDB_PATH`: the DuckDB file itself;
- `MADEF_MODELS_DIR`: where bundled and GGUF models are converted (default `<state>/models`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "config"
SQL_DIR = PROJECT_ROOT / "dbt_like_sql"
PATH_OPTIONS = ("answers",)
ROLES = ("labeler", "attacker", "responder", "judge", "scorer", "trainee")
PANEL_ROLES = ("judge",)
# The generation routes of §3.5 (madef_assets/defs/diversity/routes.py), in the order deficits are split.
AUGMENT_ROUTES = ("keyword_fewshot", "derived_question", "attack_rewrite")


class ConfigError(ValueError):
    """A profile file is missing a key or has a value of the wrong kind."""


@dataclass(frozen=True)
class SourceFile:
    path: Path
    config_key: str
    lang: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceConfig:
    name: str
    reader: str
    files: tuple[SourceFile, ...]
    known_categories: tuple[str, ...] | None
    columns: dict[str, str]
    description: str


@dataclass(frozen=True)
class RoleConfig:
    """One role's model. The judge may be a panel (`models.judge` a list): this is its first member, the
    others are `panel`; label verdicts are the panel's majority, numeric scores the first member's."""

    role: str
    backend: str
    model: str
    params: dict[str, Any]
    options: dict[str, Any]
    panel: tuple[RoleConfig, ...] = ()


@dataclass(frozen=True)
class SelectionConfig:
    perplexity_quantile: float = 0.9
    min_response_safety: float = 0.5
    # A lone candidate (scored alone, `scored_as: single`) has no second answer to be measured against: its own
    # threshold (None: min_response_safety); selection ranks each kind's scores apart.
    min_single_response_safety: float | None = None
    max_instruction_safety: float = 0.8
    per_category_cap: int = 100000


@dataclass(frozen=True)
class MethodConfig:
    """The data-construction method: which sources play which part, sizes, thresholds, gates."""

    attack_sources: tuple[str, ...] = ()
    train_sources: tuple[str, ...] = ()
    eval_sources: tuple[str, ...] = ()
    general_sources: tuple[str, ...] = ()
    label_sample_per_source: int | None = None
    seed: int = 0
    quota_per_category: int = 1000
    # Generation fills each category's deficit to the quota, split over these routes (defs/diversity/routes.py);
    # augment_max_per_category caps the new prompts planned per category (None: the whole deficit).
    augment_routes: tuple[str, ...] = AUGMENT_ROUTES
    augment_max_per_category: int | None = None
    near_duplicate_threshold: float = 0.8
    minhash_permutations: int = 128
    max_parse_failure_rate: float = 0.2
    max_refusal_rate: float = 0.1  # refused or moderated answers, gated apart from parse failures
    rejection_sampling: bool = True  # generated prompts kept only when labeled with their category
    general_sample_size: int = 40000
    general_zh_share: float | None = None  # Chinese share of the general sample (None: languages in proportion)
    sft_total: int | None = None  # target rows of the SFT set, general sample included (None: all that pass)
    contamination_zh_chars: int = 13
    contamination_en_words: int = 8
    # Remove SFT rows that share a long n-gram with an evaluation prompt (and count them) before the gate;
    # false: the gate blocks the whole set instead.
    decontaminate: bool = True
    sft_export_dir: Path | None = None
    sft_formats: tuple[str, ...] = ("alpaca",)
    required_categories: tuple[str, ...] | None = None  # None: all 14; the attack-prompt gate blocks on a missing one
    selection: SelectionConfig = field(default_factory=SelectionConfig)


@dataclass(frozen=True)
class TrainingConfig:
    """LLaMA-Factory fine-tuning: its environment's Python, where checkpoints go, and YAML arguments
    over the paper's defaults (madef_assets/defs/training/llamafactory_config.py)."""

    env_python: Path
    output_dir: Path
    args: dict[str, Any]


@dataclass(frozen=True)
class CandidateConfig:
    """A model under evaluation: a checkpoint asset of this project (`checkpoint:`), or any backend and
    model (a local path, or an OpenAI-compatible endpoint with `base_url`)."""

    name: str
    checkpoint: str | None
    backend: str
    model: str | None
    options: dict[str, Any]


@dataclass(frozen=True)
class EvaluationConfig:
    """Candidates, their generation parameters and each benchmark's data and sample sizes."""

    candidates: tuple[CandidateConfig, ...]
    params: dict[str, Any]
    seed: int
    safetybench: dict[str, Any]
    new_safety: dict[str, Any]
    responsibility: dict[str, Any]
    general: dict[str, Any]
    over_refusal: dict[str, Any]
    review_dir: Path
    report_dir: Path


@dataclass(frozen=True)
class AutomationConfig:
    """Sensors (source files → new data versions → eager re-materialization) and schedules."""

    sensors_running: bool = True
    source_poll_seconds: int = 60
    evaluate_cron: str = "0 2 * * *"
    evaluate_enabled: bool = False
    rebuild_sft_cron: str = "0 3 * * 0"
    rebuild_sft_enabled: bool = False
    timezone: str = "UTC"


QUALIFICATION_GATES = ("block", "warn")
DEFAULT_LABELER_SOURCES = ("s_eval", "xsafety")
DEFAULT_PKU_GOLD = "data/pku_saferlhf/preference_train.json"


@dataclass(frozen=True)
class QualificationConfig:
    """The judge measured against human labels (XSTest's answers, `gold_dir`; PKU-SafeRLHF's pairs,
    `pku_gold_file`) before its scores are used: `per_model` XSTest answers per answering model (null: all
    450 each) and `pku_pairs` pairs (null: all), seeded; the gate needs Cohen's kappa >= `min_kappa` on
    the refusal task and at most `max_uncertain_rate` unparsed answers. `gate: warn` reports a judge that
    does not qualify without stopping what depends on it (say why in `gate_reason`).

    The labeler is measured against the source categories of `labeler_sources` (configured sources only;
    null: those of s_eval and xsafety that are configured; empty: no labeler qualification is built and
    intent_labels waits for none), `labeler_per_category` prompts per language and category (null: all),
    seeded with `seed`; its gate needs kappa >= `labeler_min_kappa` over all languages and at most
    `labeler_max_uncertain_rate` prompts without a category; `gate` and `gate_reason` apply to both."""

    gold_dir: Path
    pku_gold_file: Path
    per_model: int | None = None
    pku_pairs: int | None = None
    seed: int = 0
    n_resamples: int = 1000
    min_kappa: float = 0.6
    max_uncertain_rate: float = 0.1
    gate: str = "block"
    gate_reason: str = ""
    labeler_sources: tuple[str, ...] = DEFAULT_LABELER_SOURCES
    labeler_per_category: int | None = None
    labeler_min_kappa: float = 0.6
    labeler_max_uncertain_rate: float = 0.1


GPU_RELEASE_POLICIES = ("per_asset", "per_run")


@dataclass(frozen=True)
class GpuConfig:
    """When loaded local models give their memory back: `per_asset` closes every engine an asset loaded
    when the asset ends; `per_run` keeps them for the next asset of the run. Either way every engine is
    closed before training, which starts only when the GPU has `training_min_free_fraction` free."""

    release: str = "per_run"
    training_min_free_fraction: float = 0.9


@dataclass(frozen=True)
class Settings:
    profile: str
    profile_path: Path
    state_dir: Path
    duckdb_path: Path
    models_dir: Path
    max_prompt_chars: int
    max_quarantine_share: float
    sources: dict[str, SourceConfig]
    roles: dict[str, RoleConfig]
    method: MethodConfig
    training: TrainingConfig
    evaluation: EvaluationConfig
    automation: AutomationConfig
    executor: str
    gpu: GpuConfig
    qualification: QualificationConfig
    taxonomy_path: Path
    raw: dict[str, Any]


def _resolve(path: str | os.PathLike, base: Path) -> Path:
    candidate = Path(os.path.expandvars(os.path.expanduser(str(path))))
    # abspath, not resolve: a virtual environment's bin/python is a symlink that must stay one.
    return Path(os.path.abspath(candidate if candidate.is_absolute() else base / candidate))


def _require(mapping: dict, key: str, where: str) -> Any:
    if key not in mapping:
        raise ConfigError(f"{where}: missing key '{key}'")
    return mapping[key]


def profile_path(profile: str) -> Path:
    candidate = Path(profile)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate.resolve()
    path = CONFIG_DIR / f"{profile}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"MADEF_PROFILE={profile!r}: no {path}; known profiles: {known}")
    return path


def parse_settings(raw: dict[str, Any], path: Path, env: dict[str, str]) -> Settings:
    from madef_assets.profile_schema import profile_problems

    problems = profile_problems(raw)
    if problems:
        raise ConfigError(f"{path}:\n  " + "\n  ".join(problems))
    base = PROJECT_ROOT
    where = str(path)
    state_dir = _resolve(env.get("MADEF_STATE_DIR") or raw.get("state_dir", "state"), base)
    duckdb_path = _resolve(
        env.get("MADEF_DUCKDB_PATH") or raw.get("duckdb_path") or state_dir / "madef.duckdb", base
    )
    models_dir = _resolve(env.get("MADEF_MODELS_DIR") or raw.get("models_dir") or state_dir / "models", base)
    ingest = raw.get("ingest", {})
    sources = {}
    for name, spec in (raw.get("sources") or {}).items():
        key = f"sources.{name}"
        files = []
        for index, file_spec in enumerate(_require(spec, "files", key)):
            if isinstance(file_spec, str):
                file_spec = {"path": file_spec}
            file_key = f"{key}.files[{index}]"
            extra = {
                k: (_resolve(v, base) if k in PATH_OPTIONS else v)
                for k, v in file_spec.items()
                if k not in ("path", "lang")
            }
            files.append(
                SourceFile(
                    path=_resolve(_require(file_spec, "path", file_key), base),
                    config_key=file_key,
                    lang=file_spec.get("lang"),
                    options=extra,
                )
            )
        categories = spec.get("known_categories")
        sources[name] = SourceConfig(
            name=name,
            reader=_require(spec, "reader", key),
            files=tuple(files),
            known_categories=tuple(categories) if categories is not None else None,
            columns=dict(spec.get("columns") or {}),
            description=spec.get("description", ""),
        )
    roles = {}
    models = _require(raw, "models", where)
    for role in ROLES:
        spec = _require(models, role, f"{where}: models")
        if isinstance(spec, list):
            if role not in PANEL_ROLES or not spec:
                raise ConfigError(f"models.{role}: only {', '.join(PANEL_ROLES)} may list several models (a panel), "
                                  "and a panel names at least one")
            members = [parse_role(role, member, f"models.{role}[{index}]") for index, member in enumerate(spec)]
            roles[role] = replace(members[0], panel=tuple(members[1:]))
        else:
            roles[role] = parse_role(role, spec, f"models.{role}")
    method = parse_method(raw.get("method") or {}, set(sources), state_dir, base)
    return Settings(
        profile=raw.get("profile", path.stem),
        profile_path=path,
        state_dir=state_dir,
        duckdb_path=duckdb_path,
        models_dir=models_dir,
        max_prompt_chars=int(ingest.get("max_prompt_chars", 8000)),
        max_quarantine_share=float(ingest.get("max_quarantine_share", 0.05)),
        sources=sources,
        roles=roles,
        method=method,
        training=parse_training(raw.get("training") or {}, state_dir, base, env),
        evaluation=parse_evaluation(raw.get("evaluation") or {}, set(sources), state_dir, base),
        automation=parse_automation(raw.get("automation") or {}),
        executor=parse_executor(raw.get("execution") or {}),
        gpu=parse_gpu(raw.get("gpu") or {}),
        qualification=parse_qualification(raw.get("qualification") or {}, base, set(sources)),
        taxonomy_path=_resolve(raw.get("taxonomy", "config/taxonomy.yaml"), base),
        raw=raw,
    )


def parse_method(raw: dict[str, Any], source_names: set[str], state_dir: Path, base: Path) -> MethodConfig:
    if "augment_per_route" in raw:
        raise ConfigError("method.augment_per_route: replaced by augment_routes and augment_max_per_category "
                          "(generation fills each category's deficit to quota_per_category)")
    known = MethodConfig.__dataclass_fields__
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"method: unknown keys {sorted(unknown)}")
    values = dict(raw)
    for key in ("attack_sources", "train_sources", "eval_sources", "general_sources", "sft_formats", "augment_routes"):
        if key in values:
            values[key] = tuple(values[key] or ())
    if values.get("required_categories") is not None:
        values["required_categories"] = tuple(values["required_categories"])
    for key in ("attack_sources", "train_sources", "eval_sources", "general_sources"):
        missing = set(values.get(key, ())) - source_names
        if missing:
            raise ConfigError(f"method.{key}: {sorted(missing)} are not configured under sources")
    overlap = set(values.get("train_sources", ())) & set(values.get("eval_sources", ()))
    if overlap:
        raise ConfigError(f"method: {sorted(overlap)} cannot be both train_sources and eval_sources")
    values["sft_export_dir"] = _resolve(values.get("sft_export_dir") or state_dir / "sft_dataset", base)
    selection = values.pop("selection", None) or {}
    unknown = set(selection) - set(SelectionConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"method.selection: unknown keys {sorted(unknown)}")
    config = MethodConfig(**values, selection=SelectionConfig(**selection))
    check_volume(config)
    return config


def check_volume(method: MethodConfig) -> None:
    """The volume settings (§3.5) make sense together: known routes, a share in [0, 1], a total that holds the
    general sample."""
    unknown = set(method.augment_routes) - set(AUGMENT_ROUTES)
    if unknown or not method.augment_routes:
        raise ConfigError(f"method.augment_routes: one or more of {list(AUGMENT_ROUTES)}, "
                          f"got {list(method.augment_routes)}")
    if method.general_zh_share is not None and not 0 <= method.general_zh_share <= 1:
        raise ConfigError(f"method.general_zh_share must be between 0 and 1 or null, got {method.general_zh_share}")
    if method.sft_total is not None and method.sft_total < method.general_sample_size:
        raise ConfigError(f"method.sft_total ({method.sft_total}) must hold general_sample_size "
                          f"({method.general_sample_size})")


def parse_training(raw: dict[str, Any], state_dir: Path, base: Path, env: dict[str, str]) -> TrainingConfig:
    unknown = set(raw) - {"env_python", "output_dir", "args"}
    if unknown:
        raise ConfigError(f"training: unknown keys {sorted(unknown)}")
    return TrainingConfig(
        env_python=_resolve(env.get("MADEF_TRAIN_PYTHON") or raw.get("env_python") or ".venv-train/bin/python", base),
        output_dir=_resolve(raw.get("output_dir") or state_dir / "checkpoints" / "finetuned", base),
        args=dict(raw.get("args") or {}),
    )


def parse_gpu(raw: dict[str, Any]) -> GpuConfig:
    unknown = set(raw) - set(GpuConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"gpu: unknown keys {sorted(unknown)}; allowed: {sorted(GpuConfig.__dataclass_fields__)}")
    config = GpuConfig(**raw)
    if config.release not in GPU_RELEASE_POLICIES:
        raise ConfigError(f"gpu.release must be one of {GPU_RELEASE_POLICIES}, got {config.release!r}")
    if not 0 <= config.training_min_free_fraction <= 1:
        raise ConfigError(f"gpu.training_min_free_fraction must be between 0 and 1, got {config.training_min_free_fraction}")
    return config


def parse_role(role: str, spec: dict[str, Any], where: str) -> RoleConfig:
    return RoleConfig(
        role=role,
        backend=_require(spec, "backend", where),
        model=str(_require(spec, "model", where)),
        params=dict(spec.get("params") or {}),
        options={k: v for k, v in spec.items() if k not in ("backend", "model", "params")},
    )


def parse_qualification(raw: dict[str, Any], base: Path, sources: set[str]) -> QualificationConfig:
    allowed = set(QualificationConfig.__dataclass_fields__)
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigError(f"qualification: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    labeler_sources = raw.get("labeler_sources")
    if labeler_sources is None:
        labeler_sources = [name for name in DEFAULT_LABELER_SOURCES if name in sources]
    elif set(labeler_sources) - sources:
        raise ConfigError(f"qualification.labeler_sources: {sorted(set(labeler_sources) - sources)} "
                          "are not configured sources")
    config = QualificationConfig(**{**raw, "gold_dir": _resolve(raw.get("gold_dir") or "data/xstest", base),
                                    "pku_gold_file": _resolve(raw.get("pku_gold_file") or DEFAULT_PKU_GOLD, base),
                                    "labeler_sources": tuple(labeler_sources)})
    pairs = config.pku_pairs
    if pairs is not None and (isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1):
        raise ConfigError(f"qualification.pku_pairs must be a positive integer or null (all pairs), got {pairs!r}")
    if config.gate not in QUALIFICATION_GATES:
        raise ConfigError(f"qualification.gate must be one of {QUALIFICATION_GATES}, got {config.gate!r}")
    if config.gate == "warn" and not config.gate_reason.strip():
        raise ConfigError("qualification.gate: warn needs a gate_reason saying why an unqualified judge or labeler "
                          "may be used")
    return config


EXECUTORS = ("in_process", "multiprocess", "k8s", "celery")


def parse_executor(raw: dict[str, Any]) -> str:
    if set(raw) - {"executor"}:
        raise ConfigError(f"execution: unknown keys {sorted(set(raw) - {'executor'})}")
    executor = raw.get("executor", "in_process")
    if executor not in EXECUTORS:
        raise ConfigError(f"execution.executor: one of {EXECUTORS}, got {executor!r}")
    return executor


def parse_automation(raw: dict[str, Any]) -> AutomationConfig:
    unknown = set(raw) - {"sensors_running", "source_poll_seconds", "schedules", "timezone"}
    if unknown:
        raise ConfigError(f"automation: unknown keys {sorted(unknown)}")
    values = {k: v for k, v in raw.items() if k != "schedules"}
    for name, prefix in (("evaluate_candidates", "evaluate"), ("rebuild_sft_dataset", "rebuild_sft")):
        spec = (raw.get("schedules") or {}).get(name) or {}
        if set(spec) - {"cron", "enabled"}:
            raise ConfigError(f"automation.schedules.{name}: unknown keys {sorted(set(spec) - {'cron', 'enabled'})}")
        if "cron" in spec:
            values[f"{prefix}_cron"] = str(spec["cron"])
        if "enabled" in spec:
            values[f"{prefix}_enabled"] = bool(spec["enabled"])
    unknown_schedules = set(raw.get("schedules") or {}) - {"evaluate_candidates", "rebuild_sft_dataset"}
    if unknown_schedules:
        raise ConfigError(f"automation.schedules: unknown schedules {sorted(unknown_schedules)}")
    return AutomationConfig(**values)


CHECKPOINT_ASSETS = ("base_model_checkpoint", "finetuned_checkpoint")
EVALUATION_SECTIONS = {
    "safetybench": {"sources", "source", "per_category", "answer_modes", "dev_file", "max_new_tokens"},
    "new_safety": {"sources", "per_category", "max_new_tokens"},
    "responsibility": {"prompts_source", "per_domain", "mcq_source"},
    "general": {"data_dir", "gsm8k", "mmlu", "cmmlu", "ceval", "humaneval"},
    "over_refusal": {"source", "per_type", "max_new_tokens"},
}


def parse_evaluation(raw: dict[str, Any], source_names: set[str], state_dir: Path, base: Path) -> EvaluationConfig:
    unknown = set(raw) - {"candidates", "params", "seed", "review_dir", "report_dir", *EVALUATION_SECTIONS}
    if unknown:
        raise ConfigError(f"evaluation: unknown keys {sorted(unknown)}")
    candidates = []
    for name, spec in (raw.get("candidates") or {}).items():
        where = f"evaluation.candidates.{name}"
        if not str(name).replace("_", "").isalnum():
            raise ConfigError(f"{where}: a candidate name is letters, digits and _ only")
        checkpoint = spec.get("checkpoint")
        if checkpoint is not None and checkpoint not in CHECKPOINT_ASSETS:
            raise ConfigError(f"{where}.checkpoint: one of {CHECKPOINT_ASSETS}, got {checkpoint!r}")
        if checkpoint is None and "model" not in spec:
            raise ConfigError(f"{where}: needs either checkpoint or backend + model")
        candidates.append(CandidateConfig(
            name=str(name), checkpoint=checkpoint, backend=spec.get("backend", "transformers"),
            model=None if spec.get("model") is None else str(spec["model"]),
            options={k: v for k, v in spec.items() if k not in ("checkpoint", "backend", "model")},
        ))
    sections = {}
    for section, keys in EVALUATION_SECTIONS.items():
        values = dict(raw.get(section) or {})
        if set(values) - keys:
            raise ConfigError(f"evaluation.{section}: unknown keys {sorted(set(values) - keys)}")
        sections[section] = values
    bench = sections["safetybench"]
    if "source" in bench and "sources" in bench:
        raise ConfigError("evaluation.safetybench: give either source or sources (a list: one source per language)")
    if "source" in bench:  # the older single-source form
        bench["sources"] = bench.pop("source")
    if "sources" in bench:
        bench["sources"] = [bench["sources"]] if isinstance(bench["sources"], str) else list(bench["sources"] or [])
        if not bench["sources"]:
            raise ConfigError("evaluation.safetybench.sources: name at least one source (one per language)")
    for key, names in (("new_safety.sources", sections["new_safety"].get("sources", [])),
                       ("safetybench.sources", bench.get("sources", [])),
                       ("responsibility.prompts_source", [sections["responsibility"].get("prompts_source")]),
                       ("responsibility.mcq_source", [sections["responsibility"].get("mcq_source")]),
                       ("over_refusal.source", [sections["over_refusal"].get("source")])):
        missing = {n for n in names if n is not None} - source_names
        if missing:
            raise ConfigError(f"evaluation.{key}: {sorted(missing)} are not configured under sources")
    general = sections["general"]
    general["data_dir"] = _resolve(general.get("data_dir", "data/general_eval"), base)
    if isinstance(bench.get("dev_file"), dict):  # one dev file per language: {zh: dev_zh.json, en: dev_en.json}
        bench["dev_file"] = {str(lang): _resolve(path, base) for lang, path in bench["dev_file"].items()}
    elif bench.get("dev_file"):
        bench["dev_file"] = _resolve(bench["dev_file"], base)
    return EvaluationConfig(
        candidates=tuple(candidates),
        params=dict(raw.get("params") or {}),
        seed=int(raw.get("seed", 0)),
        **sections,
        review_dir=_resolve(raw.get("review_dir") or state_dir / "review", base),
        report_dir=_resolve(raw.get("report_dir") or state_dir / "reports" / "evaluation", base),
    )


def load_settings(profile: str | None = None, env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    path = profile_path(profile or env.get("MADEF_PROFILE") or "demo")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return parse_settings(raw, path, env)


@lru_cache(maxsize=1)
def current_settings() -> Settings:
    """The settings of this process (profile and paths from the environment), read once."""
    return load_settings()
