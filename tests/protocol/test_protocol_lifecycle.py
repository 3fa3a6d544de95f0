"""Start and stop of the real process: the ready file, system.shutdown, end of stdin, SIGTERM and the death of the
parent, each within 2 s, with what was committed kept. Each test starts its own process."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.process

TRANSPORTS = ("stdio", "tcp", "http")


def check_ready_file(process) -> None:
    """While running: $IAT_HOME/sidecar.json, readable by this user only, with the ready params."""
    path = process.ready_file
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, oct(path.stat().st_mode)
    assert json.loads(path.read_text()) == process.ready


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_system_shutdown_replies_then_exits(launch, proto, transport):
    process = launch(transport)
    client = process.connect()
    check_ready_file(process)
    reply = client.request(proto.rpc("system.shutdown", id="bye"))
    replied = time.monotonic()
    assert proto.result(reply, "bye") == {"stopping": True}
    assert process.wait_exit(since=replied) == 0
    assert not process.ready_file.exists()
    client.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sigterm_exits_and_keeps_committed_work(launch, proto, transport, tmp_path):
    process = launch(transport)
    client = process.connect()
    check_ready_file(process)
    slug = proto.unique_slug("kept")
    created = client.call("projects.create", {"slug": slug, "name": "Kept"})
    start = time.monotonic()
    process.proc.send_signal(signal.SIGTERM)
    assert process.wait_exit(since=start) == 0
    assert not process.ready_file.exists()
    client.close()

    again = launch(transport, home=process.home)
    client = again.connect()
    assert client.call("projects.get", {"slug": slug})["id"] == created["id"]
    assert again.stop() == 0


def test_closing_stdin_exits_and_persists_the_last_write(launch, proto):
    process = launch("stdio")
    client = process.connect()
    check_ready_file(process)
    slug = proto.unique_slug("last")
    client.send_raw(proto.encode(proto.rpc("projects.create", {"slug": slug, "name": "Last"}, id="last")) + b"\n")
    start = time.monotonic()
    process.close_stdin()  # right behind the create, without waiting for its answer
    assert process.wait_exit(since=start) == 0
    assert not process.ready_file.exists()
    # The call was admitted before end of input: it finished and was answered before the exit.
    created = proto.result(process.stdout.next_reply(timeout=1.0), "last")

    again = launch("stdio", home=process.home)
    client = again.connect()
    assert client.call("projects.get", {"slug": slug})["id"] == created["id"]
    assert again.stop() == 0


def test_second_stop_request_is_harmless(launch, proto):
    """Shutdown asked twice (system.shutdown, then SIGTERM while stopping) is still one clean stop."""
    process = launch("tcp")
    client = process.connect()
    start = time.monotonic()
    proto.result(client.request(proto.rpc("system.shutdown", id=1)), 1)
    try:
        process.proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    assert process.wait_exit(since=start) == 0
    assert not process.ready_file.exists()
    client.close()


# --- the parent dies ---

_PY_WRAPPER = "import subprocess, sys; subprocess.Popen(sys.argv[1:]).wait()"


@pytest.mark.parametrize("wrapper,transport", [
    (["sh", "-c", '"$@"; exit $?', "sh"], "stdio"),  # a shell in between; our end of its stdin stays open
    ([sys.executable, "-c", _PY_WRAPPER], "tcp"),
    ([sys.executable, "-c", _PY_WRAPPER], "http"),
], ids=["sh-stdio", "python-tcp", "python-http"])
def test_parent_death_ends_the_sidecar(launch, proto, wrapper, transport):
    process = launch(transport, argv_prefix=wrapper)
    sidecar_pid = process.pid
    assert sidecar_pid != process.proc.pid, "the wrapper exec'd the sidecar instead of starting it"
    client = process.connect()
    assert client.call("system.ping")["pong"] is True
    assert not proto.pid_gone(sidecar_pid)

    process.proc.send_signal(signal.SIGKILL)  # the parent dies without a word
    killed = time.monotonic()
    process.proc.wait(5)
    assert proto.wait_pid_gone(sidecar_pid, proto.EXIT_BUDGET_S - (time.monotonic() - killed) + 0.5), (
        f"sidecar {sidecar_pid} outlived its parent by more than ~2 s; stderr tail:\n"
        f"{process.stderr_text()[-2000:]}")
    # it stopped cleanly (SIGTERM / the watchdog), not by a crash
    deadline = time.monotonic() + 1.0
    while process.ready_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not process.ready_file.exists()
    assert "stopped" in process.log_text()
    client.close()


def test_cli_serve_without_transport_is_a_usage_error(proto, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IAT_")}
    env["IAT_HOME"] = str(tmp_path / "home")
    result = subprocess.run([str(proto.SIDECAR_BIN), "serve"], env=env, capture_output=True, timeout=30)
    assert result.returncode == 2
    assert result.stdout == b""
