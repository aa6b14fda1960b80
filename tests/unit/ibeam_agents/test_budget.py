"""The on-disk failure budget: spend, reserve/settle, lock, reset, persistence."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ibeam_agents.budget import FailureBudget
from ibeam_agents.errors import ProcessControlError


@pytest.fixture
def path(tmp_path):
    return tmp_path / "outputs" / "failure-budget.json"


def test_budget_starts_full_without_a_file(path):
    budget = FailureBudget(path, 3)
    assert budget.spent == 0
    assert budget.remaining == 3
    assert not budget.exhausted


def test_budget_spend_until_exhausted(path):
    budget = FailureBudget(path, 3)
    for expected in (1, 2, 3):
        state = budget.spend("CredentialsRejected", "bad password")
        assert state.spent == expected
    assert budget.exhausted
    assert budget.remaining == 0


def test_budget_survives_a_new_instance(path):
    FailureBudget(path, 3).spend("SecondFactorFailed")
    FailureBudget(path, 3).spend("SecondFactorFailed")
    again = FailureBudget(path, 3)
    assert again.spent == 2
    assert [h["kind"] for h in again.state().history] == ["SecondFactorFailed"] * 2


def test_budget_file_is_private_and_valid_json(path):
    FailureBudget(path, 3).spend("CredentialsRejected", "x")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600
    data = json.loads(path.read_text())
    assert data["spent"] == 1 and data["version"] == 1


def test_budget_reservation_left_behind_counts_as_spent(path):
    FailureBudget(path, 3).reserve("login")
    # the agent died here; a new process loads the file
    state = FailureBudget(path, 3).state()
    assert state.spent == 1
    assert state.pending is None
    assert state.history[-1]["kind"] == "Interrupted"


def test_budget_release_settles_without_spending(path):
    budget = FailureBudget(path, 3)
    budget.reserve()
    budget.release()
    assert FailureBudget(path, 3).spent == 0


def test_budget_spend_settles_the_reservation_once(path):
    budget = FailureBudget(path, 3)
    budget.reserve()
    budget.spend("CredentialsRejected")
    assert FailureBudget(path, 3).spent == 1


def test_budget_success_refills(path):
    budget = FailureBudget(path, 3)
    budget.spend("CredentialsRejected")
    budget.spend("CredentialsRejected")
    budget.succeed()
    assert budget.spent == 0


def test_budget_lock_is_exhausted_until_reset(path):
    budget = FailureBudget(path, 3)
    budget.lock("account locked")
    state = budget.state()
    assert state.exhausted and state.locked and state.remaining == 0
    assert FailureBudget(path, 3).exhausted
    budget.reset("test")
    assert not budget.exhausted


def test_budget_reset_seen_by_another_instance(path):
    running = FailureBudget(path, 2)
    running.spend("CredentialsRejected")
    running.spend("CredentialsRejected")
    assert running.exhausted
    FailureBudget(path, 2).reset("ibeam reset-failures")
    assert not running.exhausted
    assert running.state().history[-1]["kind"] == "Reset"


def test_budget_unreadable_file_counts_as_exhausted(path, caplog):
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    budget = FailureBudget(path, 3)
    assert budget.exhausted
    assert "reset-failures" in caplog.text
    budget.reset()
    assert not budget.exhausted
    assert json.loads(path.read_text())["spent"] == 0


def test_budget_history_is_bounded(path):
    budget = FailureBudget(path, 100)
    for _ in range(30):
        budget.spend("CredentialsRejected", "x" * 500)
    history = budget.state().history
    assert len(history) == 20
    assert all(len(h["detail"]) <= 200 for h in history)


def test_budget_limit_comes_from_settings_not_file(path):
    FailureBudget(path, 5).spend("CredentialsRejected")
    FailureBudget(path, 5).spend("CredentialsRejected")
    assert FailureBudget(path, 2).exhausted


def test_budget_unwritable_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    budget = FailureBudget(blocker / "budget.json", 3)
    with pytest.raises(ProcessControlError, match="IBEAM_OUTPUTS_DIR"):
        budget.spend("CredentialsRejected")


def test_budget_signature_changes_on_write(path):
    budget = FailureBudget(path, 3)
    assert budget.signature() is None
    budget.spend("CredentialsRejected")
    first = budget.signature()
    budget.reset()
    assert budget.signature() != first


def test_budget_no_temporary_files_left(path):
    budget = FailureBudget(path, 3)
    budget.spend("CredentialsRejected")
    budget.reset()
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["failure-budget.json", "failure-budget.lock"]
