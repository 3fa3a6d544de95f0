"""Ledger.call: one outbound provider call, every attempt recorded, its cost recorded once.

    value = app.ledger.call(handle, account, "generate", lambda attempt: provider.generate(
        request, account, cancel=attempt.cancel, timeout=attempt.timeout), run_id=run_id, cancel=cancel,
        estimate_usd=provider.estimate(request, account).cost_usd)

`fn` makes exactly one attempt and raises the typed errors of `iat.errors` (`ProviderError.retryable` says whether
another attempt may help). Retries (tenacity) wait `backoff_s * 2**(n-1)` capped at `max_backoff_s`, fully
jittered, and never less than the vendor's Retry-After; a Retry-After longer than `max_backoff_s` ends the call
at once (the caller should not hold a worker that long). The provider's `concurrency` is a semaphore per
(provider, endpoint) shared by every project of this App, since it protects the provider, not the project.

Records are written behind the call: queued on the project's single writer without waiting (`Store.submit`), so a
call costs the caller no database round trip. The writer commits in queue order, so whatever the caller writes
next (a candidate's rows) commits after the call's attempt and cost; `flush` waits for what is queued (reads that
must see every record, such as costs.summary, flush first). The budget check adds the costs queued but not yet
committed to what the database says was spent, so a burst of calls cannot slip past it.
"""

from __future__ import annotations

import logging
import random
from concurrent.futures import Future
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from iat.cancel import Cancelled, check_cancel
from iat.clock import utcnow
from iat.errors import BudgetExhausted, IATError, ProviderError, RateLimited
from iat.ledger import repo
from iat.providers.base import Account

log = logging.getLogger(__name__)
T = TypeVar("T")
BUDGET_TTL_S = 2.0  # how long a project's budget setting is trusted (another process may change it)


@dataclass(frozen=True)
class Attempt:
    """What one attempt gets: its number (1-based), its time limit in seconds, the cancel event to watch."""

    number: int
    timeout: float
    cancel: threading.Event | None


@dataclass(frozen=True)
class Usage:
    """What a successful call cost. `source`: "vendor" (its own usage report), "pricing" (configured prices)."""

    units: float
    cost_usd: float
    currency: str = "USD"
    source: str = "pricing"
    meta: dict[str, Any] = field(default_factory=dict)


def usage_of(value: Any) -> Usage | None:
    """The usage of a result that carries a `usage` dict (GenerateResult and the engines' results)."""
    raw = getattr(value, "usage", None)
    if not isinstance(raw, dict) or "cost_usd" not in raw:
        return None
    extra = {k: v for k, v in raw.items() if k not in ("units", "cost_usd", "currency", "source")}
    return Usage(float(raw.get("units", 0) or 0), float(raw["cost_usd"] or 0), str(raw.get("currency", "USD")),
                 str(raw.get("source", "pricing")), extra)


class Ledger:
    def __init__(self, app) -> None:
        self.app = app
        self._limits: dict[tuple[str, str, int], threading.BoundedSemaphore] = {}
        self._budgets: dict[str, tuple[Decimal | None, float]] = {}  # project id -> (budget, when read)
        self._pending: dict[str, Decimal] = {}  # project id -> costs queued, not yet committed
        self._lock = threading.Lock()

    # --- the call ---

    def call(self, handle, account: Account, operation: str, fn: Callable[[Attempt], T], *,
             run_id: str | None = None, cancel: threading.Event | None = None, estimate_usd: float = 0.0,
             enforce_budget: bool = True, billable: bool = True, max_attempts: int | None = None,
             usage: Callable[[T], Usage | None] = usage_of, meta: dict | None = None) -> T:
        config = account.config
        call_id = str(uuid.uuid4())
        base = {"call_id": call_id, "run_id": run_id, "provider_code": account.code, "operation_code": operation}
        limit = self._limit(account)
        attempts = max_attempts or config.max_attempts

        def retryable(exc: BaseException) -> bool:
            if not isinstance(exc, ProviderError) or not exc.retryable:
                return False
            after = exc.retry_after if isinstance(exc, RateLimited) else None
            return after is None or after <= config.max_backoff_s

        def wait(state: RetryCallState) -> float:
            ceiling = min(config.max_backoff_s, config.backoff_s * 2 ** (state.attempt_number - 1))
            delay = random.uniform(0, ceiling)
            exc = state.outcome.exception() if state.outcome else None
            after = exc.retry_after if isinstance(exc, RateLimited) else None
            return max(delay, after) if after is not None else delay

        def sleep(seconds: float) -> None:
            if cancel is not None:
                if cancel.wait(seconds):
                    raise Cancelled()
            else:
                time.sleep(seconds)

        retrying = Retrying(stop=stop_after_attempt(attempts), wait=wait, sleep=sleep, reraise=True,
                            retry=retry_if_exception(retryable))
        for state in retrying:
            with state:
                number = state.retry_state.attempt_number
                if billable and enforce_budget:
                    self._check_budget(handle, estimate_usd, account.code)
                row = {**base, "attempt": number}
                value = self._attempt(handle, limit, fn, Attempt(number, config.timeout_s, cancel), row, meta)
        # Only a success leaves the loop (reraise=True re-raises the last failure).
        self._record_success(handle, value, row, billable, estimate_usd, usage, meta)
        return value

    def _attempt(self, handle, limit: threading.BoundedSemaphore, fn, attempt: Attempt, row: dict,
                 meta: dict | None):
        self._acquire(limit, attempt.cancel)
        started = time.perf_counter()
        try:
            value = fn(attempt)
        except Cancelled:
            self._record_failure(handle, row, started, "canceled", None, meta)
            raise
        except BaseException as exc:
            self._record_failure(handle, row, started, "error", exc, meta)
            raise
        finally:
            limit.release()
        row["latency_ms"] = _ms(started)
        row["http_status"] = getattr(value, "http_status", None)
        return value

    def _acquire(self, limit: threading.BoundedSemaphore, cancel: threading.Event | None) -> None:
        while not limit.acquire(timeout=0.1):
            check_cancel(cancel)

    # --- records ---

    def _record_failure(self, handle, row: dict, started: float, outcome: str, exc: BaseException | None,
                        meta: dict | None) -> None:
        scrub = self.app.redactor.scrub
        full = {**row, "outcome": outcome, "latency_ms": _ms(started), "meta_json": dict(meta or {})}
        if isinstance(exc, IATError):
            full.update(http_status=_int(exc.details.get("http_status")), error_code=exc.name,
                        error_message=scrub(exc.message))
            if isinstance(exc, RateLimited) and exc.retry_after is not None:
                full["meta_json"]["retry_after"] = exc.retry_after
        elif exc is not None:  # a connector bug: recorded by type, the traceback goes to the log
            full.update(error_code="internal_error", error_message=type(exc).__name__)
            log.error("%s %s attempt %s failed", row["provider_code"], row["operation_code"], row["attempt"],
                      exc_info=exc)
        self._submit(handle, None, repo.insert_attempt, handle.id, full, utcnow())

    def _record_success(self, handle, value, row: dict, billable: bool, estimate_usd: float,
                        usage: Callable[[Any], Usage | None], meta: dict | None) -> None:
        cost = None
        if billable:
            used = usage(value) or Usage(0.0, estimate_usd, source="estimate")
            cost = {"run_id": row["run_id"], "provider_code": row["provider_code"],
                    "operation_code": row["operation_code"], "units": Decimal(str(used.units)),
                    "cost_usd": Decimal(str(used.cost_usd)), "currency": used.currency,
                    "meta_json": {"call_id": row["call_id"], "attempts": row["attempt"], "source": used.source,
                                  **used.meta, **(meta or {})}}
        full = {**row, "outcome": "ok", "meta_json": dict(meta or {})}
        self._submit(handle, cost, repo.record_success, handle.id, full, cost, utcnow())

    def _submit(self, handle, cost: dict | None, fn, *args) -> None:
        """Queues a record on the project's writer; a cost counts as pending (for the budget) until committed."""
        amount = cost["cost_usd"] if cost else Decimal(0)
        project_id = handle.id
        with self._lock:
            self._pending[project_id] = self._pending.get(project_id, Decimal(0)) + amount
        try:
            future = handle.store.submit(fn, *args)
        except IATError as exc:  # the project closed under the call (deleted, say): nothing left to record into
            self._settle(project_id, amount)
            log.warning("ledger record of %s dropped: %s", project_id, exc.message)
            return

        def done(f: Future) -> None:
            self._settle(project_id, amount)
            if f.exception() is not None:
                log.error("ledger record of %s failed", project_id, exc_info=f.exception())
            elif cost is not None:
                self.app.events.publish("cost.recorded", {
                    "project_id": project_id, "run_id": cost["run_id"], "provider_code": cost["provider_code"],
                    "operation_code": cost["operation_code"], "cost_usd": float(cost["cost_usd"])})

        future.add_done_callback(done)

    def _settle(self, project_id: str, amount: Decimal) -> None:
        with self._lock:
            self._pending[project_id] = self._pending.get(project_id, Decimal(0)) - amount

    def flush(self, handle) -> None:
        """Waits until every record queued for the project so far is committed."""
        handle.store.write(lambda: None)

    # --- budget and limits ---

    def _check_budget(self, handle, estimate_usd: float, provider_code: str) -> None:
        budget = self._budget_of(handle)
        if budget is None:
            return
        with self._lock:
            pending = self._pending.get(handle.id, Decimal(0))
        # A cost committed between the read and its settling counts twice for an instant: errs on the safe side.
        spent = handle.store.read(repo.spent_usd, handle.id) + pending
        if spent + Decimal(str(estimate_usd)) > budget:
            raise BudgetExhausted(
                f"the project's budget of {budget} USD cannot pay for this call ({spent} USD spent, this call "
                f"about {estimate_usd:.4f} USD); raise settings_json.budget_usd to go on",
                details={"budget_usd": float(budget), "spent_usd": float(spent), "estimate_usd": estimate_usd,
                         "provider_code": provider_code})

    def _budget_of(self, handle) -> Decimal | None:
        now = time.monotonic()
        with self._lock:
            cached = self._budgets.get(handle.id)
        if cached is not None and now - cached[1] < BUDGET_TTL_S:
            return cached[0]
        budget = handle.store.read(repo.budget_usd, handle.id)
        with self._lock:
            self._budgets[handle.id] = (budget, now)
        return budget

    def settings_changed(self, project_id: str) -> None:
        """The project's settings changed in this process: read its budget again at the next call."""
        with self._lock:
            self._budgets.pop(project_id, None)

    def _limit(self, account: Account) -> threading.BoundedSemaphore:
        key = (account.code, account.config.endpoint or "", account.config.concurrency)
        with self._lock:
            sem = self._limits.get(key)
            if sem is None:
                sem = self._limits[key] = threading.BoundedSemaphore(account.config.concurrency)
            return sem

    def budget(self, handle) -> dict:
        """The project's budget, spent and left (USD), for costs.summary and runs.start."""
        self.flush(handle)
        budget, spent = handle.store.read(lambda pid: (repo.budget_usd(pid), repo.spent_usd(pid)), handle.id)
        left = None if budget is None else max(Decimal(0), budget - spent)
        return {"budget_usd": None if budget is None else float(budget), "spent_usd": float(spent),
                "left_usd": None if left is None else float(left)}


def _ms(started: float) -> int:
    return int(round((time.perf_counter() - started) * 1000))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) else None
