"""The size a write takes in the database, checked before anything is written.

MongoDB (and FerretDB) refuse a document over 16 MiB of BSON (``DocumentTooLarge``).
The current-version document is the largest a write makes: the resource plus its
index values, sort keys and index keys. BSON can be much larger than the JSON that
was sent (each array element carries its index as a key), so the size is measured
on the BSON itself.
"""

from __future__ import annotations

import bson
import bson.errors

from .records import Write
from .unit_of_work import current_document

#: BSON's document limit, less room for the command that carries the document.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024 - 64 * 1024


def stored_bytes(write: Write) -> int:
    """BSON size of the current-version document ``write`` stores (0 for a deletion)."""
    if write.resource is None:
        return 0
    return len(bson.encode(current_document(write)))


def resource_bytes(resource: dict[str, object]) -> int | None:
    """BSON size of ``resource`` alone, or None when BSON cannot hold it (an integer
    past 64 bits: the write reports that itself)."""
    try:
        return len(bson.encode(resource))
    except (OverflowError, TypeError, ValueError, bson.errors.InvalidDocument):
        return None
