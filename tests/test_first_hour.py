"""A newcomer's first hour: the start banner stays on one line in a pipe, ``serve --remember`` (what
./start.sh runs) lets later ``keys``/``credits`` commands find its data directory from anywhere,
the installer is quiet unless pip fails, and the README's CLI commands exist as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from aistats_gateway import cli

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "aistats_gateway.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AISTATS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env["COLUMNS"] = "200"  # help text unwrapped
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str, int]]:
    """`serve --bootstrap-key --remember --data-dir D` with stderr to a file (not a terminal)."""
    tmp = tmp_path_factory.mktemp("first-hour")
    data_dir, record, log = tmp / "somewhere" / "gw-data", tmp / "serve.json", tmp / "serve.log"
    port = _free_port()
    env = _env(AISTATS_SERVE_RECORD=str(record), AISTATS_LOG_LEVEL="warning", COLUMNS="40")
    with log.open("w") as f:
        proc = subprocess.Popen(CLI + ["serve", "--bootstrap-key", "--remember", "--port", str(port), "--data-dir",
                                       str(data_dir)], env=env, stdout=f, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        deadline = time.monotonic() + 60
        while "listening on" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        # The banner is printed before uvicorn has bound the port: wait until it answers.
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield data_dir, record, log.read_text(), port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_banner_is_one_line_in_a_pipe(served: tuple[Path, Path, str, int]) -> None:
    data_dir, _, text, port = served
    line = next(ln for ln in text.splitlines() if "listening on" in ln)
    assert re.fullmatch(rf"aistats-gateway listening on http://127\.0\.0\.1:{port} \(database: sqlite\S+\)", line), line
    assert str(data_dir.resolve()) in line
    cli_line = next(ln for ln in text.splitlines() if ln.startswith("CLI: "))
    assert str(data_dir.resolve()) in cli_line


def test_keys_and_credits_find_the_servers_data_dir(served: tuple[Path, Path, str, int], tmp_path: Path) -> None:
    data_dir, record, text, port = served
    assert json.loads(record.read_text())["data_dir"] == str(data_dir.resolve())
    key = re.search(r"(aistats_v1_sk_\S+)", text)
    assert key is not None
    env = _env(AISTATS_SERVE_RECORD=str(record))
    listed = subprocess.run(CLI + ["keys", "list", "--json"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    assert [k["name"] for k in json.loads(listed.stdout)] == ["first key"]
    assert f"using the server's data directory {data_dir.resolve()}" in listed.stderr
    created = subprocess.run(CLI + ["keys", "create", "--name", "second", "--credits", "1", "--json"], env=env,
                             cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    second = json.loads(created.stdout)["key"]
    # The server accepts the key the CLI made: same database, same pepper.
    r = httpx.get(f"http://127.0.0.1:{port}/v1/credits", headers={"Authorization": f"Bearer {second}"})
    assert r.status_code == 200 and r.json()["credits"]["balance_nanos"] == 1_000_000_000
    shown = subprocess.run(CLI + ["credits", "show", "--json"], env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=60, check=True)
    assert len(json.loads(shown.stdout)) == 2
    # An explicit --data-dir still wins (and says nothing).
    other = subprocess.run(CLI + ["keys", "list", "--json", "--data-dir", str(tmp_path / "other")], env=env,
                           capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(other.stdout) == [] and "using the server's" not in other.stderr


def test_recorded_password_url_is_not_guessed(tmp_path: Path) -> None:
    record = tmp_path / "serve.json"
    record.write_text(json.dumps({"data_dir": str(tmp_path), "database_url": None,
                                  "masked_database_url": "postgresql+psycopg://u:***@db/gw"}))
    r = subprocess.run(CLI + ["keys", "list"], env=_env(AISTATS_SERVE_RECORD=str(record)), capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 2 and "AISTATS_DATABASE_URL" in r.stderr and "***" in r.stderr


def _fake_checkout(tmp: Path, pip_exit: int) -> Path:
    """A checkout whose .venv python is a stand-in for pip: 130 warning lines, then ``pip_exit``."""
    repo = tmp / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "bootstrap.sh", repo / "scripts" / "bootstrap.sh")
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    python = repo / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\nfor i in $(seq 130); do echo \"WARNING: pip config line $i\" >&2; done\n"
                      f"echo 'Successfully did things'\nexit {pip_exit}\n")
    python.chmod(0o755)
    return repo


def test_installer_is_quiet_when_pip_succeeds(tmp_path: Path) -> None:
    repo = _fake_checkout(tmp_path, 0)
    r = subprocess.run(["bash", "-c", "source scripts/bootstrap.sh && echo ready"], cwd=repo, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "ready"
    assert len(r.stderr.splitlines()) == 1 and "WARNING" not in r.stderr, r.stderr
    assert "WARNING: pip config line 130" in (repo / ".venv" / "install.log").read_text()
    again = subprocess.run(["bash", "-c", "source scripts/bootstrap.sh"], cwd=repo, capture_output=True, text=True,
                           timeout=60, check=False)
    assert again.returncode == 0 and again.stderr == ""  # installed: nothing to do, nothing said


def test_installer_shows_pips_output_when_it_fails(tmp_path: Path) -> None:
    repo = _fake_checkout(tmp_path, 1)
    r = subprocess.run(["bash", "-c", "source scripts/bootstrap.sh && echo ready"], cwd=repo, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 1 and "ready" not in r.stdout
    assert "WARNING: pip config line 130" in r.stderr and "installing into .venv failed" in r.stderr


def _readme_commands() -> list[list[str]]:
    """Every `aistats-gateway …` line in the README's code blocks, as words (placeholders dropped)."""
    out = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("aistats-gateway "):
                out.append(line.split()[1:])
    return out


def test_readme_cli_commands_exist_as_written() -> None:
    commands = _readme_commands()
    assert len(commands) >= 10
    for words in commands:
        sub = [w for w in words if re.fullmatch(r"[a-z][a-z-]*", w)][:2]
        if sub and sub[0] not in ("keys", "credits", "catalogue"):
            sub = sub[:1]
        r = CliRunner().invoke(cli.app, sub + ["--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0, (words, r.output)
        for flag in re.findall(r"--[a-z][a-z-]*", " ".join(words)):
            assert flag in r.output, (words, flag)
