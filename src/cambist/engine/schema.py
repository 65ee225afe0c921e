"""Minimal valid instances of JSON Schemas (for JSON mode and tool arguments).

Covers what chat APIs send in practice: ``object`` with ``properties`` and
``required`` (all properties when ``required`` is absent, as strict mode
demands), ``string`` (``enum``, ``const``, ``minLength``/``maxLength``, common
``format`` values), ``number``/``integer`` (bounds), ``boolean``, ``null``,
``array`` (``minItems``), ``enum``, ``anyOf``/``oneOf``/``allOf`` (first
branch / merged), a ``type`` list (first non-null) and local ``$ref``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cambist.domain.errors import InvalidRequest

__all__ = ["minimal_instance"]

_MAX_DEPTH = 32
_MAX_ITEMS = 16
_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
}


def minimal_instance(schema: Any, word: str = "text") -> Any:
    """A small value valid under ``schema``; strings default to ``word``.

    Raises ``InvalidRequest`` for a schema that is not an object or whose
    local ``$ref`` cannot be resolved.
    """
    if isinstance(schema, bool):
        return {}
    if not isinstance(schema, Mapping):
        raise InvalidRequest("a JSON schema must be an object", param="response_format")
    return _instance(schema, schema, word, 0)


def _resolve(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not ref.startswith("#"):
        raise InvalidRequest(f"only local $ref is supported, got {ref!r}", param="response_format")
    node: Any = root
    for part in (p for p in ref[1:].split("/") if p):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            raise InvalidRequest(f"unresolvable $ref {ref!r}", param="response_format")
        node = node[part]
    if not isinstance(node, Mapping):
        raise InvalidRequest(f"$ref {ref!r} is not a schema", param="response_format")
    return node


def _pick_type(schema: Mapping[str, Any]) -> str | None:
    t = schema.get("type")
    if isinstance(t, list):
        non_null = [x for x in t if x != "null"]
        return str(non_null[0]) if non_null else ("null" if t else None)
    if isinstance(t, str):
        return t
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return None


def _instance(schema: Mapping[str, Any], root: Mapping[str, Any], word: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise InvalidRequest("JSON schema nests too deeply", param="response_format")
    if "$ref" in schema:
        return _instance(_resolve(str(schema["$ref"]), root), root, word, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches and isinstance(branches[0], Mapping):
            return _instance(branches[0], root, word, depth + 1)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged: dict[str, Any] = {}
        for part in all_of:
            if isinstance(part, Mapping):
                part = _resolve(str(part["$ref"]), root) if "$ref" in part else part
                _merge(merged, part)
        return _instance(merged, root, word, depth + 1)
    return _typed(_pick_type(schema), schema, root, word, depth)


def _merge(into: dict[str, Any], part: Mapping[str, Any]) -> None:
    for k, v in part.items():
        if k == "properties" and isinstance(v, Mapping):
            into.setdefault("properties", {}).update(v)
        elif k == "required" and isinstance(v, list):
            into["required"] = list(dict.fromkeys([*into.get("required", []), *v]))
        else:
            into.setdefault(k, v)


def _typed(
    kind: str | None, schema: Mapping[str, Any], root: Mapping[str, Any], word: str, depth: int
) -> Any:
    if kind == "object" or kind is None:
        props = schema.get("properties")
        props = props if isinstance(props, Mapping) else {}
        required = schema.get("required")
        if isinstance(required, list):
            names = [n for n in props if n in required]
            names += [n for n in required if n not in props and isinstance(n, str)]
        else:
            names = list(props)
        return {
            n: _instance(props[n], root, word, depth + 1) if isinstance(props.get(n), Mapping)
            else word
            for n in names
        }
    if kind == "string":
        return _string(schema, word)
    if kind in ("number", "integer"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    if kind == "array":
        items = schema.get("items")
        count = min(_int(schema.get("minItems"), 0), _MAX_ITEMS)
        item_schema = items if isinstance(items, Mapping) else {"type": "string"}
        return [_instance(item_schema, root, word, depth + 1) for _ in range(count)]
    raise InvalidRequest(f"unsupported JSON schema type {kind!r}", param="response_format")


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _string(schema: Mapping[str, Any], word: str) -> str:
    fmt = schema.get("format")
    text = _FORMATS.get(fmt, word) if isinstance(fmt, str) else word
    lo = _int(schema.get("minLength"), 0)
    hi = _int(schema.get("maxLength"), -1)
    while len(text) < lo:
        text += word or "x"
    return text[:hi] if hi >= 0 else text


def _number(schema: Mapping[str, Any], integer: bool) -> int | float:
    def num(key: str) -> float | None:
        v = schema.get(key)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    lo, hi = num("minimum"), num("maximum")
    ex_lo, ex_hi = num("exclusiveMinimum"), num("exclusiveMaximum")
    value = 0.0
    if lo is not None:
        value = lo
    elif ex_lo is not None:
        value = math.floor(ex_lo) + 1 if integer else ex_lo + 1
    elif hi is not None and value > hi:
        value = hi
    elif ex_hi is not None and value >= ex_hi:
        value = math.ceil(ex_hi) - 1 if integer else ex_hi - 1
    if integer:
        return math.ceil(value)
    return int(value) if value.is_integer() else value
