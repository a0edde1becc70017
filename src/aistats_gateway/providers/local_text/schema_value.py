"""A deterministic JSON value that validates against a JSON Schema (the local models' tool arguments
and ``json_schema`` answers).

Invariants:
* Same schema and seed text → same value. Strings are built from the seed text (the conversation's
  last user words), so the answer reflects the prompt; every other type takes the smallest value the
  schema allows.
* Honoured: ``type`` (a list: the first non-null type), ``enum``, ``const``, ``default`` when it is of
  the right type, ``$ref`` into ``#/$defs`` / ``#/definitions``, ``anyOf`` / ``oneOf`` (the first branch),
  ``allOf`` (merged), object ``properties`` (all of them, ``required`` or not) and ``required``,
  ``minProperties``, array ``items`` / ``prefixItems`` / ``minItems`` / ``maxItems``, string ``minLength`` /
  ``maxLength`` / ``format`` (date, date-time, time, email, uri, uuid, ipv4), number ``minimum`` /
  ``maximum`` / ``exclusiveMinimum`` / ``exclusiveMaximum`` / ``multipleOf``.
* Not honoured: ``pattern`` (a string is still given; it may not match), ``not``, ``if``/``then``;
  a schema nested deeper than :data:`MAX_DEPTH` gives ``null`` there.
* Bounded work whatever the schema (a client's input): at most :data:`MAX_NODES` values are made (the
  rest are ``null``), strings at most :data:`MAX_STRING` characters, arrays at most :data:`MAX_ITEMS` items.
"""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 16
MAX_NODES = 2000
MAX_STRING = 4096
MAX_ITEMS = 64
_FORMATS = {"date": "2026-01-01", "date-time": "2026-01-01T00:00:00Z", "time": "00:00:00Z",
            "email": "user@example.com", "uri": "https://example.com/", "url": "https://example.com/",
            "uuid": "00000000-0000-4000-8000-000000000000", "ipv4": "127.0.0.1", "hostname": "example.com"}


def value_for(schema: Any, seed: str) -> Any:
    """A value valid against ``schema`` (a JSON Schema as a dict; ``True``/``{}`` accept anything)."""
    return _Gen(schema if isinstance(schema, dict) else {}, seed or "local").value(schema, 0)


class _Gen:
    def __init__(self, root: dict[str, Any], seed: str) -> None:
        self.root = root
        self.seed = " ".join(seed.split())[:MAX_STRING]
        self.budget = MAX_NODES

    def _resolve(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        ref = schema.get("$ref")
        while isinstance(ref, str) and ref.startswith("#/") and depth < MAX_DEPTH:
            node: Any = self.root
            for part in ref[2:].split("/"):
                node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                return {}
            schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
            ref = node.get("$ref")
            depth += 1
        if isinstance(schema.get("allOf"), list):
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                if isinstance(part, dict):
                    sub = self._resolve(part, depth + 1)
                    props = {**merged.get("properties", {}), **sub.get("properties", {})}
                    required = list(dict.fromkeys([*merged.get("required", []), *sub.get("required", [])]))
                    merged = {**sub, **merged, "properties": props, "required": required}
            schema = merged
        return schema

    def value(self, schema: Any, depth: int) -> Any:
        self.budget -= 1
        if self.budget < 0 or depth > MAX_DEPTH:
            return None
        if not isinstance(schema, dict):
            return self.seed
        schema = self._resolve(schema, depth)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                non_null = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
                base = {k: v for k, v in schema.items() if k != key}
                return self.value({**base, **(non_null or branches)[0]}, depth + 1)
        kind = _type(schema)
        if "default" in schema and _is_type(schema["default"], kind):
            return schema["default"]
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "string":
            return self._string(schema)
        if kind in ("integer", "number"):
            return _number(schema, kind == "integer")
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self.seed

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        raw = schema.get("properties")
        props: dict[str, Any] = raw if isinstance(raw, dict) else {}
        out = {name: self.value(sub, depth + 1) for name, sub in props.items()}
        for name in schema.get("required") or []:
            if isinstance(name, str) and name not in out:
                extra = schema.get("additionalProperties")
                out[name] = self.value(extra if isinstance(extra, dict) else {"type": "string"}, depth + 1)
        i = 0
        while len(out) < _int(schema.get("minProperties")) and schema.get("additionalProperties") is not False \
                and self.budget > 0:
            extra = schema.get("additionalProperties")
            out[f"key{i}"] = self.value(extra if isinstance(extra, dict) else {"type": "string"}, depth + 1)
            i += 1
        return out

    def _array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        raw = schema.get("prefixItems")
        prefix: list[Any] = raw if isinstance(raw, list) else []
        items = schema.get("items")
        count = max(_int(schema.get("minItems")), len(prefix), 1 if items is not False else 0)
        if schema.get("maxItems") is not None:
            count = min(count, _int(schema["maxItems"]))
        count = min(count, MAX_ITEMS)
        out = []
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else (items if isinstance(items, dict) else {})
            out.append(self.value(sub, depth + 1))
        return out

    def _string(self, schema: dict[str, Any]) -> str:
        fmt = schema.get("format")
        text = _FORMATS.get(fmt, self.seed) if isinstance(fmt, str) else self.seed
        low = min(_int(schema.get("minLength")), MAX_STRING)
        high = schema.get("maxLength")
        if len(text) < low:
            text = (text + " " + "x" * low)[:low] if text else "x" * low
        if high is not None:
            text = text[:_int(high)]
        return text


def _int(value: Any) -> int:
    """A non-negative count from a schema keyword (0 when it is not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return 0
    return max(0, int(value))


def _type(schema: dict[str, Any]) -> str | None:
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), t[0] if t else None)
    if isinstance(t, str):
        return t
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return None


def _is_type(value: Any, kind: str | None) -> bool:
    checks: dict[str, Any] = {"object": dict, "array": list, "string": str, "boolean": bool}
    if kind in checks:
        return isinstance(value, checks[kind])
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return False


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    low = schema.get("minimum")
    xlow = schema.get("exclusiveMinimum")
    high = schema.get("maximum")
    xhigh = schema.get("exclusiveMaximum")
    step = schema.get("multipleOf")
    value: float = 0
    if isinstance(low, (int, float)):
        value = low
    if isinstance(xlow, (int, float)) and not isinstance(xlow, bool) and value <= xlow:
        value = math.floor(xlow) + 1 if integer else xlow + (step or 1) / 2
    if isinstance(step, (int, float)) and step > 0:
        value = math.ceil(value / step) * step
    if integer:
        value = math.ceil(value)
    if isinstance(high, (int, float)) and value > high:
        value = math.floor(high) if integer else high
    if isinstance(xhigh, (int, float)) and not isinstance(xhigh, bool) and value >= xhigh:
        value = math.ceil(xhigh) - 1 if integer else xhigh - (step or 1) / 2
    return int(value) if integer else value
