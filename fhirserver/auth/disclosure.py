"""Who receives a person's identity document numbers whole (pure).

Minimum disclosure: a number is given in full only where the caller's access needs
it, and masked otherwise (``model/masking.py``, R4 security-labels.html ``MASKED``):

* the operator (scripts run by whoever runs the server);
* the ``registration`` scope (a registration desk records and checks documents);
* a backend client holding the ``identity`` scope (a system that must match
  people by number, registered for it);
* a patient for their own record and those of the family members bound to their
  card (the patients their token reaches: ``access.Access.reachable``).

Everyone else, a treating clinician included, sees masked numbers: a clinician
needs to know whom they treat, not to copy their resident ID. Health card numbers
stay whole, in addition, for the ``card-number`` scope, whose purpose is to learn
them (``$ihe-pix``, lookup_rules.py).
"""

from __future__ import annotations

from .lookup_rules import sees_card_numbers
from .policy import Caller
from .scopes import IDENTITY, REGISTRATION


def sees_whole(caller: Caller | None, patient: str | None,
               reach: frozenset[str] | None) -> bool:
    """Does ``caller`` see whole the identity numbers in a record of ``patient``
    (None: a record of no patient)? ``reach``: the patients the caller reaches
    (None: all)."""
    if caller is None or caller.kind == "operator" or caller.has(REGISTRATION):
        return True
    if caller.kind == "system":
        return caller.has(IDENTITY)
    if caller.kind == "patient":
        return patient is not None and reach is not None and patient in reach
    return False


def kept_whole(caller: Caller | None, card_system: str) -> frozenset[str]:
    """Systems whose numbers stay whole even where the others are masked."""
    return frozenset({card_system}) if caller is not None and sees_card_numbers(caller) \
        else frozenset()
