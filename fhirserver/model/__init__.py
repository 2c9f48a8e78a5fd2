"""FHIR knowledge with no I/O: types, validation, references, labels and identifiers.

- :mod:`.types`: the resource types this server stores and every R4 type name,
  resource id syntax (R4 datatypes.html#id).
- :mod:`.validation`: structure and datatypes through ``fhir.resources``, then the
  JSON Schema profiles in ``profiles/`` and the FHIR invariants they cannot express.
- :mod:`.references`: finding, parsing and rewriting ``Reference.reference``
  (R4 references.html).
- :mod:`.security_labels`: which ``meta.security`` labels mark a record sensitive
  (R4 security-labels.html).
- :mod:`.identifier_systems`: the registry of identifier systems (published as
  NamingSystem resources), read from ``identifier_systems.json``.
- :mod:`.identity_numbers`: normalising and checking identity document numbers.
"""
