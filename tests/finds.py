"""What a request asks the database for: the filters of its ``find`` commands on one
collection, captured while active (pymongo command monitoring). Tests of paging use
it to count what those filters select, which is what FerretDB decodes."""

from __future__ import annotations

from typing import Any

from pymongo import monitoring
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
