"""UUID text written without the uuid module is the text the uuid module writes."""

from __future__ import annotations

import os
import uuid

from abstractruntime.core.ids import uuid4_text, uuid5_text, uuid_text
from abstractruntime.core.records import step_id


def test_uuid_text_matches_the_standard_library() -> None:
    values = [0, (1 << 128) - 1, 0x0123456789ABCDEF0123456789ABCDEF] + [
        int.from_bytes(os.urandom(16), "big") for _ in range(500)]
    for value in values:
        assert uuid_text(value) == str(uuid.UUID(int=value))
        for version in (1, 3, 4, 5):
            assert uuid_text(value, version) == str(uuid.UUID(int=value, version=version))


def test_uuid4_and_uuid5_text() -> None:
    drawn = {uuid4_text() for _ in range(200)}
    assert len(drawn) == 200
    for text in drawn:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122
    namespace = "6f1c1b5e-8a55-4b6e-9a7e-3b1f1d0c2a77"
    for name in ("run-1/0", "run-1/1", "ünïcode/7", ""):
        assert uuid5_text(namespace, name) == str(uuid.uuid5(uuid.UUID(namespace), name))
    # The expanded view's step ids stay the ones earlier releases gave.
    assert step_id("run-1", 3) == str(uuid.uuid5(uuid.UUID(namespace), "run-1/3"))
