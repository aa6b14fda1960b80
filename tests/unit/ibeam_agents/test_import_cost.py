"""The standalone agent loads no library that only an optional feature needs.

Each check runs in a fresh interpreter, since this one has imported everything
the other tests use.  Memory figures belong to the benchmark (docs/performance.md);
these tests only keep the lazy imports lazy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

#: what the standalone agent imports to run
AGENT_MODULES = (
    "cli",
    "keeper",
    "watcher",
    "health",
    "gateway",
    "client",
    "settings",
    "credentials",
    "budget",
    "metrics",
)

#: loaded only by the feature that needs it
OPTIONAL = (
    "selenium",  # the browser login, imported when a login starts
    "jinja2",  # the appliance's init step
    "supervisor.xmlrpc",  # a gateway under supervisord
    "xmlrpc.client",  # the same
    "cryptography.fernet",  # IBEAM_KEY
)

REPORT = "import json, sys; print(json.dumps(sorted(sys.modules)))"


def loaded_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    """The modules a fresh interpreter holds after running code."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{REPORT}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def standalone_environment(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("IBEAM_", "SUPERVISOR_"))
    }
    gateway_dir = tmp_path / "gw"
    (gateway_dir / "root").mkdir(parents=True)
    (gateway_dir / "root" / "conf.yaml").write_text("listenPort: 5000\n")
    env.update(
        IBEAM_GATEWAY_DIR=str(gateway_dir),
        IBEAM_OUTPUTS_DIR=str(tmp_path / "outputs"),
        IBEAM_INPUTS_DIR=str(tmp_path / "inputs"),
        IBEAM_ACCOUNT="someone",
        IBEAM_PASSWORD="not-a-real-password",
    )
    return env


def test_agent_modules_import_no_optional_library():
    imports = "\n".join(f"import ibeam_agents.{name}" for name in AGENT_MODULES)

    loaded = loaded_after(imports)

    assert sorted(loaded.intersection(OPTIONAL)) == []


def test_standalone_client_builds_without_optional_libraries(tmp_path):
    code = (
        "from ibeam_agents.keeper import GatewayClient\n"
        "GatewayClient.from_environment(interactive=False)"
    )

    loaded = loaded_after(code, standalone_environment(tmp_path))

    assert sorted(loaded.intersection(OPTIONAL)) == []
    assert "ibeam_agents.login" not in loaded
