"""Reading, validating and merging catalogue files.

The shipped file is the base. An operator's file (``catalogue sync FILE``) is an overlay: its
organisations, providers and models replace the base entries with the same id and add new ones.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from aistats_gateway.catalogue.schema import CatalogueFile

SHIPPED_NAME = "catalogue.yaml"


class CatalogueError(Exception):
    """The catalogue is invalid; ``problems`` lists each error naming the entry and the field."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems[:5]) + (" …" if len(problems) > 5 else ""))


def shipped_path() -> Path:
    return Path(str(resources.files("aistats_gateway.catalogue") / "data" / SHIPPED_NAME))


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise CatalogueError(str(path), [f"cannot read file: {e.strerror or e}"]) from e


def parse(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise CatalogueError(source, [f"not valid YAML/JSON: {e}"]) from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CatalogueError(source, ["the top level must be a mapping with organisations, providers and models"])
    return data


def _entry_name(raw: Any, key: str, idx: int) -> str:
    label = f"{key}[{idx}]"
    try:
        item = raw[key][idx]
        ident = item.get("model_id") or item.get("id") or item.get("provider")
        if ident:
            label += f" ({ident})"
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    return label


def describe_error(raw: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """Turn a pydantic location into 'models[3] (openai/sora) → providers[0] (openai) → field'."""
    parts: list[str] = []
    node: Any = raw
    i = 0
    while i < len(loc):
        key = loc[i]
        if isinstance(key, str) and i + 1 < len(loc) and isinstance(loc[i + 1], int) and isinstance(node, dict):
            parts.append(_entry_name(node, key, loc[i + 1]))
            try:
                node = node[key][loc[i + 1]]
            except (KeyError, IndexError, TypeError):
                node = None
            i += 2
            continue
        parts.append(str(key))
        node = node.get(key) if isinstance(node, dict) else None
        i += 1
    # Plain keys that follow each other are joined with dots, entries with arrows.
    out = ""
    prev_plain = False
    for p in parts:
        plain = "[" not in p
        if out:
            out += "." if (plain and prev_plain) else " → "
        out += p
        prev_plain = plain
    return out or "(top level)"


def validate(data: dict[str, Any], source: str, *, standalone: bool = True) -> CatalogueFile:
    try:
        cat = CatalogueFile.model_validate(data)
    except ValidationError as e:
        problems = [f"{describe_error(data, tuple(err['loc']))}: {err['msg']}" for err in e.errors()]
        raise CatalogueError(source, problems) from None
    if standalone:
        check_references(cat, source)
    return cat


def check_references(cat: CatalogueFile, source: str) -> None:
    problems: list[str] = []
    orgs = {o.id for o in cat.organisations}
    provs = {p.id for p in cat.providers}
    for kind, ids in (("organisations", [o.id for o in cat.organisations]),
                      ("providers", [p.id for p in cat.providers]),
                      ("models", [m.model_id for m in cat.models])):
        seen: set[str] = set()
        for i, ident in enumerate(ids):
            if ident in seen:
                problems.append(f"{kind}[{i}] ({ident}): duplicate id")
            seen.add(ident)
    aliases: dict[str, str] = {}
    for i, m in enumerate(cat.models):
        label = f"models[{i}] ({m.model_id})"
        if m.organisation not in orgs:
            problems.append(f"{label} → organisation: {m.organisation!r} is not in organisations")
        for j, p in enumerate(m.providers):
            if p.provider not in provs:
                problems.append(f"{label} → providers[{j}] ({p.provider}) → provider: not in providers")
        for a in m.aliases:
            if a in aliases and aliases[a] != m.model_id:
                problems.append(f"{label} → aliases: {a!r} is already an alias of {aliases[a]}")
            aliases[a] = m.model_id
    if problems:
        raise CatalogueError(source, problems)


def load_file(path: Path) -> tuple[dict[str, Any], CatalogueFile]:
    source = str(path)
    data = parse(read_text(path), source)
    return data, validate(data, source, standalone=False)


def merge(base: dict[str, Any], overlay: dict[str, Any] | None) -> dict[str, Any]:
    """Overlay entries replace base entries with the same id; new ones are appended."""
    if not overlay:
        return base
    out: dict[str, Any] = {"schema_version": base.get("schema_version", 1)}
    for key, ident in (("organisations", "id"), ("providers", "id"), ("models", "model_id")):
        items = [dict(x) for x in base.get(key) or []]
        index = {x.get(ident): n for n, x in enumerate(items)}
        for x in overlay.get(key) or []:
            if isinstance(x, dict) and x.get(ident) in index:
                items[index[x[ident]]] = x
            else:
                items.append(x)
        out[key] = items
    return out


def build(overlay: dict[str, Any] | None = None, overlay_source: str = "overlay") -> tuple[CatalogueFile, str]:
    """The effective catalogue (shipped file plus overlay), validated; returns it and its sha256."""
    base_path = shipped_path()
    base_text = read_text(base_path)
    base = parse(base_text, str(base_path))
    if overlay is not None:
        # The overlay on its own must be well formed; references may point into the base.
        validate(overlay, overlay_source, standalone=False)
    merged = merge(base, overlay)
    source = str(base_path) if overlay is None else f"{base_path} + {overlay_source}"
    cat = validate(merged, source)
    digest = hashlib.sha256(json.dumps(merged, sort_keys=True, default=str).encode()).hexdigest()
    return cat, digest
