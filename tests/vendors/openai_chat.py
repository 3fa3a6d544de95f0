"""A loopback OpenAI chat completions API: what the `llm` provider (the copilot's model) talks to in tests.

Served through `LoopbackServer` (tests/vendors/loopback.py) under /v1, like https://api.openai.com/v1 and the
OpenAI-compatible local servers (llama.cpp server, Ollama, vLLM). Shapes, from the API reference and the openai
SDK's types (src/openai/types/chat/chat_completion_chunk.py, chat_completion.py):

- POST /v1/chat/completions, JSON body. With `stream: true` the answer is server-sent events, one
  `data: {chat.completion.chunk}` per line pair: first the role delta, then content deltas, or for tool calls a
  first delta per call carrying index, id, type and function.name (arguments "") and then argument fragments with
  the index only; then a chunk with an empty delta and the finish_reason ("stop", "tool_calls", "length"); with
  `stream_options.include_usage` every chunk carries `"usage": null` and a last chunk has `"choices": []` and the
  usage; then `data: [DONE]`. Without `stream` the answer is one chat.completion with message and usage.
- GET /v1/models: the list object.
- Errors in OpenAI's body `{"error": {"message", "type", "param", "code"}}`: 401 invalid_api_key when the state
  has a key and the Bearer token differs (the key masked in the message, as OpenAI does), 404 model_not_found, 400
  invalid_request_error for a malformed body (unknown argument, bad messages or tools, stream_options without
  stream). `rate_limited(...)` and `server_error()` make the 429 and 500 faults to queue on the server.

What the model answers is scripted: `state.script` is a queue of `Answer`s, one per chat request (text, tool
calls, both; its own usage or a computed one; `cut_after=n` sends n chunks and then breaks the connection mid
body; `no_finish` ends the stream cleanly but without finish_reason or [DONE]). An empty queue answers 500, so a
test sees an unexpected request. `state.received` keeps every chat request's JSON body and Authorization header.

Computed usage, deterministic: prompt tokens ceil(len(json(messages)) / 4) + ceil(len(json(tools)) / 4),
completion tokens ceil(characters of text and tool-call names and arguments / 4).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from vendors.loopback import Fault

MODELS = ("gpt-4o-mini", "gpt-4o", "llama-3.1-8b-instruct")
CHAT_FIELDS = {"model", "messages", "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls",
               "temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "stop", "seed", "user",
               "response_format", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs",
               "metadata", "store", "reasoning_effort", "service_tier"}
ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass
class Answer:
    """One scripted model answer. `tool_calls`: (name, arguments) pairs, arguments a dict (sent as JSON) or a
    string (sent as is, so a test can send broken JSON); `pieces`: how many fragments each text and each argument
    string is streamed in."""

    text: str = ""
    tool_calls: list[tuple[str, Any]] = field(default_factory=list)
    usage: tuple[int, int] | None = None  # (prompt, completion) tokens; None: computed
    finish_reason: str | None = None  # None: "tool_calls" when there are any, else "stop"
    pieces: int = 3
    cut_after: int | None = None  # chunks sent before the connection breaks
    no_finish: bool = False
    omit_usage: bool = False  # a server that never sends the usage chunk


@dataclass
class ChatState:
    api_key: str | None = None  # None: no key checked (a local server)
    models: tuple[str, ...] = MODELS
    script: deque = field(default_factory=deque)
    received: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, *answers: Answer) -> None:
        with self._lock:
            self.script.extend(answers)

    def _next(self) -> Answer | None:
        with self._lock:
            return self.script.popleft() if self.script else None


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _error(status: int, message: str, type_: str, param: str | None = None, code: str | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(message, type_, param, code), status=status,
                             headers={"x-request-id": "req_" + uuid.uuid4().hex, **(headers or {})})


def rate_limited(retry_after: int = 1) -> Fault:
    """A 429 as OpenAI sends it for requests per minute, with Retry-After."""
    return Fault.status(429, json_body=error_body(
        f"Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try "
        f"again in {retry_after}s.", "requests", None, "rate_limit_exceeded"),
        headers={"Retry-After": str(retry_after), "x-ratelimit-limit-requests": "3",
                 "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": f"{retry_after}s"})


def server_error() -> Fault:
    return Fault.status(500, json_body=error_body("The server had an error while processing your request. Sorry "
                                                  "about that!", "server_error"))


def _mask(key: str) -> str:
    return key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 7 else "*" * len(key)


def _authenticate(state: ChatState, request: web.Request) -> web.Response | None:
    if state.api_key is None:
        return None
    auth = request.headers.get("Authorization", "")
    key = auth[7:].strip() if auth.startswith("Bearer ") else ""
    if not key:
        return _error(401, "You didn't provide an API key. You need to provide your API key in an Authorization "
                           "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                      "invalid_request_error")
    if key != state.api_key:
        return _error(401, f"Incorrect API key provided: {_mask(key)}. You can find your API key at "
                           "https://platform.openai.com/account/api-keys.", "invalid_request_error", None,
                      "invalid_api_key")
    return None


def _invalid(message: str, param: str | None = None, code: str | None = "invalid_value") -> web.Response:
    return _error(400, message, "invalid_request_error", param, code)


def _check(state: ChatState, body: Any) -> web.Response | None:
    if not isinstance(body, dict):
        return _invalid("Invalid type for request body: expected an object.", None, "invalid_type")
    for name in body:
        if name not in CHAT_FIELDS:
            return _error(400, f"Unrecognized request argument supplied: {name}", "invalid_request_error")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if model not in state.models:
        return _error(404, f"The model `{model}` does not exist or you do not have access to it.",
                      "invalid_request_error", None, "model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _invalid("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return _invalid(f"Invalid value for 'messages[{i}].role'.", f"messages[{i}].role")
        if message["role"] != "assistant" and not isinstance(message.get("content"), (str, list)):
            return _invalid(f"Missing required parameter: 'messages[{i}].content'.", f"messages[{i}].content",
                            "missing_required_parameter")
    names = []
    for i, tool in enumerate(body.get("tools") or []):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict) \
                or not isinstance(fn.get("name"), str) or not isinstance(fn.get("parameters", {}), dict):
            return _invalid(f"Invalid value for 'tools[{i}]'.", f"tools[{i}]")
        if fn.get("parameters", {}).get("type", "object") != "object":
            return _invalid(f"Invalid schema for function '{fn['name']}': schema must be a JSON Schema of 'type: "
                            "\"object\"', got 'type: \"None\"'.", f"tools[{i}].function.parameters",
                            "invalid_function_parameters")
        names.append(fn["name"])
    if len(set(names)) != len(names):
        return _invalid("Tool names must be unique.", "tools")
    if body.get("stream_options") is not None and not body.get("stream"):
        return _invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                        "stream_options")
    return None


def _split(text: str, pieces: int) -> list[str]:
    if not text:
        return []
    size = max(1, math.ceil(len(text) / max(1, pieces)))
    return [text[i:i + size] for i in range(0, len(text), size)]


def _calls(answer: Answer) -> list[dict[str, str]]:
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "name": name,
             "arguments": args if isinstance(args, str) else json.dumps(args)} for name, args in answer.tool_calls]


def _usage(body: dict, answer: Answer, calls: list[dict[str, str]]) -> dict[str, Any]:
    if answer.usage is not None:
        prompt, completion = answer.usage
    else:
        prompt = (math.ceil(len(json.dumps(body["messages"])) / 4)
                  + math.ceil(len(json.dumps(body.get("tools", []))) / 4))
        completion = math.ceil((len(answer.text) + sum(len(c["name"]) + len(c["arguments"]) for c in calls)) / 4)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def _chunks(body: dict, answer: Answer, calls: list[dict[str, str]], meta: dict) -> list[dict]:
    """The stream's chunks, [DONE] excluded."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict | None, finish: str | None = None) -> dict:
        out = {**meta, "object": "chat.completion.chunk",
               "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                     "finish_reason": finish}]}
        if include_usage:
            out["usage"] = None
        return out

    out = [chunk({"role": "assistant", "content": "" if not calls else None, "refusal": None})]
    out += [chunk({"content": piece}) for piece in _split(answer.text, answer.pieces)]
    for index, call in enumerate(calls):
        out.append(chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                          "function": {"name": call["name"], "arguments": ""}}]}))
        out += [chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in _split(call["arguments"], answer.pieces)]
    if not answer.no_finish:
        out.append(chunk({}, answer.finish_reason or ("tool_calls" if calls else "stop")))
        if include_usage and not answer.omit_usage:
            out.append({**chunk(None), "usage": _usage(body, answer, calls)})
    return out


def make_app(state: ChatState) -> web.Application:
    app = web.Application()

    async def completions(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _invalid("We could not parse the JSON body of your request.", None, None)
        with state._lock:
            state.received.append({"body": body, "authorization": request.headers.get("Authorization")})
        if (denied := _authenticate(state, request)) is not None:
            return denied
        if (problem := _check(state, body)) is not None:
            return problem
        answer = state._next()
        if answer is None:
            return _error(500, "no scripted answer left for this request", "server_error")
        calls = _calls(answer)
        meta = {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "created": int(time.time()), "model": body["model"],
                "system_fingerprint": "fp_loopback", "service_tier": "default"}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": answer.text or None, "refusal": None}
            if calls:
                message["tool_calls"] = [{"id": c["id"], "type": "function",
                                          "function": {"name": c["name"], "arguments": c["arguments"]}}
                                         for c in calls]
            return web.json_response({
                **meta, "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": answer.finish_reason or ("tool_calls" if calls else "stop")}],
                "usage": _usage(body, answer, calls)})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                               "Cache-Control": "no-cache", "x-request-id": "req_loopback"})
        await response.prepare(request)
        chunks = _chunks(body, answer, calls, meta)
        for n, chunk in enumerate(chunks):
            if answer.cut_after is not None and n >= answer.cut_after:
                await asyncio.sleep(0.05)  # let what was written reach the client before the break
                request.transport.close()  # mid chunked body: the client sees an incomplete read
                return response
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if not answer.no_finish:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def models(request: web.Request) -> web.Response:
        if (denied := _authenticate(state, request)) is not None:
            return denied
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 1_745_000_000, "owned_by": "system"} for m in state.models]})

    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/v1/models", models)
    return app
