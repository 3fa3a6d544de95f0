"""What an assistant decides for one user message, whoever decides it (the offline parser or an LLM's tool calls).

`iat.copilot.chat` carries a Reply out: proposals become instructions (through the guardrails, which may still
refuse one), a query is answered from the registry (costs), a cancel cancels, and the reply's text is the
assistant's message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["propose", "clarify", "answer", "cancel", "refuse", "help"]


@dataclass(frozen=True)
class Proposal:
    """An instruction to create: its type and the payload parts of iat.copilot.envelope (validated on create)."""

    instruction_type: str
    objective: str
    inputs: dict[str, Any]
    execution: dict[str, Any] = field(default_factory=dict)
    constraints: dict[str, Any] = field(default_factory=dict)
    priority: int = 100


@dataclass(frozen=True)
class Reply:
    kind: Kind
    text: str  # what the assistant says (a question for clarify, the refusal's reason for refuse)
    proposals: tuple[Proposal, ...] = ()  # propose: one or more instructions
    options: tuple[str, ...] = ()  # clarify: the choices offered, when there are a few
    query: dict[str, Any] | None = None  # answer: what to look up, e.g. {"kind": "costs", "group_by": "provider"}
    instruction_id: str | None = None  # cancel: the instruction to cancel
    usage: dict[str, Any] = field(default_factory=dict)  # an LLM reply's token usage (and cost), else empty
    source: Literal["parser", "llm"] = "parser"
