"""CLI amounts (issue 9 #12): every amount is validated with a clear message naming its flag, balances
stay within what the BIGINT column holds, 0 is not a silent "unlimited"."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from aistats_gateway.cli import app
from tests.support.gateway import Gateway


def cli(gateway: Gateway, *args: str) -> Any:
    result = CliRunner().invoke(app, list(args), env=gateway.env())
    # A clean exit or a typer.Exit: never an uncaught exception (a traceback for the operator).
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.output,
                                                                                  repr(result.exception))
    return result


@pytest.fixture(scope="module")
def created(gateway: Gateway) -> dict[str, Any]:
    r = cli(gateway, "keys", "create", "--name", "cli amounts", "--json")
    assert r.exit_code == 0, r.output
    return dict(json.loads(r.output.strip().splitlines()[-1]))


def _workspace(gateway: Gateway, key_id: str) -> str:
    r = cli(gateway, "keys", "list", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output.strip().splitlines()[-1])
    return str(next(row["workspace_id"] for row in rows if row["id"] == key_id))


def test_balances_stay_within_the_column(gateway: Gateway, created: dict[str, Any]) -> None:
    ws = _workspace(gateway, created["id"])
    first = cli(gateway, "credits", "add", ws, "9000000000")
    assert first.exit_code == 0, first.output
    second = cli(gateway, "credits", "add", ws, "9000000000")
    assert second.exit_code == 2, second.output
    assert "exceed" in second.output and "9223372036.854775807" in second.output
    shown = cli(gateway, "credits", "show", ws, "--json")
    assert shown.exit_code == 0, shown.output
    row = json.loads(shown.output.strip().splitlines()[-1])[0]
    assert row["balance_nanos"] == 9_000_000_000 * 10**9 and isinstance(row["balance_nanos"], int)
    assert row["ledger_agrees"] is True
    assert cli(gateway, "credits", "add", ws, "223372036.854775807").exit_code == 0  # exactly the maximum
    assert cli(gateway, "credits", "add", ws, "0.000000001").exit_code == 2


@pytest.mark.parametrize("amount", ["nan", "NaN", "inf", "-inf", "1e309", "-1", "abc", "", "0.0000000001",
                                    "99999999999"])
def test_bad_credit_amounts_are_clear_errors(gateway: Gateway, amount: str) -> None:
    r = cli(gateway, "keys", "create", "--name", "bad", "--credits", amount)
    assert r.exit_code == 2, r.output
    assert "--credits" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("flag", ["--daily-usd", "--monthly-usd"])
@pytest.mark.parametrize("amount", ["-1", "nan", "1e309", "0"])
def test_limit_errors_name_their_flag(gateway: Gateway, created: dict[str, Any], flag: str, amount: str) -> None:
    r = cli(gateway, "keys", "limits", created["id"], flag, amount)
    assert r.exit_code == 2, r.output
    assert flag in r.output and "--credits" not in r.output


def test_rpm_zero_is_not_unlimited(gateway: Gateway, created: dict[str, Any]) -> None:
    r = cli(gateway, "keys", "limits", created["id"], "--rpm", "0")
    assert r.exit_code == 2 and "--rpm" in r.output and "none" in r.output, r.output
    for bad in ("-5", "x", "1e3", "99999999999"):
        assert cli(gateway, "keys", "limits", created["id"], "--rpm", bad).exit_code == 2
    ok = cli(gateway, "keys", "limits", created["id"], "--rpm", "60", "--daily-usd", "2")
    assert ok.exit_code == 0 and "rpm=60" in ok.output and "daily=2" in ok.output, ok.output
    cleared = cli(gateway, "keys", "limits", created["id"], "--rpm", "none", "--daily-usd", "none")
    assert cleared.exit_code == 0 and "rpm=unlimited" in cleared.output and "daily=unlimited" in cleared.output
