"""`agent_api`: an external agent that carries out instructions (SPEC 9.2), configured like any provider account.

It generates nothing (`operations = ("dispatch",)`, so runs.start refuses it as a run's provider); the copilot's
dispatcher (iat.copilot.external) uses it when a project's `settings_json.copilot.agent` is "external". The
account's config: `endpoint` (the agent's URL, required), `timeout_s`, `max_attempts`, `backoff_s` (the ledger's
retries of the dispatch POST: an agent must treat a repeated instruction_id as the same instruction); the optional
secret `api_key` is sent as `Authorization: Bearer <api_key>`.

The wire, as this connector speaks it:

- dispatch: `POST {endpoint}` with the envelope (JSON, iat.copilot.envelope.InstructionEnvelope, its callback
  holding status_url, events_url and the instruction's token). A 2xx answer's body must be the minimum response
  contract (`AgentResponse`: instruction_id, status accepted|rejected|running|done|failed, message, result?, error?);
  anything else is a ProviderError naming what is wrong (not retried: the same request gets the same answer).
  Non-2xx answers and transport failures are the typed errors of iat.providers.http (5xx and broken connections
  are retried by the ledger).
- probe (providers.check): `GET {endpoint}`; any answer but 401/403 or 5xx shows the agent is there (many agents
  take POST only and answer 405 to a GET), a JSON object answer is shown.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field, ValidationError

from iat.errors import ProviderError
from iat.providers.base import Account, BaseProvider, CostEstimate, ProviderConfig, ProviderStatus, check_cancel
from iat.providers.http import check, json_of, transport_error

CODE = "agent_api"
CONNECT_TIMEOUT_S = 10.0
USER_AGENT = "iat-sidecar agent dispatch"


class AgentApiConfig(ProviderConfig):
    """provider_accounts.config_json of `agent_api`."""

    endpoint: str | None = Field(None, max_length=2048, description="The external agent's URL: instructions are "
                                                                    "POSTed to it")
    timeout_s: float = Field(30.0, gt=0, le=3600, description="Limit of one dispatch attempt, in seconds")


@dataclass(frozen=True)
class AgentAnswer:
    """The agent's answer to a dispatch: its body (checked against the response contract by the caller) and the
    HTTP status (the ledger records it on the attempt's row)."""

    body: dict
    http_status: int


class AgentApiProvider(BaseProvider):
    code = CODE
    config_model = AgentApiConfig
    optional_secrets: ClassVar[tuple[str, ...]] = ("api_key",)
    operations: ClassVar[tuple[str, ...]] = ("dispatch",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client = None

    def status(self, account: Account) -> ProviderStatus:
        found = super().status(account)
        if found.ready and not account.config.endpoint:
            return ProviderStatus(False, "the external agent has no endpoint; set it with providers.configure "
                                         "(provider_code agent_api, config.endpoint)")
        return found

    def estimate(self, request: Any = None, account: Account | None = None) -> CostEstimate:
        return CostEstimate(units=0.0, cost_usd=0.0)  # what the agent itself spends is its own ledger's

    def probe(self, account: Account, *, timeout: float) -> dict[str, Any]:
        response = self._request("GET", account, timeout=timeout)
        if response.status_code in (401, 403) or response.status_code >= 500:
            check(response, CODE)  # raises the typed error
        info: dict[str, Any] = {"endpoint": account.config.endpoint, "http_status": response.status_code}
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict):
            info["agent"] = {k: body[k] for k in list(body)[:10]}
        return info

    def dispatch(self, account: Account, envelope: dict, *, timeout: float | None = None,
                 cancel: threading.Event | None = None) -> AgentAnswer:
        """One attempt: POSTs the envelope; the answer's body as JSON (an object), or the typed error."""
        check_cancel(cancel)
        response = self._request("POST", account, timeout=timeout or account.config.timeout_s, json=envelope)
        check(response, CODE)
        body = json_of(response, CODE)
        if not isinstance(body, dict):
            raise ProviderError(f"{CODE} answered {response.status_code} with JSON that is not an object",
                                details={"provider": CODE, "http_status": response.status_code})
        return AgentAnswer(body, response.status_code)

    # --- HTTP ---

    def _http(self):
        with self._lock:
            if self._client is None:
                import httpx2

                self._client = httpx2.Client(follow_redirects=False)
            return self._client

    def _request(self, method: str, account: Account, *, timeout: float, **kwargs):
        import httpx2

        endpoint = account.config.endpoint
        if not endpoint:
            raise ProviderError("the external agent has no endpoint configured", details={"provider": CODE})
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if account.secrets.get("api_key"):
            headers["Authorization"] = f"Bearer {account.secrets['api_key']}"
        limit = httpx2.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S))
        try:
            return self._http().request(method, endpoint, headers=headers, timeout=limit, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every transport failure as its typed error
            raise transport_error(exc, CODE) from None


def parse_answer(body: dict, instruction_id: str, http_status: int | None = None):
    """The agent's answer as `AgentResponse`, for this instruction; a ProviderError saying what is wrong with it
    otherwise (a broken answer fails the instruction with that message)."""
    from iat.copilot.envelope import AgentResponse

    details: dict[str, Any] = {"provider": CODE}
    if http_status is not None:
        details["http_status"] = http_status
    try:
        answer = AgentResponse.model_validate(body)
    except ValidationError as exc:
        problems = [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"]}
                    for e in exc.errors(include_url=False, include_input=False, include_context=False)]
        raise ProviderError(f"{CODE} answered with a body that does not follow the response contract "
                            f"(SPEC 9.2): {problems[0]['loc'] or 'body'}: {problems[0]['msg']}",
                            details={**details, "errors": problems[:20]}) from None
    if str(answer.instruction_id) != str(instruction_id):
        raise ProviderError(f"{CODE} answered about instruction {answer.instruction_id}, not {instruction_id}",
                            details={**details, "instruction_id": str(answer.instruction_id)})
    return answer
