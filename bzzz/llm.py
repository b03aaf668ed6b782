"""A chat model behind an OpenAI-compatible endpoint (Ollama's `/v1`, vLLM, llama.cpp's
server, LM Studio, OpenAI), through the `openai` client: asyncio, cancellable, time-limited.

One client for the agent in the box and for Antennae's chat reasoning. Whatever goes wrong
(the endpoint down or slow, an error answer, an answer that is not what the protocol says) is an
`LlmError` with a line that says what. `openai` is imported by the first `Llm` (some 40 MB):
a node that speaks to no model does not pay for it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    import openai

log = structlog.get_logger(__name__)

API_KEY_CREDENTIAL = "llm-api-key"
RETRIES = 2  # the client's own, for connection errors and 5xx, with backoff


class LlmError(Exception):
    """The model could not answer (down, slow, refused, or spoke nonsense)."""


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it (it may be malformed)


@dataclass(frozen=True)
class Reply:
    content: str
    tool_calls: tuple[ToolCall, ...]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    message: dict[str, Any] = field(default_factory=dict)  # as it goes back into the history


def load_api_key(credentials_dir: Path | None, key_file: str, env: Mapping[str, str]) -> str | None:
    """`llm.api_key_file`, else systemd's credential, else $BZZZ_LLM_API_KEY; None: no key
    (Ollama and most local servers need none)."""
    paths = [Path(key_file)] if key_file else []
    if credentials_dir is not None:
        paths.append(credentials_dir / API_KEY_CREDENTIAL)
    for path in paths:
        if path.is_file() and (key := path.read_text().strip()):
            return key
    return env.get("BZZZ_LLM_API_KEY") or None


class Llm:
    def __init__(self, url: str, api_key: str | None, timeout: float) -> None:
        import openai

        self._openai = openai
        self.url = url.rstrip("/")
        self._client = openai.AsyncOpenAI(
            base_url=self.url,
            api_key=api_key or "none",  # the client insists on one; local servers ignore it
            timeout=timeout,
            max_retries=RETRIES,
        )

    async def close(self) -> None:
        await self._client.close()

    async def models(self) -> list[str]:
        """The models the endpoint serves (GET /models)."""
        try:
            page = await self._client.models.list()
        except self._openai.OpenAIError as exc:
            raise LlmError(f"{self.url}: cannot list models: {_why(exc)}") from None
        return sorted(str(model.id) for model in page.data)

    async def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        json_only: bool = False,
    ) -> Reply:
        """One chat completion. `tools`: OpenAI function tools the model may call."""
        extra: dict[str, Any] = {}
        if tools:
            extra["tools"] = list(tools)
        if json_only:
            extra["response_format"] = {"type": "json_object"}
        try:
            answer = await self._client.chat.completions.create(
                model=model,
                messages=list(messages),  # type: ignore[arg-type]
                **extra,
            )
        except self._openai.OpenAIError as exc:
            raise LlmError(f"{self.url}: {_why(exc)}") from None
        if not answer.choices:
            raise LlmError(f"{self.url}: an answer without choices")
        choice = answer.choices[0]
        message = choice.message
        calls = tuple(
            ToolCall(call.id, call.function.name, call.function.arguments or "")
            for call in (message.tool_calls or ())
            if call.type == "function"
        )
        history: dict[str, Any] = {"role": "assistant", "content": message.content or ""}
        if calls:
            history["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in calls
            ]
        usage = answer.usage
        return Reply(
            content=message.content or "",
            tool_calls=calls,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=str(choice.finish_reason or ""),
            message=history,
        )


def json_object(text: str) -> dict[str, Any]:
    """The JSON object in a model's answer (models wrap JSON in prose or code fences)."""
    start, end = text.find("{"), text.rfind("}")
    if start == -1 or end < start:
        raise LlmError("no JSON object in the answer")
    try:
        value = json.loads(text[start : end + 1])
    except ValueError as exc:
        raise LlmError(f"unreadable JSON in the answer: {exc}") from None
    if not isinstance(value, dict):
        raise LlmError("the answer is not a JSON object")
    return value


def _why(exc: openai.OpenAIError) -> str:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot connect ({exc.__cause__ or exc})"[:200]
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {str(exc.message)[:200]}"
    return f"{type(exc).__name__}: {exc}"[:200]
