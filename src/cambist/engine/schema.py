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
_MAX_NODES = 2_000
_MAX_STRING = 4_096
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


def minimal_instance(schema: Any, word: str = "text", *, param: str = "response_format") -> Any:
    """A small value valid under ``schema``; strings default to ``word``.

    Raises ``InvalidRequest`` (naming ``param``) for a schema that is not an
    object, uses an unknown type, has an unresolvable ``$ref``, nests too
    deeply or would need too large an instance.
    """
    if isinstance(schema, bool):
        return {}
    if not isinstance(schema, Mapping):
        raise InvalidRequest("a JSON schema must be an object", param=param)
    return _Builder(schema, word, param).instance(schema, 0)


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


class _Builder:
    def __init__(self, root: Mapping[str, Any], word: str, param: str) -> None:
        self.root = root
        self.word = word
        self.param = param
        self.nodes = 0

    def fail(self, message: str) -> InvalidRequest:
        return InvalidRequest(message, param=self.param)

    def resolve(self, ref: Any) -> Mapping[str, Any]:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise self.fail(f"only local $ref is supported, got {ref!r}")
        node: Any = self.root
        for part in (p for p in ref[1:].split("/") if p):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or part not in node:
                raise self.fail(f"unresolvable $ref {ref!r}")
            node = node[part]
        if not isinstance(node, Mapping):
            raise self.fail(f"$ref {ref!r} is not a schema")
        return node

    def instance(self, schema: Mapping[str, Any], depth: int) -> Any:
        self.nodes += 1
        if depth > _MAX_DEPTH or self.nodes > _MAX_NODES:
            raise self.fail("JSON schema nests too deeply or needs too large an instance")
        if "$ref" in schema:
            return self.instance(self.resolve(schema["$ref"]), depth + 1)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[0]
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches and isinstance(branches[0], Mapping):
                return self.instance(branches[0], depth + 1)
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and all_of:
            merged: dict[str, Any] = {}
            for part in all_of:
                if isinstance(part, Mapping):
                    _merge(merged, self.resolve(part["$ref"]) if "$ref" in part else part)
            return self.instance(merged, depth + 1)
        return self.typed(_pick_type(schema), schema, depth)

    def child(self, schema: Any, depth: int) -> Any:
        if isinstance(schema, bool) or schema is None:
            return self.word
        if not isinstance(schema, Mapping):
            raise self.fail("a JSON schema must be an object")
        return self.instance(schema, depth + 1)

    def typed(self, kind: str | None, schema: Mapping[str, Any], depth: int) -> Any:
        if kind == "object" or kind is None:
            props = schema.get("properties")
            props = props if isinstance(props, Mapping) else {}
            required = schema.get("required")
            if isinstance(required, list):
                names = [n for n in props if n in required]
                names += [n for n in required if n not in props and isinstance(n, str)]
            else:
                names = list(props)
            return {n: self.child(props.get(n), depth) for n in names}
        if kind == "string":
            if _int(schema.get("minLength"), 0) > _MAX_STRING:
                raise self.fail(f"minLength over {_MAX_STRING} is not supported")
            return _string(schema, self.word)
        if kind in ("number", "integer"):
            return _number(schema, integer=kind == "integer")
        if kind == "boolean":
            return False
        if kind == "null":
            return None
        if kind == "array":
            count = min(_int(schema.get("minItems"), 0), _MAX_ITEMS)
            items = schema.get("items")
            item_schema = items if isinstance(items, Mapping) else {"type": "string"}
            return [self.instance(item_schema, depth + 1) for _ in range(count)]
        raise self.fail(f"unsupported JSON schema type {kind!r}")


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


def _merge(into: dict[str, Any], part: Mapping[str, Any]) -> None:
    for k, v in part.items():
        if k == "properties" and isinstance(v, Mapping):
            into.setdefault("properties", {}).update(v)
        elif k == "required" and isinstance(v, list):
            into["required"] = list(dict.fromkeys([*into.get("required", []), *v]))
        else:
            into.setdefault(k, v)


def _string(schema: Mapping[str, Any], word: str) -> str:
    fmt = schema.get("format")
    text = _FORMATS.get(fmt, word) if isinstance(fmt, str) else word
    lo = _int(schema.get("minLength"), 0)
    hi = _int(schema.get("maxLength"), -1)
    if len(text) < lo:
        unit = word or "x"
        text = unit * (lo // len(unit) + 1)
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
