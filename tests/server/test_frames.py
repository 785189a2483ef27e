"""Outbound frames: the cached headers must give exactly the frames websockets builds."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from bosbase_pubsub.server.hub import encode_text_frame


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70_000])
def test_text_frames_match_websockets_before_and_after_caching(length: int) -> None:
    for fill in (b"a", b"b"):  # the second call reuses the header cached by the first
        payload = fill * length
        assert encode_text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)
