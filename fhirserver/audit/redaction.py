"""Query strings as the access log may show them (pure).

A search's query string carries what identifies people (resident ID and phone
numbers, names) and what is most sensitive about them (``_has:Observation:subject:
code=`` of an HIV test next to a patient id). The access log keeps the request's
shape only: parameters are shown by name, and only the values of the result-control
parameters of FHIR R4 search (search.html section 3.1.1.5: ``_count``, ``_sort``,
``_summary``, ``_total``, ``_format``, ``_pretty``, ``_elements``, ``_include``,
``_revinclude``, ``_type``) are kept. Everything else is replaced by ``***``: an
allowlist, so a parameter added later is hidden until someone decides otherwise.
A name that is not a plausible parameter name (a value sent without ``=``, say) is
hidden too.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

RESULT_PARAMETERS = frozenset({"_count", "_sort", "_summary", "_total", "_format", "_pretty",
                               "_elements", "_include", "_revinclude", "_type"})
MASK = "***"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-.:$]{0,99}")


def _kept(name: str) -> bool:
    return name.split(":", 1)[0] in RESULT_PARAMETERS


def redact_query(query: str) -> str:
    """``query`` (as sent, percent-encoded) with every value outside the allowlist
    replaced by ``***``."""
    if not query:
        return query
    out: list[str] = []
    for part in query.split("&"):
        if not part:
            out.append(part)
            continue
        raw_name, eq, value = part.partition("=")
        name = unquote_plus(raw_name)
        if not _NAME.fullmatch(name):
            out.append(MASK)
        elif not eq:
            out.append(name)
        else:
            out.append(f"{name}={value if _kept(name) else MASK}")
    return "&".join(out)


def redact_target(target: str) -> str:
    """A request target or URL (``/Patient?identifier=...``, a Referer) with its query
    redacted and any fragment hidden."""
    target, hash_, _ = target.partition("#")
    path, question, query = target.partition("?")
    return path + (question + redact_query(query) if question else "") + (f"#{MASK}" if hash_ else "")


def redact_request_line(line: str) -> str:
    """``METHOD target PROTOCOL`` with the target redacted."""
    method, space, rest = line.partition(" ")
    if not space:
        return redact_target(line)
    target, space2, protocol = rest.rpartition(" ")
    if not space2:
        return f"{method} {redact_target(rest)}"
    return f"{method} {redact_target(target)} {protocol}"
