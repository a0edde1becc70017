"""The CLI contract for keys and catalogue, and catalogue sync reaching a running server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.support.gateway import Gateway

CLI = [sys.executable, "-m", "aistats_gateway.cli"]


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=120)


def test_validate_shipped_catalogue() -> None:
    r = run(["catalogue", "validate"])
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_validate_reports_entry_and_field(tmp_path: Path) -> None:
    bad = {
        "models": [
            {"model_id": "openai/broken-model", "name": "Broken", "organisation": "openai", "status": "active",
             "providers": [{"provider": "openai", "provider_model_slug": "x", "endpoints": ["video.generation"],
                            "parameters": {"video.generation": {"duration": {"values": [4], "minimum": 9,
                                                                             "maximum": 2}}}}]},
            {"model_id": "openai/bad-status", "name": "Bad", "organisation": "openai", "status": "launched"},
            {"model_id": "openai/bad-org", "name": "Bad org", "organisation": "acme", "status": "active"},
        ]
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    r = run(["catalogue", "validate", str(path)])
    assert r.returncode == 1
    err = r.stderr.replace("\n", " ")
    assert "models[0] (openai/broken-model)" in err and "providers[0] (openai)" in err and "duration" in err
    assert "models[1] (openai/bad-status)" in err and "status" in err
    assert "models[2] (openai/bad-org)" in err and "organisation" in err


def test_validate_reports_unknown_provider_reference(tmp_path: Path) -> None:
    path = tmp_path / "ref.yaml"
    path.write_text(yaml.safe_dump({"models": [{
        "model_id": "openai/ghost", "name": "Ghost", "organisation": "openai", "status": "active",
        "providers": [{"provider": "ghost-provider", "provider_model_slug": "g", "endpoints": ["chat.completions"]}],
    }]}))
    r = run(["catalogue", "validate", str(path)])
    assert r.returncode == 1
    assert "models" in r.stderr and "ghost-provider" in r.stderr.replace("\n", " ")


def test_validate_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("models: [unclosed")
    r = run(["catalogue", "validate", str(path)])
    assert r.returncode == 1 and "YAML" in r.stderr


def test_keys_create_credits_must_be_money(gateway: Gateway) -> None:
    r = run(["keys", "create", "--name", "x", "--credits", "ten dollars"], env=gateway.env())
    assert r.returncode == 2 and "--credits" in r.stderr
    r = run(["keys", "create", "--name", "funded", "--credits", "12.5", "--json"], env=gateway.env())
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["key"].startswith("aistats_v1_sk_" + body["id"] + "_")


def test_revoke_unknown_key(gateway: Gateway) -> None:
    r = run(["keys", "revoke", "doesnotexist"], env=gateway.env())
    assert r.returncode == 1 and "no key" in r.stderr


def test_sync_overlay_reaches_running_server(gateway: Gateway, api, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    before = api.get("/v1/models", params={"limit": 1}).json()["total"]
    overlay = {
        "models": [
            {"model_id": "openai/house-model", "name": "House model", "organisation": "openai", "status": "active",
             "input_types": ["text"], "output_types": ["video"],
             "providers": [{"provider": "openai", "provider_model_slug": "house", "endpoints": ["video.generation"],
                            "parameters": {"video.generation": {"duration": {"values": [3], "aliases": ["secs"]}}}}]},
            # Overrides a shipped model: openai/sora gets a new name.
            {"model_id": "openai/sora", "name": "Sora (house override)", "organisation": "openai", "status": "active",
             "input_types": ["text"], "output_types": ["video"],
             "providers": [{"provider": "openai", "provider_model_slug": "sora-2", "endpoints": ["video.generation"],
                            "parameters": {"video.generation": {"duration": {"values": [4]}}}}]},
        ]
    }
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(overlay))
    r = run(["catalogue", "sync", str(path)], env=gateway.env())
    assert r.returncode == 0, r.stderr

    def wait_for(predicate, timeout: float = 10.0):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError("running server did not pick up the sync")

    wait_for(lambda: api.get("/v1/models", params={"limit": 1}).json()["total"] == before + 1)
    vids = api.get("/v1/videos/models", params={"params": "secs"}).json()["data"]
    assert [m["model"] for m in vids] == ["openai/house-model"]
    sora = [m for m in api.get("/v1/models", params={"limit": 250}).json()["models"] if m["model_id"] == "openai/sora"]
    assert sora[0]["name"] == "Sora (house override)"

    # A plain sync (as at server start) keeps the overlay; --clear-overlay drops it.
    assert run(["catalogue", "sync"], env=gateway.env()).returncode == 0
    time.sleep(1.2)
    assert api.get("/v1/models", params={"limit": 1}).json()["total"] == before + 1
    assert run(["catalogue", "sync", "--clear-overlay"], env=gateway.env()).returncode == 0
    wait_for(lambda: api.get("/v1/models", params={"limit": 1}).json()["total"] == before)


def test_sync_rejects_bad_file_and_keeps_catalogue(gateway: Gateway, api, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    before = api.get("/v1/models", params={"limit": 250}).json()
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"models": [{"model_id": "NOT VALID", "name": "x"}]}))
    r = run(["catalogue", "sync", str(path)], env=gateway.env())
    assert r.returncode == 1 and "models[0]" in r.stderr
    time.sleep(1.2)
    assert api.get("/v1/models", params={"limit": 250}).json() == before
