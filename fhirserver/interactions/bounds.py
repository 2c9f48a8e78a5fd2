"""What a search may read: one no index answers is refused on a large type.

A query FerretDB cannot narrow by an indexed equality reads every record of its
type, and a clinician at a desk waits for it (seconds at 20,000 records). So once
the type holds more than ``FHIR_SCAN_LIMIT`` records such a query is refused (400
too-costly, search.html#errors), whether it is the search itself or the inner
query of a chain or ``_has``, which runs first and alone against its own type.
"""

from __future__ import annotations

from typing import Any

from .. import errors
from ..search.keys import indexed_branches, is_indexed
from .context import Context


def bounded(ctx: Context, rtype: str, flt: dict[str, Any], through: str | None = None) -> None:
    """Refuse ``flt`` on ``rtype`` when no index answers it and the type is large.
    ``through``: the chained or ``_has`` parameter whose inner query it is."""
    if is_indexed(rtype, flt) or indexed_branches(rtype, flt) is not None:
        return  # an index answers it, or one per id of the few it is limited to
    limit = ctx.settings.scan_limit
    if ctx.repo.estimated_count(rtype) <= limit:
        return
    if through is None:
        raise errors.TooCostly(
            f"This {rtype} search would read every one of more than {limit} records: "
            "add a parameter that narrows it (patient, subject, code, identifier, _id)")
    raise errors.TooCostly(
        f"The search through '{through}' would read every one of more than {limit} "
        f"{rtype} records: narrow its {rtype} condition by an identifier, code, patient "
        "or id", expression=through)
