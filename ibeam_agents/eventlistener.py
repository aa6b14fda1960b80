"""supervisord event listener: a program that goes FATAL ends the appliance.

supervisord gives up on a program after ``startretries`` failed starts and leaves
it FATAL while everything else keeps running, so a container would look alive with
no gateway or no agent.  This listener asks supervisord to shut down instead; the
container then exits and its orchestrator restarts it from a clean state.

Run by supervisord as ``python -m ibeam_agents.eventlistener`` with
``events=PROCESS_STATE_FATAL``.  stdout is supervisord's protocol channel, so the
listener writes its own lines to stderr.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import TextIO

from supervisor import childutils


def main(
    stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr
) -> int:
    """Serve events until supervisord closes the pipe; end it on a FATAL one."""
    while True:
        childutils.listener.ready(stdout)
        line = stdin.readline()
        if not line:
            return 0
        headers = childutils.get_headers(line)
        payload = stdin.read(int(headers["len"]))
        if headers.get("eventname") == "PROCESS_STATE_FATAL":
            name = describe(payload)
            log(stderr, f"program {name} is FATAL: shutting supervisord down")
            os.kill(os.getppid(), signal.SIGTERM)
        childutils.listener.ok(stdout)


def describe(payload: str) -> str:
    """Name the program an event payload is about, e.g. ``gateway``."""
    fields, _ = childutils.eventdata(payload + "\n")
    group, name = fields.get("groupname"), fields.get("processname", "?")
    return name if group in (None, name) else f"{group}:{name}"


def log(stream: TextIO, message: str) -> None:
    """Write one line in the project's log format."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    stream.write(f"{stamp} [{os.getpid()}] [ERROR] ibeam.eventlistener: {message}\n")
    stream.flush()


def _exit_quietly(signum, frame) -> None:
    """supervisord stops the listener with SIGTERM at shutdown: that is a clean end."""
    sys.exit(0)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_quietly)
    sys.exit(main())
