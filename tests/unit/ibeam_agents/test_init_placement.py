"""The init step names conf.yaml files it will not read (S17): misplaced,
misnamed, or a hand edit of root/conf.yaml that it is about to replace."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from ibeam_agents import init

STOCK = Path(__file__).resolve().parents[3] / "gateway_sim" / "assets" / "conf.yaml"
CUSTOM = "listenPort: 5055\nips:\n  allow: [10.*]\n"


@pytest.fixture
def dirs(tmp_path):
    gateway = tmp_path / "gw"
    (gateway / "root").mkdir(parents=True)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    return gateway, inputs


def _warnings(dirs, caplog) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ibeam.init"):
        init.run(gateway_dir=dirs[0], inputs_dir=dirs[1], environ={})
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    "where",
    ["root/conf.yaml", "gateway/conf.yaml", "a/b/conf.yml", "conf.yml", "Conf.yaml"],
)
def test_init_names_a_conf_yaml_in_the_wrong_place(dirs, caplog, where):
    gateway, inputs = dirs
    stray = inputs / where
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text(CUSTOM)
    notes = _warnings(dirs, caplog)
    assert len(notes) == 1
    assert f"{stray} is not read" in notes[0]
    assert f"only from {inputs / 'conf.yaml'}" in notes[0]
    assert "127.0.0.1" in (gateway / "root" / "conf.yaml").read_text()


def test_init_names_a_conf_yaml_at_the_gateway_top(dirs, caplog):
    gateway, _ = dirs
    (gateway / "conf.yaml").write_text(CUSTOM)
    notes = _warnings(dirs, caplog)
    assert len(notes) == 1 and f"{gateway / 'conf.yaml'} is not read" in notes[0]


def test_init_ignores_hidden_folders_and_the_right_place(dirs, caplog):
    _, inputs = dirs
    (inputs / ".git").mkdir()
    (inputs / ".git" / "conf.yaml").write_text(CUSTOM)
    (inputs / "conf.yaml").write_text(
        "listenPort: 5055\nips:\n  allow: [127.0.0.1]\n  deny: []\n"
    )
    assert _warnings(dirs, caplog) == []


def test_init_stock_file_then_own_writes_are_not_hand_edits(dirs, caplog):
    gateway, _ = dirs
    shutil.copy(STOCK, gateway / "root" / "conf.yaml")
    assert _warnings(dirs, caplog) == []  # IBKR's file, replaced without a word
    assert _warnings(dirs, caplog) == []  # the init step's own file


def test_init_warns_before_replacing_a_hand_edited_conf(dirs, caplog):
    gateway, inputs = dirs
    conf = gateway / "root" / "conf.yaml"
    init.run(gateway_dir=gateway, inputs_dir=inputs, environ={})
    conf.write_text(conf.read_text().replace("listenPort: 5000", "listenPort: 5055"))
    notes = _warnings(dirs, caplog)
    assert len(notes) == 1
    assert f"{conf} was edited after the init step" in notes[0]
    assert f"put yours in {inputs / 'conf.yaml'}" in notes[0]


def test_init_warns_about_a_hand_placed_conf_on_first_run(dirs, caplog):
    gateway, _ = dirs
    (gateway / "root" / "conf.yaml").write_text(CUSTOM)
    notes = _warnings(dirs, caplog)
    assert len(notes) == 1 and "is not IBKR's file nor one the init step" in notes[0]
