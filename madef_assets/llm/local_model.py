"""What the two local-model backends (transformers, vllm) share: chat-template use and fingerprint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from madef_assets.llm.model_files import folder_fingerprint

CHAT_TEMPLATE_MODES = ("auto", "always", "never")


class LocalModel:
    """Mixin for backends that load a checkpoint folder; call `_init_local` once the tokenizer is loaded."""

    model_path: Path
    model_spec: str
    tokenizer: Any
    use_chat_template: bool

    def _init_local(self, model_path: Path, model_spec: str, chat_template: str) -> None:
        if chat_template not in CHAT_TEMPLATE_MODES:
            raise ValueError(f"{model_spec}: chat_template must be one of {CHAT_TEMPLATE_MODES}, got {chat_template!r}")
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if chat_template == "always" and not has_template:
            raise ValueError(f"{model_spec}: chat_template 'always' but the tokenizer has none")
        self.model_path = Path(model_path)
        self.model_spec = model_spec
        self.use_chat_template = has_template if chat_template == "auto" else chat_template == "always"
        self._fingerprint = folder_fingerprint(self.model_path)

    def fingerprint(self) -> dict[str, Any]:
        return {"model": self.model_spec, "hash": self._fingerprint, "chat_template": self.use_chat_template}

    def render(self, prompt: str) -> str:
        """The prompt as the model sees it: wrapped in the chat template when one is used."""
        if not self.use_chat_template:
            return prompt
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
