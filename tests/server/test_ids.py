"""Record ids and ``created`` stamps (``server/ids.py``)."""

from __future__ import annotations

import re
import time

from bosbase_pubsub import protocol
from bosbase_pubsub.server import ids


def test_ids_are_15_characters_of_the_alphabet_and_unique() -> None:
    made = [ids.new_id() for _ in range(3 * 256 + 7)]  # across several refills of the pool
    assert all(re.fullmatch(r"[a-z0-9]{15}", made_id) for made_id in made)
    assert len(set(made)) == len(made)


def test_created_is_the_current_millisecond_in_the_contract_layout() -> None:
    before = time.time()
    stamps = [ids.now_created() for _ in range(1000)]
    after = time.time()
    for stamp in stamps:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z", stamp)
        moment = protocol.parse_created(stamp).timestamp()
        assert before - 0.001 <= moment <= after
