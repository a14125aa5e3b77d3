"""Parsing JSON that comes from outside: layouts, bundles, registries, cache
records, credential files, Dockerfiles.

Bad bytes fail json.loads in several ways (bad UTF-8, bad syntax, nesting
past Python's recursion limit, which is not a ValueError), and a document of
the wrong type only fails later, far from its file.  Here each becomes one
Invalid whose text is the reason, which loads/load put after the source's
name in the caller's error class.  NaN and Infinity are refused: they are
not JSON (RFC 8259), and Go's encoding/json, which umoci, registries and
BuildKit use, refuses them too.
"""

from __future__ import annotations

import json
import os

TYPE_CHECKING = False  # typing's, without importing typing: ~2 ms of every orca-build start
if TYPE_CHECKING:
    from typing import Any

_KIND_NAMES = {dict: "a JSON object", list: "a JSON array", str: "a JSON string"}


class Invalid(ValueError):
    """Not the JSON document expected; str() is the reason, for a user."""


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse(data: bytes | str, kind: type | None = None) -> Any:
    """The document in data (which must be of type kind when given), or Invalid."""
    try:
        doc = json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise Invalid("nested too deeply") from None
    except ValueError as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Invalid(str(err)) from None
    if kind is not None and not isinstance(doc, kind):
        raise Invalid(f"not {_KIND_NAMES.get(kind, kind.__name__)}")
    return doc


def loads(data: bytes | str, source: str, error: type[Exception], what: str, kind: type | None = None) -> Any:
    """parse, failing with error("<source>: <what>: <reason>")."""
    try:
        return parse(data, kind)
    except Invalid as err:
        raise error(f"{source}: {what}: {err}") from None


def load(path: str | os.PathLike, error: type[Exception], what: str, kind: type | None = None) -> Any:
    """The document in the file at path, failing as loads does, and with
    error("<path>: <what>: <strerror>") when it cannot be read.  A missing
    file raises FileNotFoundError: each caller knows what that means."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise
    except OSError as err:
        raise error(f"{path}: {what}: {err.strerror or err}") from None
    return loads(data, str(path), error, what, kind)
