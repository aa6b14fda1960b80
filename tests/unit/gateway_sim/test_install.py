"""The gateway directory written by gateway_sim.install."""

from __future__ import annotations

import os
import sys

import pytest

from gateway_sim.install import InstallError, install


def test_layout_and_run_sh(tmp_path):
    target = install(str(tmp_path / "gw"))
    files = {
        os.path.relpath(os.path.join(base, name), target)
        for base, _, names in os.walk(target)
        for name in names
    }
    assert files == {
        "bin/run.sh",
        "root/conf.yaml",
        "root/vertx.jks",
        "root/webapps/demo/index.html",
        "sim/accounts.yaml",
    }
    script = (tmp_path / "gw" / "bin" / "run.sh").read_text()
    assert sys.executable in script
    assert "ibgroup.web.core.clientportal.gw.GatewayStart" in script
    assert "@PYTHON" not in script
    assert (
        oct(os.stat(tmp_path / "gw" / "sim" / "accounts.yaml").st_mode & 0o777)
        == "0o600"
    )


def test_force_only_replaces_a_gateway(tmp_path):
    install(str(tmp_path / "gw"))
    with pytest.raises(InstallError, match="pass --force"):
        install(str(tmp_path / "gw"))
    install(str(tmp_path / "gw"), force=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(InstallError, match="only replaces a gateway directory"):
        install(str(other), force=True)
    assert (other / "keep.txt").read_text() == "mine"


def test_bad_accounts_file_leaves_nothing(tmp_path):
    bad = tmp_path / "accounts.yaml"
    bad.write_text("accounts:\n  - {user: a}\n")
    with pytest.raises(InstallError, match="--accounts"):
        install(str(tmp_path / "gw"), accounts_file=str(bad))
    assert sorted(os.listdir(tmp_path)) == ["accounts.yaml"]
