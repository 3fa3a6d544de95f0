"""The copilot (SPEC 2.6, 5.6, 9.1, 9.2): chat sessions, the instructions they propose, and the agents that run
them.

- envelope.py: the instruction contract (SPEC 9.2) and what each instruction type takes.
- repo.py: chat sessions, messages, instructions and their events in the project database.
- lifecycle.py: the allowed status transitions, each one an event row and a notification.
- guardrails.py: project scope, the per-project allow-list, and which instructions need a user's confirmation.
- parser.py: the offline copilot: plain-language requests to proposals or questions, no model needed.
- assistant.py: replies to a chat message (an LLM with tool calls when one is configured, else the parser).
- executor.py / external.py: the built-in agent (through the command registry) and an external agent API.
"""
