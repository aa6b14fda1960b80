"""The supervisord event listener that ends the appliance on a FATAL program."""

from __future__ import annotations

import io
import signal

from ibeam_agents import eventlistener


def event(name, payload):
    header = (
        "ver:3.0 server:supervisor serial:1 pool:fatal poolserial:1 "
        f"eventname:{name} len:{len(payload)}\n"
    )
    return header + payload


def run_listener(monkeypatch, events):
    kills = []
    monkeypatch.setattr(eventlistener.os, "getppid", lambda: 4242)
    monkeypatch.setattr(eventlistener.os, "kill", lambda *args: kills.append(args))
    stdout, stderr = io.StringIO(), io.StringIO()
    status = eventlistener.main(io.StringIO("".join(events)), stdout, stderr)
    return status, kills, stdout.getvalue(), stderr.getvalue()


def test_listener_stops_supervisord_on_fatal(monkeypatch):
    fatal = event(
        "PROCESS_STATE_FATAL",
        "processname:gateway groupname:gateway from_state:BACKOFF",
    )
    status, kills, stdout, stderr = run_listener(monkeypatch, [fatal])
    assert status == 0
    assert kills == [(4242, signal.SIGTERM)]
    assert stdout == "READY\nRESULT 2\nOKREADY\n"
    assert "program gateway is FATAL" in stderr
    assert "[ERROR] ibeam.eventlistener" in stderr


def test_listener_ignores_other_events(monkeypatch):
    running = event(
        "PROCESS_STATE_RUNNING", "processname:agent groupname:agent from_state:STARTING"
    )
    status, kills, stdout, stderr = run_listener(monkeypatch, [running, running])
    assert status == 0
    assert kills == []
    assert stdout.count("RESULT 2\nOK") == 2
    assert stderr == ""


def test_describe_names_group_and_process():
    assert eventlistener.describe("processname:a groupname:g from_state:X") == "g:a"
    assert eventlistener.describe("processname:a groupname:a from_state:X") == "a"
