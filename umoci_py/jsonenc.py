"""Go ``encoding/json`` compatible serialisation.

Blob digests depend on exact bytes, so documents we write must be byte-identical
to what umoci (Go's ``json.Encoder``) would write for the same data: compact
separators, ``<``, ``>``, ``&``, U+2028 and U+2029 escaped, other non-ASCII kept
as UTF-8, a trailing newline.  Key order is the dict order (callers build dicts
in Go struct field order).  Control characters follow Go >= 1.22 (``\\b`` and
``\\f`` as short escapes).
"""

from __future__ import annotations

import math
import re

_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
          "\b": "\\b", "\f": "\\f"}
# Everything Go escapes: controls, quote, backslash, HTML-significant
# characters, the JS line separators, and lone surrogates (invalid UTF-8 in Go,
# replaced by U+FFFD).
_ESCAPE_RE = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')


def _escape_char(match: re.Match) -> str:
    ch = match.group(0)
    if ch in _SHORT:
        return _SHORT[ch]
    if "\ud800" <= ch <= "\udfff":
        return "\ufffd"
    return "\\u%04x" % ord(ch)


def _string(s: str) -> str:
    return '"' + _ESCAPE_RE.sub(_escape_char, s) + '"'


def _float(f: float) -> str:
    if math.isnan(f) or math.isinf(f):
        raise ValueError(f"json: unsupported value: {f!r}")
    if f == 0:
        return "-0" if math.copysign(1, f) < 0 else "0"
    # Go uses plain notation for 1e-6 <= |f| < 1e21 and shortest exponent
    # notation ("1e-07" cleaned to "1e-7") outside it.
    if 1e-6 <= abs(f) < 1e21:
        from decimal import Decimal  # ~1 ms to import; OCI documents seldom hold a float

        return format(Decimal(repr(f)).normalize(), "f")
    text = repr(f)
    return re.sub(r"e([+-])0(\d)$", r"e\1\2", text)


def _encode(obj, out: list[str]) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, str):
        out.append(_string(obj))
    elif isinstance(obj, int):
        out.append(str(int(obj)))
    elif isinstance(obj, float):
        out.append(_float(obj))
    elif isinstance(obj, dict):
        out.append("{")
        for i, (key, value) in enumerate(obj.items()):
            if not isinstance(key, str):
                raise TypeError(f"json: object key must be a string, not {type(key).__name__}")
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _encode(value, out)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        for i, value in enumerate(obj):
            if i:
                out.append(",")
            _encode(value, out)
        out.append("]")
    else:
        raise TypeError(f"json: unsupported type: {type(obj).__name__}")


def dumps(obj) -> bytes:
    """The bytes Go's json.Encoder.Encode writes for ``obj`` (with newline)."""
    out: list[str] = []
    _encode(obj, out)
    out.append("\n")
    return "".join(out).encode("utf-8")
