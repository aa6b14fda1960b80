"""Settings: defaults, parsing, one-line errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from ibeam_agents.errors import ConfigError
from ibeam_agents.settings import Settings, derive_base_url, load_settings


@pytest.fixture
def gw(tmp_path):
    """A gateway dir without conf.yaml, so nothing is read from /srv."""
    return tmp_path / "gw"


def _load(gw, **env):
    base = {"IBEAM_GATEWAY_DIR": str(gw), "IBEAM_OUTPUTS_DIR": str(gw.parent / "out")}
    base.update(env)
    return load_settings(base)


def _error(gw, **env) -> str:
    with pytest.raises(ConfigError) as info:
        _load(gw, **env)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_settings_defaults_match_the_documented_table(gw):
    s = _load(gw)
    assert s.gateway_base_url == "https://localhost:5000"
    assert s.chrome_driver_path == "/usr/bin/chromedriver"
    assert s.gateway_startup == 20
    assert s.gateway_process_match == "ibgroup.web.core.clientportal.gw.GatewayStart"
    assert s.route_auth == "/sso/Login?forwardTo=22&RL=1&ip2loc=on"
    assert s.route_tickle == "/v1/api/tickle"
    assert s.route_validate == "/v1/portal/sso/validate"
    assert s.route_user == "/v1/api/one/user"
    assert s.success_el_text == "Client login succeeds"
    assert s.maintenance_interval == 60
    assert s.log_level == "INFO"
    assert s.inputs_dir == Path("/srv/inputs")
    assert s.health_server_port == 5001
    assert s.max_failed_auth == 3
    assert (s.backoff_min, s.backoff_max) == (60, 3600)
    assert s.trading_mode == "live"
    assert s.two_fa_handler is None
    assert s.request_timeout == 10
    assert s.reauthenticate_attempts == 2
    assert s.transient_grace == 600
    assert s.compete_max_per_hour == 3
    assert s.start_active is True
    assert s.supervisor_url is None
    assert not s.restart_schedule


def test_settings_base_url_from_conf_yaml(gw):
    (gw / "root").mkdir(parents=True)
    (gw / "root" / "conf.yaml").write_text("listenPort: 5055\nlistenSsl: false\n")
    assert _load(gw).base_url == "http://localhost:5055"
    assert _load(gw).gateway_port == 5055


def test_settings_explicit_base_url_wins(gw):
    (gw / "root").mkdir(parents=True)
    (gw / "root" / "conf.yaml").write_text("listenPort: 5055\n")
    s = _load(gw, IBEAM_GATEWAY_BASE_URL="https://127.0.0.1:6000/")
    assert s.base_url == "https://127.0.0.1:6000"
    assert s.gateway_port == 6000


def test_settings_broken_conf_yaml_is_named(gw):
    (gw / "root").mkdir(parents=True)
    (gw / "root" / "conf.yaml").write_text("listenPort: [\n")
    assert "conf.yaml" in _error(gw)
    (gw / "root" / "conf.yaml").write_text("listenPort: high\n")
    assert "listenPort" in _error(gw)


def test_derive_base_url_without_conf_is_the_default(tmp_path):
    assert derive_base_url(tmp_path) == "https://localhost:5000"


@pytest.mark.parametrize(
    "name,value,words",
    [
        ("IBEAM_MAINTENANCE_INTERVAL", "abc", "number of seconds greater than 0"),
        ("IBEAM_MAINTENANCE_INTERVAL", "0", "greater than 0"),
        ("IBEAM_MAINTENANCE_INTERVAL", "nan", "number"),
        ("IBEAM_MAX_FAILED_AUTH", "0", "at least 1"),
        ("IBEAM_MAX_FAILED_AUTH", "2.5", "whole number"),
        ("IBEAM_HEALTH_SERVER_PORT", "-1", "from 0 to 65535"),
        ("IBEAM_HEALTH_SERVER_PORT", "65536", "from 0 to 65535"),
        ("IBEAM_HEALTH_SERVER_HOST", "not a host!", "address"),
        ("IBEAM_DISPLAY", "display99", "X display"),
        ("IBEAM_TWO_FA_COMMAND", "'unbalanced", "quotes"),
        ("IBEAM_LOG_LEVEL", "LOUD", "DEBUG, INFO"),
        ("IBEAM_TRADING_MODE", "demo", "live, paper"),
        ("IBEAM_START_ACTIVE", "maybe", "true or false"),
        ("IBEAM_ROUTE_TICKLE", "v1/api/tickle", "starting with '/'"),
        ("IBEAM_GATEWAY_BASE_URL", "localhost:5000", "URL"),
        ("IBEAM_SUPERVISOR_URL", "tcp://x", "unix://"),
        ("IBEAM_TWO_FA_HANDLER", "SMS", "TOTP, EXTERNAL_REQUEST"),
        ("IBEAM_TWO_FA_HANDLER", "GOOGLE_MSG", "not supported"),
        ("IBEAM_EXTERNAL_REQUEST_METHOD", "PATCH", "GET, POST"),
        ("IBEAM_CUSTOM_TWO_FA_HANDLER", "nodots", "module.Class"),
        ("IBEAM_USER_NAME_EL", "BOGUS@@x", "unknown locator type"),
        ("IBEAM_RESTART_SCHEDULE", "25:00", "impossible time"),
        ("IBEAM_RESTART_TIMEZONE", "Mars/Olympus", "IANA zone"),
        ("IBEAM_GATEWAY_CA_CERT", "/nonexistent.pem", "does not exist"),
        ("IBEAM_SECRETS_SOURCE", "gcp_secrets_manager", "env or fs"),
    ],
)
def test_settings_bad_value_names_the_variable(gw, name, value, words):
    message = _error(gw, **{name: value})
    assert name in message
    assert words in message


def test_settings_bad_value_is_shown_when_not_secret(gw):
    assert "'abc'" in _error(gw, IBEAM_REQUEST_TIMEOUT="abc")


def test_settings_external_request_url_is_never_echoed(gw):
    message = _error(
        gw,
        IBEAM_EXTERNAL_REQUEST_URL="ftp://token@example",
        IBEAM_TWO_FA_HANDLER="TOTP",
    )
    assert "token" not in message


def test_settings_backoff_bounds_checked(gw):
    message = _error(gw, IBEAM_BACKOFF_MIN="100", IBEAM_BACKOFF_MAX="10")
    assert "IBEAM_BACKOFF_MIN" in message and "IBEAM_BACKOFF_MAX" in message


def test_settings_log_level_any_case(gw):
    assert _load(gw, IBEAM_LOG_LEVEL="debug").log_level == "DEBUG"
    assert _load(gw, IBEAM_LOG_LEVEL="Warn").log_level == "WARNING"


def test_settings_paper_mode_both_spellings(gw):
    assert _load(gw, IBEAM_TRADING_MODE="PAPER").trading_mode == "paper"
    assert _load(gw, IBEAM_USE_PAPER_ACCOUNT="true").trading_mode == "paper"
    assert _load(gw, IBEAM_USE_PAPER_ACCOUNT="no").trading_mode == "live"
    message = _error(gw, IBEAM_TRADING_MODE="live", IBEAM_USE_PAPER_ACCOUNT="yes")
    assert "IBEAM_USE_PAPER_ACCOUNT" in message


def test_settings_two_fa_aliases(gw):
    totp = {"IBEAM_TOTP_SECRET": "JBSWY3DPEHPK3PXP"}
    assert _load(gw, IBEAM_TWO_FA_HANDLER="pyotp", **totp).two_fa_handler == "TOTP"
    push = _load(gw, IBEAM_TWO_FA_HANDLER="NOTIFICATION_RESEND")
    assert push.two_fa_handler == "IBKEY_PUSH"
    assert _load(gw, IBEAM_TWO_FA_HANDLER="none").two_fa_handler is None


def test_settings_totp_needs_a_valid_secret(gw):
    assert "IBEAM_TOTP_SECRET" in _error(gw, IBEAM_TWO_FA_HANDLER="TOTP")
    message = _error(gw, IBEAM_TOTP_SECRET="not base32 !")
    assert "base32" in message and "not base32" not in message


def test_settings_totp_secret_alias_and_file(gw, tmp_path):
    assert _load(gw, IBEAM_PYOTP_SECRET="jbsw y3dp").totp_secret == "JBSWY3DP"
    secret = tmp_path / "totp"
    secret.write_text("JBSWY3DPEHPK3PXP\n")
    assert (
        _load(gw, IBEAM_TOTP_SECRET_FILE=str(secret)).totp_secret == "JBSWY3DPEHPK3PXP"
    )


def test_settings_command_and_request_need_their_piece(gw):
    assert "IBEAM_TWO_FA_COMMAND" in _error(gw, IBEAM_TWO_FA_HANDLER="COMMAND")
    assert "IBEAM_EXTERNAL_REQUEST_URL" in _error(
        gw, IBEAM_TWO_FA_HANDLER="EXTERNAL_REQUEST"
    )


def test_settings_request_headers_json(gw):
    s = _load(gw, IBEAM_EXTERNAL_REQUEST_HEADERS='{"Authorization": "Bearer t"}')
    assert s.external_request_headers == {"Authorization": "Bearer t"}
    message = _error(gw, IBEAM_EXTERNAL_REQUEST_HEADERS='["x"]')
    assert "JSON object" in message


def test_settings_request_url_from_a_secret_file(gw, tmp_path):
    secret = tmp_path / "url"
    secret.write_text("https://codes.example/next?token=hidden\n")
    s = _load(gw, IBEAM_EXTERNAL_REQUEST_URL_FILE=str(secret))
    assert s.external_request_url == "https://codes.example/next?token=hidden"
    secret.write_text("ftp://codes.example/?token=hidden\n")
    message = _error(gw, IBEAM_EXTERNAL_REQUEST_URL_FILE=str(secret))
    assert "IBEAM_EXTERNAL_REQUEST_URL" in message and "hidden" not in message


def test_settings_element_variables_old_and_new_names(gw):
    assert _load(gw, IBEAM_USER_NAME_EL_ID="user_name").user_name_el == "user_name"
    assert (
        _load(gw, IBEAM_SUBMIT_EL="CSS_SELECTOR@@.go").submit_el == "CSS_SELECTOR@@.go"
    )
    message = _error(gw, IBEAM_PASSWORD_EL="a", IBEAM_PASSWORD_EL_ID="b")
    assert "IBEAM_PASSWORD_EL" in message


def test_settings_success_text_accepts_ibeam_syntax(gw):
    s = _load(gw, IBEAM_SUCCESS_EL_TEXT="TAG_NAME@@Client login succeeds")
    assert s.success_el_text == "Client login succeeds"


def test_settings_repr_masks_secrets(gw):
    s = _load(
        gw,
        IBEAM_TOTP_SECRET="JBSWY3DPEHPK3PXP",
        IBEAM_EXTERNAL_REQUEST_HEADERS='{"Authorization": "Bearer hidden"}',
    )
    assert "JBSWY3DP" not in repr(s)
    assert "hidden" not in repr(s)
    described = s.describe()
    assert described["totp_secret"] == "***"
    assert "hidden" not in str(described)


def test_settings_restart_schedule_parsed(gw):
    s = _load(
        gw, IBEAM_RESTART_SCHEDULE="Sat 23:30, 07:15", IBEAM_RESTART_TIMEZONE="UTC"
    )
    assert len(s.restart_schedule.entries) == 2
    assert s.restart_schedule.zone_name == "UTC"


def test_settings_derived_paths(gw):
    s = _load(gw, IBEAM_OUTPUTS_DIR="/tmp/o")
    assert s.budget_path == Path("/tmp/o/failure-budget.json")


def test_settings_builds_login_options_and_two_factor(gw):
    s = _load(
        gw,
        IBEAM_TRADING_MODE="paper",
        IBEAM_TWO_FA_HANDLER="TOTP",
        IBEAM_TOTP_SECRET="JBSWY3DPEHPK3PXP",
        IBEAM_SUBMIT_EL="CSS_SELECTOR@@.go",
        IBEAM_OAUTH_TIMEOUT="7",
    )
    options = s.login_options()
    assert options.trading_mode == "paper"
    assert options.submit_el == "CSS_SELECTOR@@.go"
    assert options.step_timeout == 7
    assert options.base_url == "https://localhost:5000"
    factor = s.two_factor_config()
    assert factor.handler == "TOTP"
    assert factor.totp_secret == "JBSWY3DPEHPK3PXP"
    assert factor.push_timeout == 180


def test_settings_empty_values_mean_unset(gw):
    assert _load(gw, IBEAM_MAINTENANCE_INTERVAL="  ").maintenance_interval == 60


def test_settings_constructed_directly_for_the_library(gw):
    s = Settings(gateway_dir=gw, maintenance_interval=5)
    assert s.base_url == "https://localhost:5000"
    assert s.with_changes(maintenance_interval=1).maintenance_interval == 1


@pytest.mark.parametrize(
    "name", ["IBEAM_GATEWAY_DIR", "IBEAM_INPUTS_DIR", "IBEAM_OUTPUTS_DIR"]
)
def test_settings_directory_that_is_a_file_is_refused(gw, tmp_path, name):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    message = _error(gw, **{name: str(a_file)})
    assert name in message and "must be a directory" in message


def test_settings_ca_cert_without_a_certificate_is_refused(gw, tmp_path):
    pem = tmp_path / "ca.pem"
    pem.write_text("not a certificate\n")
    assert "holds no certificate" in _error(gw, IBEAM_GATEWAY_CA_CERT=str(pem))


def test_settings_custom_handler_module_must_exist(gw, tmp_path):
    message = _error(
        gw, IBEAM_TWO_FA_HANDLER="CUSTOM_HANDLER", IBEAM_INPUTS_DIR=str(tmp_path)
    )
    assert "custom_two_fa_handler.py does not exist" in message
