"""`llm`: the copilot's language model, any OpenAI-compatible chat completions API through the openai SDK.

OpenAI itself (endpoint left out: https://api.openai.com/v1, an `api_key` secret required), or a local server that
speaks the same API through `endpoint` (llama.cpp server, Ollama, vLLM: e.g. http://127.0.0.1:8080/v1; a key is
optional there, and the SDK, which insists on one, is given a placeholder that is never sent anywhere else).
`operations = ("chat",)`: it is never a run's image provider.

One `chat` is one streamed request (`stream=True`, `stream_options={"include_usage": True}`), made by the SDK with
its own retries off (`max_retries=0`: the ledger retries) and the attempt's time limit. Text deltas are handed to
`on_delta` as they arrive; tool-call deltas are put together by index (the id and name come first, the JSON
arguments in pieces). Once a delta has been handed on, a failure is final (`retryable` cleared): a retry would show
the user the same words twice. A stream that ends without a finish_reason was cut off and is a failure too.

Cost: the final usage chunk's prompt and completion tokens at the account's prices, USD per million tokens; left
out, a local endpoint costs nothing and OpenAI costs the model's list price (table below; an unlisted model is
priced at the table's dearest). A server that sends no usage chunk is costed on estimated tokens (characters / 4),
marked `tokens_estimated`. Failures map exactly as the `openai` image connector's (`openai_images.vendor_error`).
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import Field

from iat.errors import ProviderError, ProviderTimeout, ProviderUnavailable
from iat.providers.base import (
    Account, BaseProvider, CostEstimate, Pricing, ProviderConfig, ProviderStatus, check_cancel,
)
from iat.providers.openai_clients import OPENAI_ENDPOINT, Clients, is_openai, key_status
from iat.providers.openai_images import vendor_error

CODE = "llm"
DEFAULT_MODEL = "gpt-4o-mini"
# OpenAI's published list prices, USD per 1M tokens: (input, output). openai.com/api/pricing, standard tier.
PUBLISHED_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o4-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
}


class ChatPricing(Pricing):
    """USD per million tokens; None: OpenAI's list price of the model on api.openai.com, nothing elsewhere.
    (`usd_per_image` is not used by a chat model.)"""

    usd_per_1m_input: float | None = Field(None, ge=0, le=10000, description="Prompt tokens")
    usd_per_1m_output: float | None = Field(None, ge=0, le=10000, description="Completion tokens")


class ChatConfig(ProviderConfig):
    endpoint: str | None = Field(None, max_length=2048, description="Base URL of an OpenAI-compatible API (…/v1); "
                                                                    "left out: api.openai.com")
    model: str = Field(DEFAULT_MODEL, min_length=1, max_length=256, description="Chat model")
    pricing: ChatPricing = Field(default_factory=ChatPricing)
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature; left out: the model's "
                                                                    "default (some models take no other)")
    max_tokens: int = Field(1024, ge=16, le=65536, description="Longest answer, in tokens")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Limit of one attempt, in seconds")



def prices(config: ChatConfig) -> tuple[float, float]:
    """(input, output) USD per 1M tokens: the configured ones, else the list price on OpenAI, else 0."""
    listed = (0.0, 0.0)
    if is_openai(config):
        known = [n for n in PUBLISHED_PRICES if config.model == n or config.model.startswith(n + "-")]
        listed = (PUBLISHED_PRICES[max(known, key=len)] if known else
                  (max(p[0] for p in PUBLISHED_PRICES.values()), max(p[1] for p in PUBLISHED_PRICES.values())))
    p = config.pricing
    return (p.usd_per_1m_input if p.usd_per_1m_input is not None else listed[0],
            p.usd_per_1m_output if p.usd_per_1m_output is not None else listed[1])


def token_cost(config: ChatConfig, prompt_tokens: int, completion_tokens: int) -> float:
    price_in, price_out = prices(config)
    return round((prompt_tokens * price_in + completion_tokens * price_out) / 1e6, 8)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # the JSON text as the model wrote it (it may not be JSON at all)


@dataclass(frozen=True)
class ChatResult:
    text: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    model: str
    # units (total tokens), cost_usd, currency, source ("vendor": the usage chunk; "estimate": counted here),
    # prompt_tokens, completion_tokens, total_tokens, model: the ledger's cost event (iat.ledger.usage_of).
    usage: dict[str, Any] = field(default_factory=dict)
    http_status: int | None = None


class ChatProvider(BaseProvider):
    code = CODE
    config_model = ChatConfig
    optional_secrets = ("api_key",)  # required on api.openai.com only: see status
    operations = ("chat",)

    def __init__(self) -> None:
        self._clients = Clients(CODE)

    def status(self, account: Account) -> ProviderStatus:
        return key_status(CODE, account, super().status(account))

    def _client(self, account: Account):
        return self._clients.get(account)

    def _secrets(self, account: Account) -> tuple[str, ...]:
        return tuple(v for v in account.secrets.values() if v)

    def probe(self, account: Account, *, timeout: float) -> dict[str, Any]:
        """GET /models: free, and shows the endpoint answers and takes the key."""
        config: ChatConfig = account.config  # type: ignore[assignment]
        try:
            ids = [m.id for m in self._client(account).models.list(timeout=timeout).data]
        except (ValueError, UnicodeDecodeError):
            raise ProviderError(f"{CODE} answered /models with a body that is not JSON",
                                details={"provider": CODE}) from None
        except BaseException as exc:
            raise vendor_error(exc, self._secrets(account), provider=CODE, expected="a model list") from None
        return {"endpoint": config.endpoint or OPENAI_ENDPOINT, "model": config.model,
                "model_listed": config.model in ids, "models": ids[:20]}

    def estimate_chat(self, account: Account, messages: list[dict], tools: list[dict] | None = None) -> CostEstimate:
        """The most a chat costs: its prompt's tokens (characters / 4) and a whole max_tokens answer."""
        config: ChatConfig = account.config  # type: ignore[assignment]
        prompt = math.ceil(len(json.dumps(messages)) / 4 + len(json.dumps(tools or [])) / 4)
        return CostEstimate(units=float(prompt + config.max_tokens),
                            cost_usd=token_cost(config, prompt, config.max_tokens))

    def chat(self, account: Account, messages: list[dict], *, tools: list[dict] | None = None,
             on_delta: Callable[[str], None] | None = None, timeout: float | None = None,
             cancel: threading.Event | None = None) -> ChatResult:
        """One streamed completion: text deltas to `on_delta` as they come, the whole answer returned."""
        config: ChatConfig = account.config  # type: ignore[assignment]
        check_cancel(cancel)
        limit = timeout if timeout is not None else config.timeout_s
        request: dict[str, Any] = {"model": config.model, "messages": messages, "stream": True,
                                   "stream_options": {"include_usage": True}, "timeout": limit}
        # OpenAI's newer models refuse max_tokens; local servers know max_tokens only.
        request["max_completion_tokens" if is_openai(config) else "max_tokens"] = config.max_tokens
        if config.temperature is not None:
            request["temperature"] = config.temperature
        if tools:
            request["tools"] = tools
        deadline = time.monotonic() + limit
        shown = False
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish, model, used, status = None, config.model, None, None
        try:
            stream = self._client(account).chat.completions.create(**request)
            status = stream.response.status_code
            with stream:
                for chunk in stream:
                    check_cancel(cancel)
                    if time.monotonic() > deadline:
                        raise ProviderTimeout(f"{CODE} did not finish its answer within {limit:g} s",
                                              details={"provider": CODE, "http_status": status})
                    model = getattr(chunk, "model", None) or model
                    if getattr(chunk, "usage", None) is not None:
                        used = chunk.usage
                    for choice in chunk.choices or ():
                        if choice.index not in (0, None):
                            continue
                        delta = choice.delta
                        piece = getattr(delta, "content", None) if delta is not None else None
                        if piece:
                            text.append(piece)
                            if on_delta is not None:
                                shown = True
                                on_delta(piece)
                        for position, tc in enumerate(getattr(delta, "tool_calls", None) or ()):
                            slot = calls.setdefault(tc.index if tc.index is not None else position,
                                                    {"id": "", "name": "", "arguments": []})
                            slot["id"] = tc.id or slot["id"]
                            if tc.function is not None:
                                slot["name"] += tc.function.name or ""
                                slot["arguments"].append(tc.function.arguments or "")
                        finish = choice.finish_reason or finish
        except (ValueError, UnicodeDecodeError):  # a data: line that is not JSON
            raise self._final(ProviderError(f"{CODE} streamed a chunk that is not JSON",
                                            details={"provider": CODE, "http_status": status}), shown) from None
        except BaseException as exc:
            err = vendor_error(exc, self._secrets(account), provider=CODE, expected="a chat completion")
            if isinstance(err, ProviderError) and status is not None:
                err.details.setdefault("http_status", status)  # the stream broke after a 200 began it
            raise self._final(err, shown) from None
        if finish is None:
            raise self._final(ProviderUnavailable(f"{CODE} ended its answer before it was complete (no "
                                                  f"finish_reason)", details={"provider": CODE,
                                                                              "http_status": status}), shown)
        tool_calls = tuple(ToolCall(c["id"], c["name"], "".join(c["arguments"])) for _, c in sorted(calls.items()))
        answer = "".join(text)
        return ChatResult(answer, tool_calls, finish, model, self._usage(config, model, used, messages, tools,
                                                                         answer, tool_calls), status)

    @staticmethod
    def _final(err: BaseException, shown: bool) -> BaseException:
        """After text was shown, no retry: the user would see it twice."""
        if shown and isinstance(err, ProviderError) and err.retryable:
            err.retryable = False
            err.details["after_delta"] = True
        return err

    def _usage(self, config: ChatConfig, model: str, used: Any, messages: list[dict], tools: list[dict] | None,
               text: str, tool_calls: tuple[ToolCall, ...]) -> dict[str, Any]:
        prompt = getattr(used, "prompt_tokens", None)
        completion = getattr(used, "completion_tokens", None)
        source = "vendor"
        if not isinstance(prompt, int) or not isinstance(completion, int) or min(prompt, completion) < 0:
            source = "estimate"
            prompt = math.ceil((len(json.dumps(messages)) + len(json.dumps(tools or []))) / 4)
            completion = math.ceil((len(text) + sum(len(c.name) + len(c.arguments) for c in tool_calls)) / 4)
        total = getattr(used, "total_tokens", None) if source == "vendor" else None
        total = total if isinstance(total, int) and total >= 0 else prompt + completion
        return {"units": float(total), "cost_usd": token_cost(config, prompt, completion), "currency": "USD",
                "source": source, "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total,
                "model": model, **({"tokens_estimated": True} if source == "estimate" else {})}

