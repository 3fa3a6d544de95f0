"""What a command handler gets besides its params: the App, the calling peer's session, the command itself.

Transport-neutral: transports create Sessions, the dispatcher creates a CallContext per call, and domain code
never sees a wire message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from iat.app import App
    from iat.registry import Command


@dataclass
class Session:
    """One connected peer: the stdio parent, a socket or websocket connection, an HTTP request, a test client."""

    transport: str
    authenticated: bool = False
    # Hands an event (name, payload) to this peer without waiting; None where the transport cannot push.
    push: Callable[[str, dict], None] | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class CallContext:
    app: App
    session: Session
    command: Command
