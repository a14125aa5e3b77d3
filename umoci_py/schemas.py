"""JSON Schema validation of every OCI document we read or write.

The schemas are ours (written from the OCI image-spec and runtime-spec) and
live in <repo>/schemas/*.json; they reference each other by relative $ref.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import jsonschema
from referencing import Registry, Resource

from .errors import SchemaError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
KINDS = ("oci-layout", "index", "manifest", "config", "descriptor", "runtime-config", "umoci-json")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@functools.cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    # Cached because the schema files are immutable data; loading them on
    # every blob read would dominate small operations.
    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        contents = json.loads(path.read_text())
        resources.append((contents["$id"], Resource.from_contents(contents)))
    registry = Registry().with_resources(resources)
    schema = json.loads((SCHEMA_DIR / f"{kind}.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=registry)


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
    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(doc))
    if error is None:
        return
    message = error.message
    if error.validator == "not" and error.validator_value == {}:
        message = f"field not allowed in {kind}"
    where = field_path(error.absolute_path)
    prefix = f"{source}: {where}" if where else source
    raise SchemaError(f"{prefix}: {message}")
