"""Object-store reads and writes retried by shelfwise are counted once each, for the night's summary."""

from __future__ import annotations

import pytest

from shelfwise import storage


def test_transient_failures_are_retried_counted_and_taken_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "_BACKOFF", (0.0, 0.0, 0.0))
    storage.take_retries()  # start from zero
    failures = iter([ConnectionError("refused"), TimeoutError("slow")])

    def flaky() -> str:
        exc = next(failures, None)
        if exc is not None:
            raise exc
        return "payload"

    assert storage._retrying("read", "s3://bucket/key", flaky) == "payload"
    assert storage.take_retries() == 2
    assert storage.take_retries() == 0  # taken: the next night starts from zero


def test_a_store_that_stays_down_raises_after_the_last_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "_BACKOFF", (0.0, 0.0))
    storage.take_retries()

    def down() -> str:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        storage._retrying("write", "s3://bucket/key", down)
    assert storage.take_retries() == 2


def test_a_non_transient_error_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "_BACKOFF", (0.0, 0.0))
    storage.take_retries()

    def missing() -> str:
        raise FileNotFoundError("s3://bucket/key")

    with pytest.raises(FileNotFoundError):
        storage._retrying("read", "s3://bucket/key", missing)
    assert storage.take_retries() == 0
