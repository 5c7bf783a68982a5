"""Which inputs an exact rerun pins, and storage reads at a version without S3."""

from __future__ import annotations

import pytest

from pudato import jobs, pipelines, reruns
from pudato.backends.storage.local import LocalStorage
from pudato.errors import VersionGone
from pudato.handlers.storage import StorageHandler
from pudato.protocol import Command, InputPin
from pudato.settings import Settings


def _ref(namespace: str, name: str, **facets: object) -> dict:
    return {"namespace": namespace, "name": name, "facets": facets}


def test_predecessors_follow_chains_groups_and_chords():
    a, b, c, d = (jobs.Step("table", "load", step_id=x) for x in "abcd")
    canvas = jobs.describe(jobs.chain(a, jobs.chord([b, c], d)))
    assert reruns.predecessors(canvas) == {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"a", "b", "c"}}


def test_only_inputs_from_outside_the_job_are_pinned():
    load, query = jobs.Step("table", "load", step_id="load"), jobs.Step("query", "run", step_id="query")
    job = {
        "canvas": jobs.describe(jobs.chain(load, query)),
        "steps": [
            {"id": "load", "inputs": [_ref("s3://b", "raw/a.csv", version="v1", sha256="s")],
             "outputs": [_ref("ducklake://lake", "main.a", snapshot_id=7)]},
            {"id": "query", "outputs": [],
             "inputs": [_ref("ducklake://lake", "main.a", snapshot_id=7),
                        _ref("ducklake://lake", "main.regions", snapshot_id=7, rows=3),
                        _ref("ducklake://lake", "main.view_without_version")]},
        ],
    }
    pins = reruns.pins_by_step(job)
    assert pins["load"] == [InputPin(namespace="s3://b", name="raw/a.csv", version="v1", sha256="s")]
    assert pins["query"] == [InputPin(namespace="ducklake://lake", name="main.regions", version="7")]


def test_the_rebuilt_canvas_carries_pins_to_fresh_steps():
    load = jobs.Step("table", "load", {"table": "a", "key": "k"}, "load", step_id="old")
    pin = InputPin(namespace="s3://b", name="k", version="v1")
    rebuilt = pipelines.from_description(jobs.describe(jobs.chain(load)), {"old": [pin]})
    (step,) = jobs.steps_of(rebuilt)
    assert step.step_id != "old"
    assert step.pinned_inputs == [pin]
    assert step.payload == {"table": "a", "key": "k"}


def test_local_storage_serves_only_the_version_it_still_has(tmp_path):
    storage = LocalStorage(tmp_path)
    first = storage.put_bytes("a.csv", b"x\n1\n")
    assert storage.get_bytes("a.csv", first.version) == b"x\n1\n"
    storage.put_bytes("a.csv", b"x\n2\n")
    with pytest.raises(VersionGone, match="keeps no versions") as raised:
        storage.get_bytes("a.csv", first.version)
    assert first.version in raised.value.message
    assert raised.value.details["version"] == first.version


def test_an_imported_file_that_changed_is_refused_by_a_pinned_put(tmp_path):
    source = tmp_path / "in" / "a.csv"
    source.parent.mkdir()
    source.write_text("x\n1\n")
    settings = Settings(_env_file=None, storage={"backend": "local", "local_root": tmp_path / "store",
                                                 "import_roots": [tmp_path / "in"]})
    handler = StorageHandler(settings)
    put = {"key": "a.csv", "source": "a.csv"}
    first = handler.execute(Command(handler="storage", action="put", payload=put))
    recorded = first.inputs[0]
    pin = reruns.recorded_pin(recorded.model_dump())
    assert pin is not None
    assert pin.sha256 == recorded.facets["sha256"]

    source.write_text("x\n2\n")
    again = handler.execute(Command(handler="storage", action="put", payload=put, pinned_inputs=[pin]))
    assert again.status == "failed"
    assert again.error.type == "VersionGone"
    assert "local files keep no versions" in again.error.message
    with pytest.raises(VersionGone, match=str(source)):
        reruns.check([pin], settings)
