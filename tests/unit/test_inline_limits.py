"""Inline content: refused at submit when a queue message cannot carry it; kept by digest in the registry."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pudato import jobs
from pudato.errors import InvalidCommand
from pudato.inline import MAX_PAYLOAD_BYTES, RECORDED_INLINE_BYTES, recorded_payload
from pudato.registry.migrate import upgrade
from pudato.registry.repository import Registry
from pudato.settings import Settings

DATA = Path(__file__).resolve().parents[1] / "data" / "incorrigible"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade(url)
    return Settings(_env_file=None, registry={"url": url})


def test_oversized_inline_content_is_refused_before_anything_is_recorded(settings):
    text = (DATA / "oxford_spend_2014_q1.csv").read_text() * 25  # about 160 KB of real rows
    assert len(text) > MAX_PAYLOAD_BYTES
    with pytest.raises(InvalidCommand) as caught:
        jobs.submit(jobs.step("storage", "put", key="raw/big.csv", content=text), settings=settings, app=object())
    assert "over the 131,072 bytes" in caught.value.message
    assert "pass its key" in caught.value.message
    assert Registry(settings.registry.url).jobs() == []


def test_the_registry_keeps_large_inline_content_as_digest_and_size():
    text = (DATA / "oxford_spend_2014_q3.csv").read_text()
    assert len(text) > RECORDED_INLINE_BYTES
    kept = recorded_payload({"key": "raw/q3.csv", "content": text})
    assert kept == {
        "key": "raw/q3.csv",
        "inline_content_elided": {
            "content": {"sha256": hashlib.sha256(text.encode()).hexdigest(), "bytes": len(text.encode())},
        },
    }


def test_small_inline_content_is_kept_whole():
    assert recorded_payload({"key": "k", "content": "a,b\n1,2\n"}) == {"key": "k", "content": "a,b\n1,2\n"}


def test_a_job_whose_send_fails_is_recorded_as_failed(settings):
    class Refusing:
        def signature(self, *args, **kwargs):
            raise RuntimeError("MessageTooLong: the broker refused the message")

    with pytest.raises(Exception, match="could not send the job"):
        jobs.submit(jobs.step("storage", "head", key="k"), settings=settings, app=Refusing())
    [job] = Registry(settings.registry.url).jobs()
    assert job["status"] == "failed"
    step = Registry(settings.registry.url).job(job["id"])["steps"][0]
    assert "not sent: could not send the job" in step["error"]["message"]
