"""JSON Schema validation of every OCI document we read or write.

The schemas are ours (written from the OCI image-spec and runtime-spec) and
live in <repo>/schemas/*.json; they reference each other by relative $ref.

Documents are first checked by a predicate compiled here from the same
schema files, for the few keywords they use; jsonschema (50-80 ms to import,
most of a small command's run time) is loaded only to explain a document the
predicate refused, or for a schema using a keyword the predicate does not know.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from pathlib import Path

from .errors import SchemaError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
KINDS = ("oci-layout", "index", "manifest", "config", "descriptor", "runtime-config", "umoci-json")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# Cached because the schema files are immutable data; loading them on every
# blob read would dominate small operations.
@functools.cache
def _documents() -> dict[str, dict]:
    docs = {}
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        contents = json.loads(path.read_text())
        docs[contents["$id"]] = contents
    return docs


@functools.cache
def _validator(kind: str):
    import jsonschema
    from referencing import Registry, Resource

    registry = Registry().with_resources(
        (uri, Resource.from_contents(contents)) for uri, contents in _documents().items())
    schema = json.loads((SCHEMA_DIR / f"{kind}.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=registry)


class _Unsupported(Exception):
    """A schema keyword the predicate compiler does not implement."""


_Check = Callable[[object], bool]
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "title", "description", "$comment",
                          "format", "contentEncoding"})  # format asserts nothing by default


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_integer(x) -> bool:
    return not isinstance(x, bool) and (isinstance(x, int) or isinstance(x, float) and x.is_integer())


_TYPES: dict[str, _Check] = {
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "integer": _is_integer,
    "number": _is_number,
}


def _same(x, value) -> bool:
    """jsonschema's equality for a scalar const/enum value: booleans never equal numbers."""
    if isinstance(x, bool) or isinstance(value, bool):
        return type(x) is type(value) and x == value
    return not isinstance(x, (list, dict)) and x == value


class _Compiler:
    """Turns a schema into a predicate with jsonschema's draft 2020-12 meaning
    for the keywords it knows; raises _Unsupported on any other."""

    def __init__(self, docs: dict[str, dict]):
        self.docs = docs
        self.refs: dict[str, _Check | None] = {}

    def resolve(self, base: str, ref: str) -> tuple[str, object]:
        path, _, pointer = ref.partition("#")
        uri = base.rsplit("/", 1)[0] + "/" + path if path else base
        if uri not in self.docs:
            raise _Unsupported(ref)
        node = self.docs[uri]
        for part in filter(None, pointer.split("/")):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return uri, node

    def ref(self, base: str, ref: str) -> _Check:
        uri, node = self.resolve(base, ref)
        key = f"{uri}#{ref.partition('#')[2]}"
        if key not in self.refs:
            self.refs[key] = None  # a recursive ref compiled meanwhile binds late, below
            self.refs[key] = self.compile(uri, node)
        return lambda x: self.refs[key](x)

    def compile(self, base: str, schema) -> _Check:
        if schema is True or schema is False:
            return lambda x, ok=schema: ok
        checks = [self.keyword(base, schema, k, v) for k, v in schema.items() if k not in _ANNOTATIONS]
        checks = [c for c in checks if c is not None]
        return lambda x: all(c(x) for c in checks)

    def keyword(self, base: str, schema: dict, key: str, value) -> _Check | None:
        if key == "$ref":
            return self.ref(base, value)
        if key == "type":
            types = [_TYPES[t] for t in ([value] if isinstance(value, str) else value)]
            return lambda x: any(t(x) for t in types)
        if key in ("const", "enum"):
            values = [value] if key == "const" else list(value)
            if any(isinstance(v, (list, dict)) for v in values):
                raise _Unsupported(key)
            return lambda x: any(_same(x, v) for v in values)
        if key == "properties":
            props = {name: self.compile(base, sub) for name, sub in value.items()}
            return lambda x: not isinstance(x, dict) or all(
                props[name](x[name]) for name in props if name in x)
        if key == "additionalProperties":
            known = set(schema.get("properties", ()))
            if "patternProperties" in schema:
                raise _Unsupported(key)
            sub = self.compile(base, value)
            return lambda x: not isinstance(x, dict) or all(sub(v) for k, v in x.items() if k not in known)
        if key == "required":
            return lambda x: not isinstance(x, dict) or all(name in x for name in value)
        if key == "items":
            if "prefixItems" in schema:
                raise _Unsupported(key)
            sub = self.compile(base, value)
            return lambda x: not isinstance(x, list) or all(sub(v) for v in x)
        if key == "minItems":
            return lambda x: not isinstance(x, list) or len(x) >= value
        if key == "minLength":
            return lambda x: not isinstance(x, str) or len(x) >= value
        if key == "pattern":
            regex = re.compile(value)
            return lambda x: not isinstance(x, str) or regex.search(x) is not None
        if key == "minimum":
            return lambda x: not _is_number(x) or x >= value
        if key == "maximum":
            return lambda x: not _is_number(x) or x <= value
        if key == "not":
            sub = self.compile(base, value)
            return lambda x: not sub(x)
        if key == "if":
            cond = self.compile(base, value)
            then = self.compile(base, schema.get("then", True))
            other = self.compile(base, schema.get("else", True))
            return lambda x: then(x) if cond(x) else other(x)
        if key in ("then", "else"):
            return None  # applied by "if"; without one they mean nothing
        raise _Unsupported(key)


@functools.cache
def _check(kind: str) -> _Check | None:
    docs = _documents()
    uri = next(uri for uri in docs if uri.endswith(f"/{kind}.json"))
    try:
        return _Compiler(docs).compile(uri, docs[uri])
    except _Unsupported:
        return None


def field_path(parts) -> str:
    """Render a JSON path like ``manifests[0].digest`` or ``annotations["a.b"]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT_RE.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def validate(doc, kind: str, source: str) -> None:
    """Raise SchemaError "<source>: <field>: <problem>" unless ``doc`` is a valid ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"unknown schema kind {kind!r}")
    check = _check(kind)
    if check is not None and check(doc):
        return
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(doc))
    if error is None:
        return
    message = error.message
    if error.validator == "not" and error.validator_value == {}:
        message = f"field not allowed in {kind}"
    where = field_path(error.absolute_path)
    prefix = f"{source}: {where}" if where else source
    raise SchemaError(f"{prefix}: {message}")
