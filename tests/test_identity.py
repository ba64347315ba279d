"""Who is asking: identity = caller (asserted) or os (the OS account; flags only narrow), and a
deployment's /etc/ragcli/ragcli.toml that no flag, variable or project file overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragcli.cli.app import app
from ragcli.errors import ExitCode
from ragcli.search.identity import os_account
from ragcli.settings import load_settings

runner = CliRunner()
SALARY = "What is the maximum salary of an L5 Staff Engineer in the salary bands?"


@pytest.fixture(autouse=True)
def store(handbook_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGCLI_EMBEDDER", "test-hash")
    monkeypatch.setenv("RAGCLI_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("RAGCLI_MIN_CONFIDENCE", "0.1")


def ask(*args: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    result = runner.invoke(app, ["ask", SALARY, "--mode", "extractive", "--json", *args])
    return result.exit_code, json.loads(result.stdout) if result.exit_code == 0 else {}, result.stderr


def salary_seen(data: dict) -> bool:  # type: ignore[type-arg]
    return any(h["doc_id"] == "hr/salary-bands.md" for h in data["retrieved"])


def test_caller_mode_trusts_the_flags() -> None:
    code, data, _ = ask("--user", "hana", "--groups", "hr")
    assert code == 0 and salary_seen(data)


def test_os_mode_takes_the_account_and_its_groups(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("RAGCLI_IDENTITY", "os")
    account, groups = os_account()
    assert "hr" not in groups
    code, data, err = ask("--groups", "hr")  # not one of this account's groups
    assert code == ExitCode.USAGE and "hr is not among the groups of" in err
    code, _, err = ask("--user", "somebody-else")
    assert code == ExitCode.USAGE and "--user cannot be 'somebody-else'" in err
    code, data, _ = ask()
    assert code == 0 and not salary_seen(data)
    users = tmp_path / "users.toml"
    users.write_text(f'{account} = ["hr", "finance"]\nsomebody-else = ["legal"]\n')
    monkeypatch.setenv("RAGCLI_USERS_FILE", str(users))
    code, data, _ = ask()  # every group of the account: the OS ones and users.toml's
    assert code == 0 and salary_seen(data)
    code, data, _ = ask("--groups", "finance")  # narrowed: hr left out
    assert code == 0 and not salary_seen(data)
    code, _, err = ask("--groups", "legal")  # somebody else's group
    assert code == ExitCode.USAGE


def test_a_deployment_locks_identity_in_etc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "ragcli.toml").write_text('identity = "os"\ntop_k = 9\n')
    monkeypatch.setenv("RAGCLI_IDENTITY", "caller")  # a user's attempt to downgrade
    (tmp_path / "ragcli.toml").write_text('identity = "caller"\n')
    loaded = load_settings({"identity": "caller"}, environ={"RAGCLI_IDENTITY": "caller"},
                           cwd=tmp_path)
    assert loaded.identity == "os"
    assert loaded.top_k != 9  # only identity and users_file are locked
    code, _, err = ask("--user", "hana", "--groups", "hr")
    assert code == ExitCode.USAGE and "identity = os" in err


def test_the_audit_record_says_which_identity_mode(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGCLI_AUDIT", str(tmp_path / "audit.sqlite3"))
    monkeypatch.setenv("RAGCLI_IDENTITY", "os")
    code, data, _ = ask()
    shown = json.loads(runner.invoke(app, ["traces", "show", data["request_id"], "--json"]).stdout)
    assert shown["identity"] == "os" and shown["user"] == os_account()[0]


def test_a_bad_users_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAGCLI_IDENTITY", "os")
    users = tmp_path / "users.toml"
    users.write_text('alice = "hr"\n')
    monkeypatch.setenv("RAGCLI_USERS_FILE", str(users))
    code, _, err = ask()
    assert code == ExitCode.CONFIG and "must be a list of group names" in err
