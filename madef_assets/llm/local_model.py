"""What the two local-model backends (transformers, vllm) share: chat-template use, prompt token ids and
the identity that keys the ledger. Identity and rendering need only the checkpoint folder's files and
its tokenizer, never the weights, so a fully cached run loads no model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from madef_assets.llm.model_files import folder_fingerprint

# What the ledger identity adds for vLLM's answers since it receives madef's token ids: earlier ones
# (text prompts, a chat template's BOS doubled) are not reused from the ledger.
VLLM_IDENTITY = {"prompts": "token_ids"}

CHAT_TEMPLATE_MODES = ("auto", "always", "never")


def folder_has_chat_template(path: Path) -> bool:
    """Whether the tokenizer saved in `path` has a chat template, read from its files the way the
    tokenizer finds its default one: chat_template.jinja, or tokenizer_config.json's chat_template."""
    if (path / "chat_template.jinja").is_file():
        return True
    config = path / "tokenizer_config.json"
    if not config.is_file():
        return False
    return bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))


def uses_chat_template(path: Path, model_spec: str, mode: str) -> bool:
    if mode not in CHAT_TEMPLATE_MODES:
        raise ValueError(f"{model_spec}: chat_template must be one of {CHAT_TEMPLATE_MODES}, got {mode!r}")
    has_template = folder_has_chat_template(path)
    if mode == "always" and not has_template:
        raise ValueError(f"{model_spec}: chat_template 'always' but the tokenizer has none")
    return has_template if mode == "auto" else mode == "always"


def local_identity(model_spec: str, path: Path, chat_template: str = "auto", **extra: str) -> dict[str, Any]:
    """What identifies a local model's answers in the ledger: spec, folder hash, template use (and what a
    backend adds, e.g. vLLM's prompt format)."""
    return {
        "model": model_spec,
        "hash": folder_fingerprint(path),
        "chat_template": uses_chat_template(path, model_spec, chat_template),
        **extra,
    }


class LocalModel:
    """Mixin for backends that load a checkpoint folder; call `_init_local` once the tokenizer is loaded."""

    model_path: Path
    model_spec: str
    tokenizer: Any
    use_chat_template: bool

    identity_extra: dict[str, str] = {}

    def _init_local(self, model_path: Path, model_spec: str, chat_template: str) -> None:
        self.model_path = Path(model_path)
        self.model_spec = model_spec
        self._identity = local_identity(model_spec, self.model_path, chat_template, **self.identity_extra)
        self.use_chat_template = self._identity["chat_template"]
        if folder_has_chat_template(self.model_path) != bool(getattr(self.tokenizer, "chat_template", None)):
            # The ledger key says whether prompts were wrapped; it must agree with what rendering does.
            raise ValueError(
                f"{model_spec}: the folder's files and its tokenizer disagree on whether there is a chat "
                "template (chat_template.jinja / tokenizer_config.json)"
            )

    def fingerprint(self) -> dict[str, Any]:
        return dict(self._identity)

    def render(self, prompt: str) -> str:
        """The prompt as the model sees it: wrapped in the chat template when one is used."""
        if not self.use_chat_template:
            return prompt
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of the rendered prompt. A chat template writes its own BOS token, so the tokenizer
        adds special tokens only to raw prompts: exactly one BOS either way."""
        return self.tokenizer.encode(self.render(prompt), add_special_tokens=not self.use_chat_template)
