"""Handler dispatch without a broker: clear errors for bad commands, storage on a local folder."""

from __future__ import annotations

import re

import pytest

from pudato.backends.storage.local import LocalStorage
from pudato.errors import InvalidCommand
from pudato.handlers.base import parse_command
from pudato.handlers.storage import StorageHandler
from pudato.protocol import Command, Result
from pudato.settings import Settings


@pytest.fixture
def storage(tmp_path) -> StorageHandler:
    imports = tmp_path / "imports"
    imports.mkdir()
    (imports / "a.csv").write_text("x\n1\n")
    settings = Settings(_env_file=None, storage={"backend": "local", "local_root": tmp_path / "objects",
                                                  "import_roots": [imports]})
    return StorageHandler(settings, LocalStorage(tmp_path / "objects"))


def _run(handler, action, **payload) -> Result:
    return handler.execute(Command(handler="storage", action=action, payload=payload, job_id="j"))


def test_parse_command_names_the_problem():
    with pytest.raises(InvalidCommand, match="not valid JSON"):
        parse_command("{nope")
    with pytest.raises(InvalidCommand, match="must be a JSON object, got list"):
        parse_command("[1, 2]")
    with pytest.raises(InvalidCommand, match="handler: unknown handler 'spreadsheet'; known handlers: storage, "):
        parse_command({"handler": "spreadsheet", "action": "x"})


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("step_name", "n" * 201, "step_name: String should have at most 200 characters"),
    ("job_id", "j" * 65, "job_id: String should match pattern"),
    ("step_id", "../other", "step_id: String should match pattern"),
    ("step_name", "a\x00b", "step_name contains a NUL character"),
    ("payload", {"key": "a\x00b"}, "payload.key contains a NUL character"),
])
def test_commands_the_registry_could_not_hold_are_refused_at_parse_time(field, value, problem):
    with pytest.raises(InvalidCommand, match=re.escape(problem)):
        parse_command({"handler": "storage", "action": "put", field: value})


def test_put_get_copy_delete_round_trip_on_a_local_folder(storage):
    put = _run(storage, "put", key="raw/a.txt", content="hello")
    assert put.status == "succeeded"
    (output,) = put.outputs
    assert output.namespace == "file"
    assert output.name.endswith("objects/raw/a.txt")
    assert output.facets["sha256"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert _run(storage, "get", key="raw/a.txt").data["content"] == "hello"
    copied = _run(storage, "copy", source_key="raw/a.txt", target_key="raw/b.txt")
    assert copied.inputs[0].same_dataset(output)
    assert [o["key"] for o in _run(storage, "list", prefix="raw/").data["objects"]] == ["raw/a.txt", "raw/b.txt"]
    assert _run(storage, "delete", key="raw/a.txt").status == "succeeded"
    missing = _run(storage, "head", key="raw/a.txt")
    assert missing.status == "failed"
    assert missing.error.type == "NotFound"


def test_put_imports_only_below_an_import_root(storage, tmp_path):
    ok = _run(storage, "put", key="in/a.csv", source="a.csv")
    assert ok.status == "succeeded"
    assert ok.inputs[0].name.endswith("imports/a.csv")
    outside = _run(storage, "put", key="in/p", source="/etc/passwd")
    assert outside.error.type == "UnsafeInput"
    assert "not below an import root" in outside.error.message
    escape = _run(storage, "put", key="in/p", source="../../../../etc/passwd")
    assert escape.error.type == "UnsafeInput"


@pytest.mark.parametrize("key", ["../x", "/abs", "a/../../x", "a//b", "a\\b", ""])
def test_unsafe_keys_are_refused(storage, key):
    result = _run(storage, "put", key=key, content="x")
    assert result.status == "failed"
    assert result.error.type == "UnsafeInput"


def test_unknown_action_and_bad_payload_are_failed_results(storage):
    unknown = _run(storage, "explode")
    assert unknown.error.type == "InvalidCommand"
    assert "known actions: copy, delete" in unknown.error.message
    two_sources = _run(storage, "put", key="k", content="a", content_base64="YQ==")
    assert "exactly one of content, content_base64 or source" in two_sources.error.message
    assert _run(storage, "ping").data == {"pong": "storage"}


@pytest.fixture
def two_roots(tmp_path) -> tuple[StorageHandler, dict[str, object]]:
    first, second, elsewhere = tmp_path / "first", tmp_path / "second", tmp_path / "elsewhere"
    for folder in (first, second, elsewhere):
        folder.mkdir()
    (elsewhere / "secret.txt").write_text("not for import\n")
    (first / "leak.csv").symlink_to(elsewhere / "secret.txt")
    (first / "linked-dir").symlink_to(elsewhere)
    (first / "real.csv").write_text("x\n1\n")
    (first / "alias.csv").symlink_to(first / "real.csv")  # a link that stays inside its root is fine
    settings = Settings(_env_file=None, storage={"backend": "local", "local_root": tmp_path / "objects",
                                                  "import_roots": [first, second]})
    return StorageHandler(settings, LocalStorage(tmp_path / "objects")), {"first": first, "elsewhere": elsewhere}


@pytest.mark.parametrize("source", ["leak.csv", "linked-dir/secret.txt", "FIRST/leak.csv"])
def test_a_symlink_out_of_an_import_root_is_refused_as_such(two_roots, source):
    storage, folders = two_roots
    source = source.replace("FIRST", str(folders["first"]))
    refused = _run(storage, "put", key="in/x", source=source)
    assert refused.error.type == "UnsafeInput"  # not NotFound for the other root
    assert "symbolic link" in refused.error.message
    assert str(folders["first"]) in refused.error.message  # the root it was written under


def test_a_symlink_inside_its_root_imports_and_a_missing_file_names_every_root(two_roots):
    storage, _ = two_roots
    assert _run(storage, "put", key="in/alias.csv", source="alias.csv").status == "succeeded"
    missing = _run(storage, "put", key="in/x", source="nothing-here.csv")
    assert missing.error.type == "NotFound"
    assert "import roots" in missing.error.message


def test_a_symlink_out_of_the_local_storage_root_is_refused_as_such(tmp_path):
    objects, elsewhere = tmp_path / "objects", tmp_path / "elsewhere"
    objects.mkdir()
    elsewhere.mkdir()
    (elsewhere / "secret.txt").write_text("no\n")
    (objects / "raw").symlink_to(elsewhere)
    storage = StorageHandler(Settings(_env_file=None, storage={"backend": "local", "local_root": objects}),
                             LocalStorage(objects))
    refused = _run(storage, "get", key="raw/secret.txt")
    assert refused.error.type == "UnsafeInput"
    assert "symbolic link" in refused.error.message
