"""Import rules between the packages (parsed with ``ast``, so lazy imports inside functions count too).

* The shared parts — billing, webhooks, routing, jobs, auth, catalogue, storage, http, db, providers,
  media — import no product package (videos, inference, files, batches), with no exception: the table
  registry that lists every domain's tables (``tables.py``) and the migrations (``migrations/``) sit
  beside the composition root, outside every shared package.
* ``auth`` does not import ``billing`` (billing builds on auth, not the other way round).
* Nothing outside ``providers/`` compares a value against a provider id literal.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "aistats_gateway"
SHARED = ("billing", "webhooks", "routing", "jobs", "auth", "catalogue", "storage", "http", "db", "providers", "media",
          "llm", "idempotency")
PRODUCTS = ("videos", "inference", "files", "batches", "media_api")


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every ``aistats_gateway.*`` module a file imports (relative imports resolved)."""
    rel = path.relative_to(ROOT.parent).with_suffix("")
    return _imports_in(path.read_text(), list(rel.parts))


def _imports_in(source: str, parts: list[str]) -> set[str]:
    """``parts``: the module's dotted path (``__init__`` included), e.g. ``[aistats_gateway, routing, plan]``."""
    here = parts[:-1]  # the package the module is in
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("aistats_gateway.")}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _violations(packages: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for package in packages:
        for path in _modules(package):
            rel = path.relative_to(ROOT).as_posix()
            for module in sorted(_imports(path)):
                if _top(module) in forbidden:
                    out.append(f"{rel} imports {module}")
    return out


@pytest.mark.parametrize("package", SHARED)
def test_shared_packages_import_no_product(package: str) -> None:
    assert _violations((package,), PRODUCTS) == []


def test_auth_does_not_import_billing() -> None:
    assert _violations(("auth",), ("billing",)) == []


def test_the_rule_sees_lazy_and_relative_imports() -> None:
    source = "def f():\n    from aistats_gateway.videos import tables\n    from ..videos import jobs\n"
    assert _imports_in(source, ["aistats_gateway", "routing", "probe"]) >= {
        "aistats_gateway.videos", "aistats_gateway.videos.tables", "aistats_gateway.videos.jobs"}
    assert "aistats_gateway.videos.jobs" in _imports_in("from ..videos import jobs\n",
                                                        ["aistats_gateway", "routing", "__init__"])


def _provider_ids() -> set[str]:
    ids: set[str] = set()
    for path in _modules("providers"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "register" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    ids.add(first.value)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and any(
                    isinstance(t, ast.Name) and t.id in ("PROVIDER_ID", "PROVIDER", "provider_id")
                    for t in node.targets) and isinstance(node.value.value, str):
                ids.add(node.value.value)
    return ids


def test_nothing_outside_providers_branches_on_a_provider_id() -> None:
    ids = _provider_ids()
    assert {"openai", "local", "google-vertex", "x-ai"} <= ids
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        # storage/ and settings.py compare the storage backend name "local" (not the provider of that name)
        if rel.startswith(("providers/", "catalogue/schema.py", "migrations/", "storage/", "settings.py")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    values = [side] if isinstance(side, ast.Constant) else list(getattr(side, "elts", []))
                    for v in values:
                        if isinstance(v, ast.Constant) and v.value in ids:
                            found.append(f"{rel}:{node.lineno} compares with {v.value!r}")
    assert found == []
