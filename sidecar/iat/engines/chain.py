"""The background-removal chain: engines tried in a given order on one image until one passes the mask check.

Every attempt is recorded (engine, ok, reason, mask-check metrics, duration, the engine's facts), the winning
result is moved onto `dst`, and the failed attempts leave no file behind. Bad input (no engines, an unknown
code, an engine that does not remove backgrounds, an unreadable source, options an engine refuses) is
InvalidParams before or instead of any output; when every engine fails, EngineError carries every attempt in
`details["attempts"]`; a set cancel event raises `Cancelled`.

With `refine` (iat.engines.refine's options), the accepted cut-out is refined (trimap, ViTMatte or closed-form
matting, decontaminated colours) and the refined result is mask-checked too: it replaces the cut-out only when it
passes; a refinement that fails or is rejected leaves the accepted cut-out and says why. Either way it is recorded
as `ChainResult.refine`, an Attempt named "refine" (its options are checked before any engine runs).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iat.engines.base import Cancelled, EngineContext, EngineResult, ImageEngine, check_cancel
from iat.engines.mask_check import MaskCheck, MaskThresholds, check_mask
from iat.errors import EngineError, IATError, InvalidParams
from iat.imaging.io import open_image
from iat.plugins import LazyRegistry

log = logging.getLogger(__name__)

OP = "remove_background"


@dataclass
class Attempt:
    engine: str
    ok: bool               # the engine produced a mask and the mask passed the check
    reason: str            # "" when ok; else why not (unavailable, the engine's error, the failed metrics)
    duration_s: float
    check: dict[str, Any] | None = None   # MaskCheck.to_dict() when the engine produced an image
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ChainResult:
    engine: str
    result: EngineResult   # its path is `dst`
    check: MaskCheck       # of what `dst` holds: the refined cut-out when refine was asked and passed
    attempts: list[Attempt]
    refine: Attempt | None = None   # the refinement, when asked: ok (dst is refined) or why not


def _engines(registry: LazyRegistry, order: list[str]) -> list[ImageEngine]:
    if not order:
        raise InvalidParams("no background-removal engine given", details={"engines": []})
    if len(set(order)) != len(order):
        raise InvalidParams("an engine is listed twice", details={"engines": list(order)})
    engines = []
    for code in order:
        engine = registry.get(code)   # InvalidParams for an unknown code
        if getattr(engine, "op", None) != OP:
            raise InvalidParams(f"engine {code!r} does not remove backgrounds (op {getattr(engine, 'op', None)!r})",
                                details={"engine": code, "op": getattr(engine, "op", None)})
        engines.append(engine)
    return engines


def remove_background(registry: LazyRegistry, order: list[str], src: str | os.PathLike, dst: str | os.PathLike, *,
                      options: dict[str, dict[str, Any]] | None = None, thresholds: MaskThresholds | None = None,
                      cancel: threading.Event | None = None, ctx: EngineContext | None = None,
                      refine: dict[str, Any] | None = None) -> ChainResult:
    """Runs the engines of `order` on `src` until one's mask passes; writes the winner to `dst`.

    `options` maps an engine code to that engine's options; `ctx` is passed to every engine. `refine` (options,
    {} for the defaults; None: no refinement) refines the accepted cut-out.
    """
    src, dst = Path(src), Path(dst)
    engines = _engines(registry, list(order))
    unknown = sorted(set(options or {}) - set(order))
    if unknown:
        raise InvalidParams(f"options for engines not in the order: {', '.join(unknown)}",
                            details={"engines": unknown})
    if refine is not None:
        from iat.engines import refine as refining

        refining.prepare(ctx, refine)   # bad options or an unknown model: InvalidParams before any work
    open_image(src)   # an unreadable source is the caller's problem, not every engine's failure
    attempts: list[Attempt] = []
    for code, engine in zip(order, engines):
        check_cancel(cancel)
        started = time.perf_counter()
        status = engine.available(ctx)
        if not status.ready:
            attempts.append(Attempt(code, False, f"unavailable: {status.reason}", time.perf_counter() - started))
            continue
        tmp = dst.with_name(f".{dst.name}.{code}.{os.getpid()}.{threading.get_ident()}.attempt.png")
        try:
            result = engine.process(src, tmp, dict((options or {}).get(code, {})), cancel=cancel, ctx=ctx)
            check = check_mask(tmp, thresholds)
        except (Cancelled, InvalidParams):
            _remove(tmp)
            raise
        except IATError as exc:
            _remove(tmp)
            attempts.append(Attempt(code, False, f"{exc.name}: {exc.message}", time.perf_counter() - started))
            continue
        except Exception as exc:  # an engine's bug must not stop the chain: record it, log it, go on
            _remove(tmp)
            log.exception("engine %s failed on %s", code, src.name)
            attempts.append(Attempt(code, False, f"engine crashed: {type(exc).__name__}",
                                    time.perf_counter() - started))
            continue
        duration = time.perf_counter() - started
        if not check.passed:
            _remove(tmp)
            attempts.append(Attempt(code, False, f"mask rejected: {check.reason}", duration, check.to_dict(),
                                    result.meta))
            continue
        os.replace(tmp, dst)
        attempts.append(Attempt(code, True, "", duration, check.to_dict(), result.meta))
        refined = None
        if refine is not None:
            try:
                refined, refined_check = _refine(src, dst, refine, thresholds, cancel, ctx)
            except Cancelled:   # a cancelled chain leaves no output, refined or not
                _remove(dst)
                raise
            check = refined_check or check
        return ChainResult(code, dataclasses.replace(result, path=dst), check, attempts, refined)
    tried = ", ".join(f"{a.engine} ({a.reason})" for a in attempts)
    raise EngineError(f"no background-removal engine gave an acceptable mask: {tried}",
                      details={"attempts": [a.to_dict() for a in attempts]})


def _refine(src: Path, dst: Path, options: dict[str, Any], thresholds: MaskThresholds | None,
            cancel: threading.Event | None, ctx: EngineContext | None) -> tuple[Attempt, MaskCheck | None]:
    """Refines the accepted cut-out at `dst` in place when the refined one passes the mask check; returns the
    record and the refined check (None when `dst` was left as it was)."""
    from iat.engines import refine as refining

    tmp = dst.with_name(f".{dst.name}.refine.{os.getpid()}.{threading.get_ident()}.attempt.png")
    started = time.perf_counter()
    try:
        result = refining.refine(ctx, src, dst, tmp, options, cancel=cancel)
        check = check_mask(tmp, thresholds)
    except Cancelled:
        _remove(tmp)
        raise
    except IATError as exc:
        _remove(tmp)
        return Attempt(refining.CODE, False, f"{exc.name}: {exc.message}", time.perf_counter() - started), None
    except Exception as exc:  # a bug in the refinement must not lose the accepted cut-out
        _remove(tmp)
        log.exception("refine failed on %s", src.name)
        return Attempt(refining.CODE, False, f"refine crashed: {type(exc).__name__}",
                       time.perf_counter() - started), None
    duration = time.perf_counter() - started
    if not check.passed:
        _remove(tmp)
        return Attempt(refining.CODE, False, f"mask rejected: {check.reason}", duration, check.to_dict(),
                       result.meta), None
    os.replace(tmp, dst)
    return Attempt(refining.CODE, True, "", duration, check.to_dict(), result.meta), check


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
