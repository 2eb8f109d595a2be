"""Spies shared by tests: what the code under test did, counted as it does it."""

from __future__ import annotations

import pytest

from django_sockmail.models import TranscriptChunk, TranscriptLine


def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, the first_seq of each chunk decoded, in the order they are."""
    decoded: list[int] = []
    real = TranscriptChunk.decoded

    def spy(chunk: TranscriptChunk) -> list[TranscriptLine]:
        decoded.append(chunk.first_seq)
        return real(chunk)

    monkeypatch.setattr(TranscriptChunk, "decoded", spy)
    return decoded
