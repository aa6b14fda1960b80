"""Second-factor sources: TOTP timing, command, HTTP endpoint, custom handlers."""

from __future__ import annotations

import http.server
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from ibeam_agents import twofa
from ibeam_agents.errors import ConfigError, SecondFactorUnavailable
from ibeam_agents.twofa import (
    CodeContext,
    CommandSource,
    HttpSource,
    TotpSource,
    TwoFactorConfig,
    make_second_factor,
    normalise_handler,
    validate_code,
)

# RFC 6238 test key "12345678901234567890" (SHA-1), in base32.
RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _totp(now: float) -> tuple[TotpSource, FakeTime]:
    fake = FakeTime(now)
    return TotpSource(RFC_SECRET, clock=fake.clock, sleep=fake.sleep), fake


def test_totp_matches_rfc_6238_vector():
    source, fake = _totp(31.0)  # same 30 s step as the RFC's T=59
    assert source.code(CodeContext()) == "287082"
    assert fake.slept == []


def test_totp_waits_for_next_step_near_the_end():
    source, fake = _totp(55.0)  # 5 s left in the step
    code = source.code(CodeContext())
    assert fake.slept == [5.0]
    assert fake.now == 60.0
    assert code == source._generate(60.0)


def test_totp_never_reuses_a_rejected_code():
    source, fake = _totp(31.0)
    first = source.code(CodeContext())
    second = source.code(CodeContext(rejected=frozenset({first})))
    assert second != first
    assert fake.now == 60.0


def test_totp_accepts_spaced_lowercase_unpadded_secret():
    spaced = " ".join(RFC_SECRET.lower()[i : i + 4] for i in range(0, 32, 4))
    fake = FakeTime(31.0)
    source = TotpSource(spaced, clock=fake.clock, sleep=fake.sleep)
    assert source.code(CodeContext()) == "287082"


@pytest.mark.parametrize("secret", ["not base32!!", "GEZDGNBV1", "ABCD"])
def test_totp_bad_secret_is_config_error_without_value(secret):
    with pytest.raises(ConfigError, match="IBEAM_TOTP_SECRET") as info:
        TotpSource(secret)
    assert secret not in str(info.value)


def test_make_second_factor_totp_needs_secret():
    with pytest.raises(ConfigError, match="IBEAM_TOTP_SECRET"):
        make_second_factor(TwoFactorConfig(handler="TOTP"))


def test_config_repr_hides_secret():
    config = TwoFactorConfig(handler="TOTP", totp_secret=RFC_SECRET)
    assert RFC_SECRET not in repr(config)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("totp", "TOTP"),
        ("PYOTP", "TOTP"),
        ("NOTIFICATION_RESEND", "IBKEY_PUSH"),
        ("external_request", "EXTERNAL_REQUEST"),
        ("None", None),
        ("", None),
        (None, None),
    ],
)
def test_normalise_handler_aliases(name, canonical):
    assert normalise_handler(name) == canonical


def test_unknown_handler_names_the_setting():
    with pytest.raises(ConfigError, match="IBEAM_TWO_FA_HANDLER"):
        make_second_factor(TwoFactorConfig(handler="GOOGLE_MSG"))


def test_push_source_needs_no_code():
    source = make_second_factor(TwoFactorConfig(handler="IBKEY_PUSH"))
    assert source.kind == "IBKEY_PUSH" and source.needs_code is False
    assert source.picker_targets == ("IB Key",)
    with pytest.raises(SecondFactorUnavailable):
        source.code(CodeContext())


@pytest.mark.parametrize(
    "raw", ["12a456", "12 34 56", "", "123", "12345678901", "１２３４５６"]
)
def test_validate_code_rejects_non_codes(raw):
    with pytest.raises(SecondFactorUnavailable) as info:
        validate_code(raw, "source")
    assert raw.strip() == "" or raw not in str(info.value)


def test_validate_code_strips_newline():
    assert validate_code(" 123456\n", "source") == "123456"


# --- command ----------------------------------------------------------------


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "code.sh"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def test_command_prints_code(tmp_path):
    script = _script(tmp_path, 'echo "  654321"')
    assert CommandSource(str(script), 10).code(CodeContext()) == "654321"


def test_command_runs_without_shell(tmp_path):
    script = _script(tmp_path, 'test "$1" = "a b;c" && echo 111222')
    source = CommandSource(f"{script} 'a b;c'", 10)
    assert source.code(CodeContext()) == "111222"


def test_command_failure_status_is_reported(tmp_path):
    script = _script(tmp_path, "echo 123456; exit 3")
    with pytest.raises(SecondFactorUnavailable, match="status 3") as info:
        CommandSource(str(script), 10).code(CodeContext())
    assert "123456" not in str(info.value)


def test_command_timeout(tmp_path):
    script = _script(tmp_path, "sleep 5")
    with pytest.raises(SecondFactorUnavailable, match="within"):
        CommandSource(str(script), 0.3).code(CodeContext())


def test_command_missing_program():
    with pytest.raises(SecondFactorUnavailable, match="not found"):
        CommandSource("/nonexistent/get-code", 5).code(CodeContext())


def test_command_bad_quotes_is_config_error():
    with pytest.raises(ConfigError, match="IBEAM_TWO_FA_COMMAND"):
        make_second_factor(TwoFactorConfig(handler="COMMAND", command="say 'hi"))


# --- HTTP endpoint ------------------------------------------------------------


class _CodeServer:
    """A local endpoint answering a scripted list of (status, body) replies."""

    def __init__(self, replies: list[tuple[int, str]]) -> None:
        self.replies = list(replies)
        self.seen: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                outer.seen.append((self.command, dict(self.headers)))
                status, body = outer.replies.pop(0) if outer.replies else (404, "")
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/code"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def code_server():
    servers = []

    def start(replies):
        server = _CodeServer(replies)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_http_source_reads_body_with_method_and_headers(code_server):
    server = code_server([(200, "246810\n")])
    source = HttpSource(
        server.url, method="post", timeout=5, headers={"X-Token": "abc"}
    )
    assert source.code(CodeContext()) == "246810"
    method, headers = server.seen[0]
    assert method == "POST" and headers["X-Token"] == "abc"


def test_http_source_polls_until_code_arrives(code_server):
    server = code_server([(404, ""), (204, ""), (200, "135790")])
    fake = FakeTime(0.0)
    source = HttpSource(server.url, timeout=30, clock=fake.clock, sleep=fake.sleep)
    assert source.code(CodeContext()) == "135790"
    assert fake.slept == [1.0, 1.0]


def test_http_source_gives_up_after_timeout(code_server):
    fake = FakeTime(0.0)
    server = code_server([(404, "")] * 10)
    source = HttpSource(server.url, timeout=3, clock=fake.clock, sleep=fake.sleep)
    with pytest.raises(SecondFactorUnavailable, match="within 3 s"):
        source.code(CodeContext())


def test_http_source_server_error(code_server):
    server = code_server([(500, "oops")])
    with pytest.raises(SecondFactorUnavailable, match="HTTP 500"):
        HttpSource(server.url, timeout=5).code(CodeContext())


def test_http_source_unreachable():
    from tests.support.ports import free_port

    url = f"http://127.0.0.1:{free_port()}/code"
    with pytest.raises(SecondFactorUnavailable, match="could not be reached"):
        HttpSource(url, timeout=2).code(CodeContext())


def test_http_source_needs_http_url():
    with pytest.raises(ConfigError, match="IBEAM_EXTERNAL_REQUEST_URL"):
        make_second_factor(
            TwoFactorConfig(handler="EXTERNAL_REQUEST", request_url="ftp://x")
        )


# --- custom handler -------------------------------------------------------------


def _handler_config(tmp_path: Path, source: str, **extra) -> TwoFactorConfig:
    (tmp_path / "custom_two_fa_handler.py").write_text(textwrap.dedent(source))
    return TwoFactorConfig(
        handler="CUSTOM_HANDLER",
        inputs_dir=tmp_path,
        outputs_dir=tmp_path / "out",
        **extra,
    )


def test_custom_handler_with_ibeam_interface(tmp_path):
    config = _handler_config(
        tmp_path,
        """
        from ibeam.src.two_fa_handlers.two_fa_handler import TwoFaHandler

        class CustomTwoFaHandler(TwoFaHandler):
            def get_two_fa_code(self, driver):
                return "%s" % (driver.code if driver else "000000")
        """,
    )

    class Driver:
        code = "424242"

    source = make_second_factor(config)
    assert source.kind == "CUSTOM_HANDLER"
    assert source.code(CodeContext(driver=Driver())) == "424242"
    assert source._handler.outputs_dir == tmp_path / "out"


def test_custom_handler_with_code_method_and_target(tmp_path):
    config = _handler_config(
        tmp_path,
        """
        class Mine:
            select_target = "SMS"
            def __init__(self, outputs_dir):
                self.outputs_dir = outputs_dir
            def code(self, context):
                return str(100000 + context.attempt)
        """,
        custom_handler="custom_two_fa_handler.Mine",
    )
    source = make_second_factor(config)
    assert source.picker_targets == ("SMS",)
    assert source.code(CodeContext(attempt=2)) == "100002"


def test_custom_handler_returning_none_is_unavailable(tmp_path):
    config = _handler_config(
        tmp_path,
        """
        class CustomTwoFaHandler:
            def __init__(self, outputs_dir=None):
                pass
            def get_two_fa_code(self, driver):
                return None
        """,
    )
    with pytest.raises(SecondFactorUnavailable, match="no second-factor code"):
        make_second_factor(config).code(CodeContext())


def test_custom_handler_raising_is_unavailable(tmp_path):
    config = _handler_config(
        tmp_path,
        """
        class CustomTwoFaHandler:
            def __init__(self, outputs_dir=None):
                pass
            def get_two_fa_code(self, driver):
                raise RuntimeError("mailbox down")
        """,
    )
    with pytest.raises(SecondFactorUnavailable, match="RuntimeError"):
        make_second_factor(config).code(CodeContext())


def test_custom_handler_missing_module(tmp_path):
    config = TwoFactorConfig(handler="CUSTOM_HANDLER", inputs_dir=tmp_path)
    with pytest.raises(
        ConfigError, match="IBEAM_CUSTOM_TWO_FA_HANDLER.*does not exist"
    ):
        make_second_factor(config)


def test_custom_handler_missing_class(tmp_path):
    config = _handler_config(tmp_path, "X = 1\n")
    with pytest.raises(ConfigError, match="no class CustomTwoFaHandler"):
        make_second_factor(config)


def test_custom_handler_broken_module(tmp_path):
    config = _handler_config(tmp_path, "def broken(:\n")
    with pytest.raises(ConfigError, match="SyntaxError"):
        make_second_factor(config)


def test_custom_handler_name_needs_module_and_class(tmp_path):
    config = TwoFactorConfig(
        handler="CUSTOM_HANDLER", inputs_dir=tmp_path, custom_handler="JustAName"
    )
    with pytest.raises(ConfigError, match="module.Class"):
        make_second_factor(config)


def test_ibeam_shim_does_not_replace_real_module(monkeypatch):
    sentinel = object()
    monkeypatch.setitem(sys.modules, "ibeam", sentinel)
    twofa._provide_ibeam_base_class()
    assert sys.modules["ibeam"] is sentinel


def test_totp_code_of_a_used_step_is_not_sent_again():
    used: dict[str, int] = {}
    fake = FakeTime(31.0)
    first = TotpSource(RFC_SECRET, clock=fake.clock, sleep=fake.sleep, used_steps=used)
    assert first.code(CodeContext()) == "287082"
    # A new attempt (a new source) in the same step waits for the next code.
    again = TotpSource(RFC_SECRET, clock=fake.clock, sleep=fake.sleep, used_steps=used)
    assert again.code(CodeContext()) == again._generate(60.0)
    assert fake.slept == [29.0]


def test_totp_used_step_memory_ignores_a_clock_gone_back():
    used: dict[str, int] = {}
    fake = FakeTime(3000.0)
    TotpSource(RFC_SECRET, clock=fake.clock, used_steps=used).code(CodeContext())
    fake.now = 31.0
    source = TotpSource(RFC_SECRET, clock=fake.clock, sleep=fake.sleep, used_steps=used)
    assert source.code(CodeContext()) == "287082" and fake.slept == []


def test_totp_from_settings_shares_used_steps():
    config = TwoFactorConfig(handler="TOTP", totp_secret=RFC_SECRET)
    source = make_second_factor(config)
    assert source._used is twofa.USED_TOTP_STEPS
