"""The copilot through the frozen binary: a chat turn answered by the offline parser and carried out by the
built-in agent, and one answered by the LLM path (the openai SDK streaming tool calls from the loopback chat
server). Only the frozen build shows that the copilot's modules and the SDK's streaming code were carried."""

from __future__ import annotations

import time
from pathlib import Path

from tests.frozen.test_frozen_smoke import FrozenSidecar, bare_env, frozen_binary  # noqa: F401 - fixtures


def _wait_instruction(sidecar: FrozenSidecar, instruction_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (got := sidecar.result("agent.instructions.get", {"slug": "talk", "instruction_id": instruction_id}))[
            "status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"instruction did not end; log:\n{sidecar.log()}"
        time.sleep(0.3)
    return got


def test_frozen_copilot_chats_offline_and_through_an_llm(frozen_binary: Path, bare_env: dict[str, str]) -> None:
    from tests.vendors.loopback import LoopbackServer
    from tests.vendors.openai_chat import Answer, ChatState, make_app

    state = ChatState()
    server = LoopbackServer(make_app(state))
    server.start()
    sidecar = FrozenSidecar(frozen_binary, bare_env)
    try:
        assert sidecar.read_message(timeout=60).get("method") == "sidecar.ready", sidecar.log()
        sidecar.result("projects.create", {"slug": "talk", "name": "Talk"})
        session = sidecar.result("chat.sessions.create", {"slug": "talk", "title": "frozen"})
        turn = sidecar.result("chat.messages.send", {"slug": "talk", "session_id": session["id"],
                                                     "text": "export the project as a zip"})
        [instruction] = turn["instructions"]
        assert turn["assistant_message"]["content_json"]["source"] == "parser"
        assert _wait_instruction(sidecar, instruction["id"])["status"] == "done", sidecar.log()
        assert sidecar.result("exports.list", {"slug": "talk"})["items"][0]["format"] == "zip"

        sidecar.result("providers.configure", {"slug": "talk", "provider_code": "llm", "config": {
            "endpoint": server.url + "/v1", "timeout_s": 30}})
        state.answer(Answer(text="Checking it.", tool_calls=[("propose_storage_sync", {
            "objective": "Push the project to S3", "inputs": {"direction": "push"}, "execution": {"dry_run": True}})]))
        turn = sidecar.result("chat.messages.send", {"slug": "talk", "session_id": session["id"],
                                                     "text": "push the project to the bucket, dry run"})
        answer = turn["assistant_message"]
        assert answer["content_json"]["source"] == "llm", (answer, sidecar.log())
        assert answer["token_usage_json"]["total_tokens"] > 0
        [instruction] = turn["instructions"]
        assert instruction["instruction_type"] == "storage_sync" and instruction["payload"]["execution"] == {
            "dry_run": True}
        assert len(state.received) == 1
    finally:
        sidecar.kill()
        server.stop()
