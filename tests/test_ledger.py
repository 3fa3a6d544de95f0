"""The provider call ledger: attempts, retries, Retry-After, concurrency, cancellation, cost once per call,
budgets, and the failures it persists."""

from __future__ import annotations

import threading
import time

import pytest

from iat.app import App
from iat.cancel import Cancelled
from iat.db.models import CostEvent
from iat.errors import (BudgetExhausted, ProviderAuthFailed, ProviderUnavailable, RateLimited)
from iat.ledger.ledger import Attempt
from iat.providers.base import Account, ProviderConfig
from tests.support import Client


class Result:
    def __init__(self, cost: float = 0.25, status: int = 200):
        self.usage = {"units": 1.0, "cost_usd": cost, "source": "vendor", "tokens": 42}
        self.http_status = status


def _account(**config) -> Account:
    defaults = {"backoff_s": 0.01, "max_backoff_s": 5.0}
    return Account("preview", ProviderConfig(**{**defaults, **config}))


def _attempts(client: Client, **filters) -> list[dict]:
    return list(reversed(client.call("providers.calls", slug="alpha", limit=500, **filters)["items"]))


def _costs(client: Client, **params) -> dict:
    return client.call("costs.summary", slug="alpha", **params)


def _script(*steps):
    """fn for ledger.call: each attempt takes the next step (an exception to raise, or a result to return)."""
    calls: list[tuple[int, float]] = []

    def fn(attempt: Attempt):
        calls.append((attempt.number, time.monotonic()))
        step = steps[len(calls) - 1]
        if isinstance(step, BaseException):
            raise step
        return step

    return fn, calls


def test_429_then_500_then_success_is_three_attempts_and_one_cost(app: App, client: Client, project: dict):
    handle = app.projects.open("alpha")
    fn, calls = _script(RateLimited("429", retry_after=0.3, details={"http_status": 429}),
                        ProviderUnavailable("500", details={"http_status": 500}), Result(0.25))
    value = app.ledger.call(handle, _account(), "generate", fn)
    assert isinstance(value, Result)
    assert [n for n, _ in calls] == [1, 2, 3]
    assert calls[1][1] - calls[0][1] >= 0.3  # Retry-After honoured
    rows = _attempts(client)
    assert [(r["attempt"], r["outcome"], r["http_status"], r["error_code"]) for r in rows] == [
        (1, "error", 429, "rate_limited"), (2, "error", 500, "provider_unavailable"), (3, "ok", 200, None)]
    assert len({r["call_id"] for r in rows}) == 1 and rows[0]["meta_json"]["retry_after"] == 0.3
    summary = _costs(client)
    assert summary["events"] == 1 and summary["cost_usd"] == 0.25 and summary["units"] == 1.0
    event = handle.store.read(lambda: CostEvent.select().dicts().get())
    assert event["meta_json"]["call_id"] == rows[0]["call_id"] and event["meta_json"]["attempts"] == 3
    assert event["meta_json"]["source"] == "vendor" and event["meta_json"]["tokens"] == 42


def test_errors_that_cannot_succeed_later_are_not_retried(app: App, client: Client, project: dict):
    handle = app.projects.open("alpha")
    fn, calls = _script(ProviderAuthFailed("401 bad key", details={"http_status": 401}))
    with pytest.raises(ProviderAuthFailed):
        app.ledger.call(handle, _account(), "generate", fn)
    assert len(calls) == 1
    assert [(r["outcome"], r["http_status"], r["error_code"]) for r in _attempts(client)] == [
        ("error", 401, "provider_auth_failed")]
    assert _costs(client)["events"] == 0


def test_a_retry_after_longer_than_the_longest_wait_ends_the_call_at_once(app: App, client: Client, project: dict):
    fn, calls = _script(RateLimited("429", retry_after=3600, details={"http_status": 429}), Result())
    with pytest.raises(RateLimited):
        app.ledger.call(app.projects.open("alpha"), _account(max_backoff_s=2), "generate", fn)
    assert len(calls) == 1


def test_attempts_run_out_with_the_last_error_and_every_failure_persisted(app: App, client: Client, project: dict):
    failures = [ProviderUnavailable(f"down {i}", details={"http_status": 503}) for i in range(4)]
    fn, calls = _script(*failures)
    with pytest.raises(ProviderUnavailable, match="down 3"):
        app.ledger.call(app.projects.open("alpha"), _account(max_attempts=4), "generate", fn, run_id=None)
    rows = _attempts(client, outcome="error")
    assert [r["attempt"] for r in rows] == [1, 2, 3, 4] and len(calls) == 4
    assert [r["error_message"] for r in rows] == [f"down {i}" for i in range(4)]
    assert _costs(client)["events"] == 0


def test_a_bug_in_a_connector_is_recorded_and_raised_unchanged(app: App, client: Client, project: dict):
    fn, _ = _script(KeyError("x"))
    with pytest.raises(KeyError):
        app.ledger.call(app.projects.open("alpha"), _account(), "generate", fn)
    assert [(r["error_code"], r["error_message"]) for r in _attempts(client)] == [("internal_error", "KeyError")]


def test_secrets_in_vendor_messages_are_masked_in_the_ledger(app: App, client: Client, project: dict):
    app.redactor.add("sk-live-0123456789abcdef")
    fn, _ = _script(ProviderAuthFailed("key sk-live-0123456789abcdef refused", details={"http_status": 401}))
    with pytest.raises(ProviderAuthFailed):
        app.ledger.call(app.projects.open("alpha"), _account(), "generate", fn)
    message = _attempts(client)[0]["error_message"]
    assert "sk-live-0123456789abcdef" not in message and "refused" in message


def test_cancel_stops_a_call_waiting_to_retry(app: App, client: Client, project: dict):
    cancel = threading.Event()
    fn, calls = _script(RateLimited("429", retry_after=4, details={"http_status": 429}), Result())
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        app.ledger.call(app.projects.open("alpha"), _account(), "generate", fn, cancel=cancel)
    assert time.monotonic() - started < 3.5 and len(calls) == 1


def test_a_cancelled_attempt_is_recorded_as_canceled(app: App, client: Client, project: dict):
    fn, _ = _script(Cancelled())
    with pytest.raises(Cancelled):
        app.ledger.call(app.projects.open("alpha"), _account(), "generate", fn)
    assert [r["outcome"] for r in _attempts(client)] == ["canceled"]


def test_the_provider_concurrency_limit_holds_across_threads(app: App, client: Client, project: dict):
    handle = app.projects.open("alpha")
    account = _account(concurrency=2)
    lock = threading.Lock()
    state = {"now": 0, "most": 0}

    def fn(attempt):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return Result(0.0)

    threads = [threading.Thread(target=app.ledger.call, args=(handle, account, "generate", fn)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state["most"] == 2
    assert _costs(client)["events"] == 8


def test_the_budget_refuses_calls_it_cannot_pay_for_before_anything_is_sent(app: App, client: Client,
                                                                           project: dict):
    client.call("projects.update", slug="alpha", settings_json={"budget_usd": 1.0})
    handle = app.projects.open("alpha")
    sent = []

    def fn(attempt):
        sent.append(attempt.number)
        return Result(0.4)

    for _ in range(2):
        app.ledger.call(handle, _account(), "generate", fn, estimate_usd=0.4)
    with pytest.raises(BudgetExhausted) as info:
        app.ledger.call(handle, _account(), "generate", fn, estimate_usd=0.4)
    assert len(sent) == 2 and info.value.details["spent_usd"] == pytest.approx(0.8)
    assert len(_attempts(client)) == 2  # the refused call never reached the provider
    # a free call still goes; so does a call whose run was confirmed over the budget
    app.ledger.call(handle, _account(), "probe", fn, billable=False)
    app.ledger.call(handle, _account(), "generate", fn, estimate_usd=0.4, enforce_budget=False)
    assert _costs(client)["budget"] == {"budget_usd": 1.0, "spent_usd": pytest.approx(1.2), "left_usd": 0.0}


def test_costs_summary_groups_and_windows(app: App, client: Client, project: dict):
    handle = app.projects.open("alpha")
    for op, cost in (("generate", 0.5), ("generate", 0.25), ("remove_background", 0.1)):
        app.ledger.call(handle, _account(), op, lambda a, c=cost: Result(c))
    by_op = _costs(client, group_by="operation")
    assert [(g["key"], g["events"], g["cost_usd"]) for g in by_op["groups"]] == [
        ("generate", 2, 0.75), ("remove_background", 1, 0.1)]
    assert by_op["cost_usd"] == pytest.approx(0.85)
    assert [g["key"] for g in _costs(client, group_by="provider")["groups"]] == ["preview"]
    assert [g["key"] for g in _costs(client, group_by="run")["groups"]] == [None]
    day = _costs(client, group_by="day")["groups"]
    assert len(day) == 1 and len(day[0]["key"]) == 10 and day[0]["events"] == 3
    assert _costs(client, since="2999-01-01T00:00:00Z")["events"] == 0
    assert _costs(client, until="2999-01-01T00:00:00Z", operation_code="generate")["events"] == 2
    assert _costs(client, since="2030-01-02T00:00:00Z", until="2030-01-01T00:00:00Z")["events"] == 0
    assert _costs(client, since="0001-01-01T00:00:00+14:00", until="9999-12-31T23:59:59-23:59")["events"] == 3
    for seconds in (0.5, "0.5"):  # not seconds since 1970, which pydantic alone would take
        assert client.error("costs.summary", slug="alpha", until=seconds).name == "invalid_params"
