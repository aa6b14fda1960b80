"""image/fetch_gateway.py: the `make build` step that downloads IBKR's zip."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import io
import threading
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "image" / "fetch_gateway.py"


def load_script():
    spec = importlib.util.spec_from_file_location("fetch_gateway", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_zip(prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr(f"{prefix}bin/run.sh", "#!/bin/bash\necho running\n")
        zipped.writestr(f"{prefix}root/conf.yaml", "listenPort: 5000\n")
    return buffer.getvalue()


@pytest.fixture
def serve():
    """Yield a function that serves bytes on 127.0.0.1 and returns their URL."""
    servers = []

    def start(body: bytes) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/gw.zip"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("prefix", ["", "clientportal.gw/"])
def test_fetch_gateway_unpacks_run_sh(serve, tmp_path, prefix):
    body = make_zip(prefix)
    dest = tmp_path / "gw"
    digest = load_script().fetch(serve(body), dest, hashlib.sha256(body).hexdigest())
    assert digest == hashlib.sha256(body).hexdigest()
    assert (dest / "root" / "conf.yaml").read_text() == "listenPort: 5000\n"
    assert (dest / "bin" / "run.sh").stat().st_mode & 0o111


def test_fetch_gateway_refuses_digest_mismatch(serve, tmp_path):
    dest = tmp_path / "gw"
    with pytest.raises(SystemExit, match="not GATEWAY_SHA256=00"):
        load_script().fetch(serve(make_zip()), dest, "00" * 32)
    assert not dest.exists()


def test_fetch_gateway_refuses_zip_without_run_sh(serve, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("readme.txt", "hello")
    with pytest.raises(SystemExit, match="no bin/run.sh"):
        load_script().fetch(serve(buffer.getvalue()), tmp_path / "gw")
