"""What a request asks the database for: the filters of its ``find`` commands on one
collection, captured while active (pymongo command monitoring). Tests of paging use
it to count what those filters select, which is what FerretDB decodes. Tests of the
per-process caches count every find by collection, and which read one whole."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pymongo import MongoClient, monitoring
from pymongo.monitoring import CommandListener


class Finds(CommandListener):
    def __init__(self, collection: str) -> None:
        self.collection = collection
        self.active = False
        self.filters: list[dict[str, Any]] = []

    def started(self, event) -> None:  # type: ignore[no-untyped-def]
        if self.active and event.command_name == "find" \
                and event.command.get("find") == self.collection:
            self.filters.append(dict(event.command.get("filter") or {}))

    def succeeded(self, event) -> None:  # type: ignore[no-untyped-def]
        pass

    def failed(self, event) -> None:  # type: ignore[no-untyped-def]
        pass


def listening(collection: str) -> Finds:
    """A registered listener of ``collection``'s finds, inactive until a test turns it on."""
    finds = Finds(collection)
    monitoring.register(finds)
    return finds


class FindCounts(CommandListener):
    """Every find, as its collection, and "<collection> whole" when it named no ids."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    def started(self, event) -> None:  # type: ignore[no-untyped-def]
        if event.command_name == "find":
            filtered = "_id" in (event.command.get("filter") or {})
            self.seen[str(event.command["find"]) + ("" if filtered else " whole")] += 1

    def succeeded(self, event) -> None:  # type: ignore[no-untyped-def]
        pass

    def failed(self, event) -> None:  # type: ignore[no-untyped-def]
        pass


@contextmanager
def counted(mongo_uri: str, db_name: str) -> Iterator[tuple[Any, FindCounts]]:
    """Database ``db_name`` through a client of its own whose finds are counted."""
    finds = FindCounts()
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, event_listeners=[finds])
    try:
        yield client[db_name], finds
    finally:
        client.close()


class Commands(CommandListener):
    """Every command sent while active, as (command name, collection)."""

    def __init__(self) -> None:
        self.active = False
        self.sent: list[tuple[str, str]] = []

    def started(self, event) -> None:  # type: ignore[no-untyped-def]
        if self.active:
            target = event.command.get(event.command_name)
            self.sent.append((event.command_name, target if isinstance(target, str) else ""))

    def succeeded(self, event) -> None:  # type: ignore[no-untyped-def]
        pass

    def failed(self, event) -> None:  # type: ignore[no-untyped-def]
        pass


def commands_listening() -> Commands:
    """A registered listener of every command of clients created from now on, inactive
    until a test turns it on."""
    listener = Commands()
    monitoring.register(listener)
    return listener
