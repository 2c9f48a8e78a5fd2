"""Security labels (R4 security-labels.html): does a resource carry a sensitive one?

Sensitive labels are ``meta.security`` codes: from v3-ActCode the information
sensitivity codes HIV, PSY (psychiatry), STD (sexually transmitted disease), SDV
(sexual and domestic violence), ETH (substance abuse); from v3-Confidentiality
R (restricted) and V (very restricted). A patient's consent decides what follows
from them (``auth/consent.py``); storage keeps the answer with each record.
"""

from __future__ import annotations

from typing import Any

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
SENSITIVE = frozenset({(ACT_CODE, c) for c in ("HIV", "PSY", "STD", "SDV", "ETH")}
                      | {(CONFIDENTIALITY, c) for c in ("R", "V")})


def is_sensitive(resource: dict[str, Any] | None) -> bool:
    labels = ((resource or {}).get("meta") or {}).get("security") or ()
    return any((c.get("system"), c.get("code")) in SENSITIVE for c in labels if isinstance(c, dict))
