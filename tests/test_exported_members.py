"""The public surface is what ``bosbase_pubsub.__all__`` says (after httpx's test)."""

from __future__ import annotations

import inspect

import bosbase_pubsub
import bosbase_pubsub.client


def test_all_exports_exist_and_are_documented() -> None:
    for name in bosbase_pubsub.__all__:
        member = getattr(bosbase_pubsub, name)
        if inspect.isclass(member):  # (not the type aliases ``Handler``, ``AsyncHandler``)
            assert member.__module__.startswith("bosbase_pubsub.client"), name
            assert member.__doc__, f"{name} has no docstring"


def test_the_package_exports_the_whole_sdk_and_nothing_private() -> None:
    assert set(bosbase_pubsub.__all__) - {"__version__"} == set(bosbase_pubsub.client.__all__)
    assert all(not name.startswith("_") for name in bosbase_pubsub.client.__all__)
    assert sorted(bosbase_pubsub.__all__) == bosbase_pubsub.__all__


def test_public_methods_have_docstrings() -> None:
    for name in ("BosBase", "AsyncBosBase", "PubSub", "AsyncPubSub", "AuthStore", "MessageStream"):
        cls = getattr(bosbase_pubsub, name)
        for attribute, member in vars(cls).items():
            if attribute.startswith("_") or not callable(member):
                continue
            assert member.__doc__, f"{name}.{attribute} has no docstring"
