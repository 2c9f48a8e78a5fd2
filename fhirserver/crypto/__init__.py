"""Keys that never enter the database, and sealing of the secrets that must.

A deployment's master key (``FHIR_MASTER_KEY``, else a 0600 key file) is kept apart
from the database, so a stolen database file or dump does not carry the means to
open what it holds (DESIGN.md section 1: "a stolen database dump should not reveal
who the patients are"). Every use of it goes through a sub-key derived for that one
purpose (HKDF, RFC 5869), so a key that leaks from one use does not open another.

* :mod:`.master` loads or creates the master key and derives sub-keys;
* :mod:`.sealing` seals values stored in the database (AES-256-GCM, NIST SP 800-38D);
* :mod:`.binding` records in the database which master key it is sealed under, so a
  server started with another key stops at start-up instead of failing requests.

Errors here are operators' configuration problems, never a client's, so they stand
apart from the FHIR error hierarchy of ``fhirserver.errors``::

    CryptoError
    ├── MasterKeyError      the key is missing, malformed, too short or unreadable
    │   └── WrongMasterKey  the key is not the one the database is sealed under
    └── SealError           a sealed value does not open (altered or moved)
"""

from __future__ import annotations


class CryptoError(RuntimeError):
    """A key or sealed value problem the operator has to fix."""


class MasterKeyError(CryptoError):
    """The master key is missing, malformed, too short or unreadable."""


class WrongMasterKey(MasterKeyError):
    """The configured master key is not the one the database was sealed under."""


class SealError(CryptoError):
    """A sealed value does not open: it was altered or moved from another document."""


__all__ = ["CryptoError", "MasterKeyError", "SealError", "WrongMasterKey"]
