"""A scripted model endpoint that speaks the real chat-completions protocol over HTTP
(`POST /v1/chat/completions`, `GET /v1/models`), as Ollama's `/v1`, vLLM, llama.cpp's server
and OpenAI do: tool calls, usage counts, error answers, slow answers. No weights: each request
is answered by the next step of a script (or by a function of the request), so a test says
exactly what "the model" does, and reads back every request it was sent.

A step is one of:
- a string: an assistant message with that content;
- `call(name, **arguments)` or a list of them: an assistant message with tool calls;
- `raw_call(name, text)`: a tool call whose arguments are `text` as is (malformed, say);
- `Error(status)`: an HTTP error answer; `Slow(seconds, step)`: the step, late;
  `Costly(prompt_tokens, completion_tokens, step)`: the step, with that usage.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Step = Any


@dataclass(frozen=True)
class Error:
    status: int
    message: str = "the model is not available"


@dataclass(frozen=True)
class Slow:
    seconds: float
    step: Step


@dataclass(frozen=True)
class Costly:
    """The step, reporting this many tokens used."""

    prompt_tokens: int
    completion_tokens: int
    step: Step


_ids = itertools.count(1)


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return raw_call(name, json.dumps(arguments))


def raw_call(name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": f"call_{next(_ids)}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


class ScriptedModel:
    def __init__(
        self,
        script: list[Step] | Callable[[dict[str, Any]], Step] = (),  # type: ignore[assignment]
        models: tuple[str, ...] = ("coder-7b",),
        usage: tuple[int, int] = (100, 20),
    ) -> None:
        self.script = script if callable(script) else list(script)
        self.models = list(models)
        self.usage = usage
        self.requests: list[dict[str, Any]] = []
        self.up = True
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if not outer.up:
                    return outer._send(self, 503, {"error": {"message": "down"}})
                if self.path.rstrip("/").endswith("/models"):
                    data = [{"id": m, "object": "model", "owned_by": "test"} for m in outer.models]
                    return outer._send(self, 200, {"object": "list", "data": data})
                outer._send(self, 404, {"error": {"message": "no such route"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not outer.up:
                    return outer._send(self, 503, {"error": {"message": "down"}})
                outer.requests.append(body)
                outer._answer(self, outer._next(body), body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> ScriptedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next(self, request: dict[str, Any]) -> Step:
        if callable(self.script):
            return self.script(request)
        return self.script.pop(0) if self.script else "I have nothing more to say."

    def _answer(self, handler: BaseHTTPRequestHandler, step: Step, request: dict[str, Any]) -> None:
        if isinstance(step, Slow):
            self._stop.wait(step.seconds)
            step = step.step
        prompt, completion = self.usage
        if isinstance(step, Costly):
            prompt, completion, step = step.prompt_tokens, step.completion_tokens, step.step
        if isinstance(step, Error):
            self._send(handler, step.status, {"error": {"message": step.message}})
            return
        message: dict[str, Any] = {"role": "assistant", "content": None}
        if isinstance(step, str):
            message["content"] = step
            finish = "stop"
        else:
            calls = step if isinstance(step, list) else [step]
            message["tool_calls"] = calls
            finish = "tool_calls"
        self._send(
            handler,
            200,
            {
                "id": f"chatcmpl-{next(_ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.get("model", ""),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            },
        )

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(raw)))
            handler.end_headers()
            handler.wfile.write(raw)
        except OSError:
            pass
