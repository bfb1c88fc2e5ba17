"""JSON Schema to the grammar nodes `json_mode.JsonPrefix` walks (`response_format` json_schema).

Enforced: type (one or a list), enum, const, properties / required / additionalProperties (absent or true:
any further key; false: only the declared ones), items / prefixItems / minItems / maxItems, minLength /
maxLength, integer minimum / maximum / exclusiveMinimum / exclusiveMaximum, anyOf (oneOf taken as anyOf,
allOf of one schema), $ref into the schema's own $defs / definitions (recursion allowed), nullable.
Annotations (title, description, default, examples, format, ...) are read as annotations, as JSON Schema
itself reads them. Any other keyword is refused by name (`SchemaError`) rather than silently ignored.
"""

from __future__ import annotations

import json
import math

ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "format", "deprecated",
               "readOnly", "writeOnly", "$defs", "definitions", "discriminator", "contentMediaType",
               "contentEncoding", "strict"}
KEYWORDS = {"type", "enum", "const", "properties", "required", "additionalProperties", "items", "prefixItems",
            "minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
            "exclusiveMaximum", "anyOf", "oneOf", "allOf", "$ref", "nullable"}
TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")


class SchemaError(ValueError):
    """A schema nextn cannot enforce; the message names the keyword and where it is."""


class Lit:
    """Exactly these bytes (const, enum members, true / false / null)."""
    __slots__ = ("text",)

    def __init__(self, text: bytes):
        self.text = text


class Str:
    __slots__ = ("min_len", "max_len")

    def __init__(self, min_len: int = 0, max_len: int | None = None):
        self.min_len, self.max_len = min_len, max_len


class Num:
    """A JSON number; `integer` refuses fraction and exponent; lo / hi bound integers (None: unbounded)."""
    __slots__ = ("integer", "lo", "hi")

    def __init__(self, integer: bool = False, lo: int | None = None, hi: int | None = None):
        self.integer, self.lo, self.hi = integer, lo, hi


class Obj:
    """props: raw key bytes (as written between the quotes) -> node; extra: the node of any other key's
    value, or None when no other key is allowed."""
    __slots__ = ("props", "required", "extra")

    def __init__(self, props: dict, required: frozenset, extra):
        self.props, self.required, self.extra = props, required, extra


class Arr:
    """prefix: the nodes of the first items; items: the node of every later one (None: no more)."""
    __slots__ = ("prefix", "items", "min_items", "max_items")

    def __init__(self, prefix: tuple, items, min_items: int = 0, max_items: int | None = None):
        self.prefix, self.items, self.min_items, self.max_items = prefix, items, min_items, max_items

    def item(self, i: int):
        return self.prefix[i] if i < len(self.prefix) else self.items


class AnyOf:
    __slots__ = ("options",)

    def __init__(self, options: tuple):
        self.options = options


def any_value() -> AnyOf:
    """Any JSON value (the schema `true` or `{}`)."""
    node = AnyOf(())
    node.options = (Obj({}, frozenset(), node), Arr((), node), Str(), Num(), Lit(b"true"), Lit(b"false"),
                    Lit(b"null"))
    return node


def raw_key(name: str) -> bytes:
    """How a key is written between its quotes (JSON escapes, UTF-8 kept)."""
    return json.dumps(name, ensure_ascii=False)[1:-1].encode()


def literal(value) -> Lit:
    return Lit(json.dumps(value, ensure_ascii=False).encode())


def compile_schema(schema) -> object:
    """The grammar node of a JSON Schema (a dict or a boolean); SchemaError for what it cannot enforce."""
    return _Compiler(schema).node(schema, "#")


class _Compiler:
    def __init__(self, root):
        self.root, self.refs, self.any = root, {}, any_value()

    def node(self, schema, where: str):
        if schema is True:
            return self.any
        if schema is False:
            raise SchemaError(f"json_schema: {where} is false, which no value satisfies")
        if not isinstance(schema, dict):
            raise SchemaError(f"json_schema: {where} must be an object or a boolean")
        for key in schema:
            if key not in KEYWORDS and key not in ANNOTATIONS:
                raise SchemaError(f"json_schema keyword '{key}' (at {where}) is not supported")
        if "$ref" in schema:
            return self.ref(schema, where)
        for key in ("anyOf", "oneOf", "allOf"):
            if key in schema:
                return self.combined(schema, key, where)
        if "const" in schema:
            return literal(schema["const"])
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise SchemaError(f"json_schema: {where}.enum must be a non-empty list")
            return AnyOf(tuple(literal(v) for v in values))
        types = schema.get("type", _implied(schema))
        types = [types] if isinstance(types, str) else list(types)
        if schema.get("nullable") and "null" not in types:
            types.append("null")
        if not types or any(t not in TYPES for t in types):
            raise SchemaError(f"json_schema: {where}.type must be one of {', '.join(TYPES)} (or a list of them)")
        if set(types) >= set(TYPES) - {"integer"} and not _constrains(schema):
            return self.any
        nodes = tuple(self.typed(t, schema, where) for t in types)
        return nodes[0] if len(nodes) == 1 else AnyOf(nodes)

    def combined(self, schema, key: str, where: str):
        parts = schema[key]
        if not isinstance(parts, list) or not parts:
            raise SchemaError(f"json_schema: {where}.{key} must be a non-empty list")
        rest = {k: v for k, v in schema.items() if k != key and k not in ANNOTATIONS}
        if rest:
            raise SchemaError(f"json_schema: {where} has {key} beside {', '.join(rest)}; put them inside the {key}")
        if key == "allOf":
            if len(parts) != 1:
                raise SchemaError(f"json_schema: {where}.allOf with more than one schema is not supported")
            return self.node(parts[0], f"{where}.allOf[0]")
        return AnyOf(tuple(self.node(p, f"{where}.{key}[{i}]") for i, p in enumerate(parts)))

    def ref(self, schema, where: str):
        path = schema["$ref"]
        if not isinstance(path, str) or not path.startswith("#"):
            raise SchemaError(f"json_schema: {where}.$ref '{path}' must point inside the schema ('#/$defs/...')")
        if path not in self.refs:
            target = self.root
            for part in filter(None, path[1:].split("/")):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    raise SchemaError(f"json_schema: {where}.$ref '{path}' points at nothing")
                target = target[part]
            holder = self.refs[path] = AnyOf(())          # filled below; a recursive $ref meets it meanwhile
            holder.options = (self.node(target, path),)
        return self.refs[path]

    def typed(self, kind: str, s: dict, where: str):
        if kind in ("boolean", "null"):
            return AnyOf((Lit(b"true"), Lit(b"false"))) if kind == "boolean" else Lit(b"null")
        if kind == "string":
            node = Str(_count(s, "minLength", where, 0), _count(s, "maxLength", where))
            if node.max_len is not None and node.max_len < node.min_len:
                raise SchemaError(f"json_schema: {where} has maxLength < minLength")
            return node
        if kind in ("integer", "number"):
            return self.number(kind == "integer", s, where)
        if kind == "array":
            return self.array(s, where)
        return self.object(s, where)

    def number(self, integer: bool, s: dict, where: str) -> Num:
        bounds = [k for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if k in s]
        if bounds and not integer:
            raise SchemaError(f"json_schema: {bounds[0]} (at {where}) is supported on integers only")
        lo, hi = _bound(s, "minimum", where), _bound(s, "maximum", where)
        if "exclusiveMinimum" in s:
            above = _bound(s, "exclusiveMinimum", where) + 1
            lo = above if lo is None else max(lo, above)
        if "exclusiveMaximum" in s:
            below = _bound(s, "exclusiveMaximum", where) - 1
            hi = below if hi is None else min(hi, below)
        if lo is not None and hi is not None and lo > hi:
            raise SchemaError(f"json_schema: {where} allows no integer ({lo} > {hi})")
        return Num(integer, lo, hi)

    def array(self, s: dict, where: str) -> Arr:
        prefix = s.get("prefixItems", [])
        if not isinstance(prefix, list):
            raise SchemaError(f"json_schema: {where}.prefixItems must be a list")
        items = s.get("items", True)
        node = Arr(tuple(self.node(p, f"{where}.prefixItems[{i}]") for i, p in enumerate(prefix)),
                   None if items is False else self.node(items, f"{where}.items"),
                   _count(s, "minItems", where, 0), _count(s, "maxItems", where))
        if node.max_items is not None and node.max_items < node.min_items:
            raise SchemaError(f"json_schema: {where} has maxItems < minItems")
        if node.items is None and node.min_items > len(node.prefix):
            raise SchemaError(f"json_schema: {where}.minItems asks for more items than the schema allows")
        return node

    def object(self, s: dict, where: str) -> Obj:
        props = s.get("properties", {})
        required = s.get("required", [])
        if not isinstance(props, dict) or not isinstance(required, list):
            raise SchemaError(f"json_schema: {where}.properties must be an object and .required a list")
        extra = s.get("additionalProperties", True)
        node = Obj({raw_key(k): self.node(v, f"{where}.properties.{k}") for k, v in props.items()},
                   frozenset(raw_key(k) for k in required),
                   None if extra is False else self.node(extra, f"{where}.additionalProperties"))
        if node.extra is None and not node.required <= set(node.props):
            missing = ", ".join(sorted(k.decode() for k in node.required - set(node.props)))
            raise SchemaError(f"json_schema: {where} requires {missing} but allows no such property")
        return node


def _constrains(schema: dict) -> bool:
    return any(k in KEYWORDS for k in schema)


def _implied(schema: dict) -> list[str]:
    """The types a schema without `type` can mean, from the keywords it uses (properties: object, ...)."""
    if any(k in schema for k in ("properties", "required", "additionalProperties")):
        return ["object"]
    if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
        return ["array"]
    if any(k in schema for k in ("minLength", "maxLength")):
        return ["string"]
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return ["number"]                     # refused unless the schema says integer
    return list(TYPES)


def _count(s: dict, key: str, where: str, default=None):
    value = s.get(key, default)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise SchemaError(f"json_schema: {where}.{key} must be an integer >= 0")
    return value


def _bound(s: dict, key: str, where: str):
    """An integer bound: the least / greatest integer a minimum / maximum allows (exclusive ones are moved by one
    in `number`)."""
    value = s.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
        raise SchemaError(f"json_schema: {where}.{key} must be a finite number")
    return math.ceil(value) if key in ("minimum", "exclusiveMaximum") else math.floor(value)
