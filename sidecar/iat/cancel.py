"""The one cancellation signal of long work (generation providers, image engines, the pipeline runner).

A caller hands a `threading.Event`; the work checks it between its steps with `check_cancel` and raises
`Cancelled`, never half-way through writing a result. `Cancelled` is control flow, not a client error: the runner
turns it into a canceled run or job, and a command would turn it into its own answer.
"""

from __future__ import annotations

import threading


class Cancelled(Exception):
    """The caller's cancel event was set."""


def check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()
