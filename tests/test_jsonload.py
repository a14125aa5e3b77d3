"""jsonload: every way outside bytes fail to be the JSON document expected
is one error naming the source, never a traceback."""

from __future__ import annotations

import os

import pytest

from orca.dockerfile.parser import parse_dockerfile
from umoci_py import jsonload
from umoci_py.errors import BundleError, SchemaError

NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("data, reason", [
    (NESTED, "nested too deeply"),
    (b"{", "Expecting property name"),
    (b"\xff\xfe\xfa", "can't decode"),
    (b'{"a": NaN}', "NaN is not JSON"),
    (b"[-Infinity]", "-Infinity is not JSON"),
    (b"", "Expecting value"),
])
def test_bad_bytes_are_one_error_naming_the_source(data, reason):
    with pytest.raises(SchemaError) as err:
        jsonload.loads(data, "/x/blob", SchemaError, "invalid JSON")
    assert str(err.value).startswith("/x/blob: invalid JSON: ")
    assert reason in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("data, kind, name", [(b"[]", dict, "not a JSON object"),
                                              (b"{}", list, "not a JSON array"),
                                              (b"1", str, "not a JSON string")])
def test_wrong_kind_of_document(data, kind, name):
    with pytest.raises(jsonload.Invalid, match=name):
        jsonload.parse(data, kind)


def test_good_documents(tmp_path):
    assert jsonload.parse(b'{"a": [1, "\\u00e9"]}', dict) == {"a": [1, "é"]}
    assert jsonload.parse('["x"]', list) == ["x"]
    (tmp_path / "f.json").write_bytes(b'{"k": 1}')
    assert jsonload.load(tmp_path / "f.json", BundleError, "cannot read", dict) == {"k": 1}


def test_load_missing_unreadable_and_bad(tmp_path):
    with pytest.raises(FileNotFoundError):
        jsonload.load(tmp_path / "none.json", BundleError, "cannot read")
    f = tmp_path / "f.json"
    f.write_bytes(b"{}")
    os.chmod(f, 0)
    with pytest.raises(BundleError, match=f"^{f}: cannot read: Permission denied$"):
        jsonload.load(f, BundleError, "cannot read")
    os.chmod(f, 0o600)
    f.write_bytes(NESTED)
    with pytest.raises(BundleError, match=f"^{f}: cannot read: nested too deeply$"):
        jsonload.load(f, BundleError, "cannot read")
    with pytest.raises(BundleError, match=f"^{tmp_path}: cannot read: Is a directory$"):
        jsonload.load(tmp_path, BundleError, "cannot read")


def test_dockerfile_exec_form_that_is_not_json_is_the_shell_form():
    """As BuildKit: JSON its decoder refuses (nested past its depth, NaN) is shell text."""
    deep = "[" * 20_000 + "]" * 20_000
    for text in (deep, '["a", NaN]'):
        run = parse_dockerfile(f"FROM scratch\nRUN {text}\n").stages[0].instructions[0]
        assert (run.cmd, run.shell_form) == ((text,), True)


def test_a_credentials_file_that_is_not_an_object(tmp_path):
    """It used to fail on doc.get with an AttributeError traceback."""
    from orca.registry.auth import find_credential
    from orca.registry.errors import RegistryError
    f = tmp_path / "auth.json"
    f.write_bytes(b'["auths"]')
    with pytest.raises(RegistryError, match=f"^{f}: cannot read registry credentials: not a JSON object$"):
        find_credential("example.org", "r", [f])
