"""The operations this server offers, as data: what the CapabilityStatement lists,
the OperationDefinitions it serves (R4 operationdefinition.html) and the OpenAPI
paths are all made from :data:`OPERATIONS`, so the three cannot disagree.

An operation taken from a published specification (``$everything``, ``$lastn``,
``$match``, ``$merge``, IHE PIXm ``$ihe-pix``) keeps that canonical URL in the
CapabilityStatement; the definition served here describes what this server accepts
of it, with ``base`` naming the published one. The server's own operations have
their canonical URL on the server: ``[base]/OperationDefinition/Patient-scan-card``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..version import __version__

HL7 = "http://hl7.org/fhir/OperationDefinition/"


@dataclass(frozen=True)
class Param:
    """One parameter of an operation (OperationDefinition.parameter)."""

    name: str
    type: str  # FHIR type: string, boolean, Reference, Identifier, Patient, Bundle...
    doc: str
    min: int = 0
    max: str = "1"
    use: str = "in"
    example: str | bool | int | None = None
    search_type: str | None = None  # for a search parameter passed through (token, date...)
    targets: tuple[str, ...] = ()  # Reference(...) target types

    @property
    def primitive(self) -> bool:
        return self.type[:1].islower()


@dataclass(frozen=True)
class Operation:
    """One operation (operations.html): where it runs, how it is called, what it takes."""

    code: str
    resource: str  # "" for a system-level operation ([base]/$code)
    instance: bool  # [base]/Patient/{id}/$code, else [base]/Patient/$code
    methods: tuple[str, ...]
    title: str
    description: str
    params: tuple[Param, ...] = ()
    affects_state: bool = False
    standard: str | None = None  # canonical of the published definition it follows
    statuses: tuple[int, ...] = (200,)
    produces: tuple[str, ...] = field(default_factory=tuple)  # other media types (images)

    @property
    def id(self) -> str:
        return f"{self.resource}-{self.code}" if self.resource else self.code

    @property
    def path(self) -> str:
        if not self.resource:
            return f"/${self.code}"
        return f"/{self.resource}/{{id}}/${self.code}" if self.instance else f"/{self.resource}/${self.code}"

    @property
    def rule(self) -> str:
        """The Flask route that serves it."""
        if not self.resource:
            return f"/${self.code}"
        return f"/<rtype>/<rid>/${self.code}" if self.instance else f"/<rtype>/${self.code}"

    def inputs(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.use == "in")

    def outputs(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.use == "out")


def out(type_: str, doc: str, min_: int = 1) -> Param:
    """The single ``return`` output: the answer is that resource itself."""
    return Param("return", type_, doc, min=min_, use="out")


CARD_OUT = (
    Param("number", "Identifier", "The card number, in the health card identifier system",
          min=1, use="out"),
    Param("status", "code", "active, suspended or revoked", min=1, use="out"),
    Param("patient", "Reference", "The cardholder", min=1, use="out", targets=("Patient",)),
    Param("guardian", "Reference", "A child's guardian, who holds the card for them", use="out",
          targets=("Patient",)),
)


BULK = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"


def _export(resource: str, title: str, description: str, *extra: Param) -> Operation:
    """Bulk Data $export (Bulk Data Access IG 2.0.0, export.html): asynchronous, 202
    with the status URL in Content-Location. On Group it runs on an instance
    (``Group/{id}/$export``)."""
    standard = {"": "export", "Patient": "patient-export", "Group": "group-export"}[resource]
    return Operation(
        "export", resource, resource == "Group", ("GET", "POST"), title,
        description + " Needs Prefer: respond-async; for backend clients (system/ scopes) "
        "and operators. The status URL answers 202 with X-Progress while it runs, then "
        "the manifest of NDJSON files.",
        (Param("_outputFormat", "string", "application/fhir+ndjson (default), "
               "application/ndjson or ndjson", example="application/fhir+ndjson"),
         Param("_since", "instant", "Only resources changed after this instant",
               example="2024-01-01T00:00:00Z"),
         Param("_type", "string", "Comma-separated resource types (default: every type "
               "the client may search)", max="*", example="Patient,Observation"),
         Param("_typeFilter", "string", "FHIR search queries selecting a type's resources, "
               "Type?params", max="*", example="Observation?category=laboratory"),
         *extra,
         out("OperationOutcome", "Accepted (202): Content-Location is the status URL")),
        standard=BULK + standard, statuses=(202,))


def _card(code: str, title: str, description: str, status: int = 200) -> Operation:
    return Operation(code, "Patient", True, ("POST",), title, description, CARD_OUT,
                     affects_state=True, statuses=(status,))


OPERATIONS: tuple[Operation, ...] = (
    _export("", "Bulk Data export", "Every resource of every type the client may search, "
            "of the patients it reaches, as NDJSON files per type."),
    _export("Patient", "Bulk Data export of patients", "The compartments of the patients "
            "the client reaches, as NDJSON files per type.",
            Param("patient", "Reference", "Only these patients", max="*",
                  targets=("Patient",), example="Patient/123")),
    _export("Group", "Bulk Data export of a group", "The compartments of the group's current "
            "members that the client reaches, as NDJSON files per type; a member out of reach "
            "is reported in the manifest's error file. The caller must be able to read the "
            "Group.",
            Param("patient", "Reference", "Only these members", max="*",
                  targets=("Patient",), example="Patient/123")),
    Operation(
        "everything", "Patient", True, ("GET", "POST"), "Everything about a patient",
        "The patient and every record in their compartment that the caller may read, "
        "Patient first, then by type, newest first; paged.",
        (Param("start", "date", "Care dates from", example="2020-01-01"),
         Param("end", "date", "Care dates up to"),
         Param("_since", "instant", "Only records changed since"),
         Param("_type", "string", "Comma-separated resource types to include",
               example="Observation,DiagnosticReport"),
         Param("_count", "integer", "Page size"),
         Param("_cursor", "string", "Paging cursor, from a next link"),
         out("Bundle", "A searchset Bundle")),
        standard=HL7 + "Patient-everything"),
    Operation(
        "lastn", "Observation", False, ("GET", "POST"), "Last N observations",
        "The most recent max Observations of each code, per patient, among those the "
        "search parameters select (any Observation search parameter may be added).",
        (Param("max", "positiveInt", "How many of each code (default 1)", example=3),
         Param("patient", "string", "The patient", search_type="reference", example="Patient/123"),
         Param("category", "string", "Category", search_type="token",
               example="http://terminology.hl7.org/CodeSystem/observation-category|laboratory"),
         Param("code", "string", "Observation code", search_type="token"),
         Param("date", "string", "Effective date", search_type="date"),
         out("Bundle", "A searchset Bundle")),
        standard=HL7 + "Observation-lastn"),
    Operation(
        "ihe-pix", "Patient", False, ("GET", "POST"), "Identifier cross-reference (IHE PIXm)",
        "A patient's other identifiers and their Patient id, from one identifier.",
        (Param("sourceIdentifier", "Identifier", "The identifier to look up, as system|value",
               min=1, search_type="token",
               example="https://fhirserver.example/sid/resident-id|11010519491231002X"),
         Param("targetSystem", "uri", "Only identifiers of these systems", max="*"),
         Param("targetIdentifier", "Identifier", "The patient's other identifiers", max="*",
               use="out"),
         Param("targetId", "Reference", "The patient", max="*", use="out", targets=("Patient",))),
        standard="https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix"),
    Operation(
        "merge", "Patient", False, ("POST",), "Merge duplicate patients",
        "Fold a duplicate (source-patient) into target-patient, all or nothing: its "
        "records are re-pointed and its identifiers copied. Needs the registration scope.",
        (Param("source-patient", "Reference", "The duplicate", min=1, targets=("Patient",),
               example="Patient/dup-1"),
         Param("target-patient", "Reference", "The patient kept", min=1, targets=("Patient",),
               example="Patient/123"),
         Param("preview", "boolean", "Only say what would change", example=False),
         Param("input", "Parameters", "The parameters as understood", min=1, use="out"),
         Param("outcome", "OperationOutcome", "What was done", min=1, use="out"),
         Param("result", "Patient", "The target patient after the merge", use="out")),
        affects_state=True, standard=HL7 + "Patient-merge"),
    Operation(
        "match", "Patient", False, ("POST",), "Master patient index match",
        "Scored, graded candidates for a Patient, best first.",
        (Param("resource", "Patient", "The patient to match", min=1),
         Param("onlyCertainMatches", "boolean", "Only certain matches", example=True),
         Param("count", "integer", "At most this many candidates", example=5),
         out("Bundle", "A searchset Bundle with search.score and match-grade")),
        standard=HL7 + "Patient-match"),
    Operation(
        "break-glass", "Patient", True, ("POST",), "Emergency access",
        "A clinician with the emergency-access role reads one patient for a short time, "
        "with a stated reason; the access is recorded and flagged.",
        (Param("reason", "string", "Why (recorded in the audit log)", min=1,
               example="Unconscious patient in the emergency department"),
         out("OperationOutcome", "Until when access is granted")),
        affects_state=True),
    Operation(
        "consent", "Patient", True, ("GET", "POST"), "Sharing choices",
        "The patient's sharing choices; GET reads them, POST changes those given.",
        (Param("restrictSensitive", "boolean", "Sensitive-labelled records only to the "
               "organisation that wrote them", example=True),
         Param("optOut", "boolean", "No sharing across organisations"),
         Param("shareWithFamily", "boolean", "Family bound to the card also read "
               "sensitive-labelled records"),
         *(Param(n, "boolean", "The choice now in force", min=1, use="out")
           for n in ("restrictSensitive", "optOut", "shareWithFamily"))),
        affects_state=True),
    Operation(
        "care-team", "Patient", True, ("GET", "POST"), "Care team",
        "The patient's care team, the CareTeam resource CareTeam/care-team-{id} (readable "
        "and searchable like the patient's other records); members have a care "
        "relationship while the organisation that added them treats the patient. GET reads "
        "it; POST adds (or with remove=true takes off) one member. Clinic systems and "
        "operators manage it; REST writes cannot change it.",
        (Param("member", "Reference", "The Practitioner to add or remove (required on POST)",
               targets=("Practitioner",), example="Practitioner/dr-smith"),
         Param("remove", "boolean", "Take the member off the team"),
         out("CareTeam", "The care team")),
        affects_state=True),
    _card("issue-card", "Issue a health card", "One active card per patient; its number "
          "becomes one of the patient's identifiers.", 201),
    _card("reissue-card", "Reissue a health card", "Revoke the current card at once and "
          "issue a new one (a lost phone).", 201),
    _card("revoke-card", "Revoke a health card", "Revoke the active card."),
    _card("suspend-card", "Suspend a health card", "Its codes stop scanning until resumed."),
    _card("resume-card", "Resume a health card", "Lift a suspension."),
    Operation(
        "card-qr", "Patient", True, ("GET",), "The card's QR code",
        "The card's current short-lived code, for the cardholder (or a child's guardian): "
        "with Accept: image/svg+xml or image/png the image itself.",
        (Param("payload", "string", "The signed code the QR image holds", min=1, use="out"),
         Param("expires", "instant", "When the code stops scanning", min=1, use="out"),
         Param("svg", "Attachment", "The QR image, image/svg+xml", min=1, use="out"),
         Param("png", "Attachment", "The QR image, image/png", min=1, use="out")),
        produces=("image/svg+xml", "image/png")),
    Operation(
        "scan-card", "Patient", False, ("POST",), "Scan a health card",
        "The Patient whose card code was scanned, after checking its signature, lifetime "
        "and card status; the scanning clinician's organisation gains a care relationship.",
        (Param("payload", "string", "The code read from the QR image", min=1,
               example="FHC1:eyJhbGciOi... (the payload of $card-qr)"),
         Param("scanner", "Reference", "Who scanned (operators only; otherwise the token's "
               "clinician)", targets=("Practitioner",)),
         Param("organization", "Reference", "For which organisation (operators only; "
               "otherwise the token's)", targets=("Organization",)),
         out("Patient", "The cardholder")),
        affects_state=True),
    Operation(
        "bind-family", "Patient", True, ("POST",), "Bind a family member's card",
        "Bind a family member's card to this cardholder (at most five): with the member's "
        "live card code at once (201; a child under 14 only so), or with their card number "
        "as a request they accept when signed in (202). Give code or card.",
        (Param("code", "string", "The member's live card code (from their QR image)"),
         Param("card", "string", "The member's card number", example="60000000000000000015"),
         Param("relationship", "code", "v3 RoleCode family code", example="MTH"),
         out("RelatedPerson", "The binding (201), or an OperationOutcome for a request (202)")),
        affects_state=True, statuses=(201, 202)),
    Operation(
        "accept-family", "Patient", True, ("POST",), "Accept a binding request",
        "The member, signed in, accepts (or with decision=decline turns down) a binding "
        "request from their $family list.",
        (Param("request", "string", "The request's id", min=1),
         Param("decision", "code", "accept (default) or decline", example="accept"),
         out("RelatedPerson", "The binding (201), or an OperationOutcome when declined")),
        affects_state=True, statuses=(201, 200)),
    Operation(
        "unbind-family", "Patient", True, ("POST",), "End a family binding",
        "The holder names the member, or the member names the holder of their card.",
        (Param("member", "Reference", "The member whose card this patient holds",
               targets=("Patient",), example="Patient/child-1"),
         Param("holder", "Reference", "The holder of this patient's card", targets=("Patient",)),
         out("OperationOutcome", "The binding has ended")),
        affects_state=True),
    Operation(
        "family", "Patient", True, ("GET",), "Family bindings",
        "The members whose cards this patient holds, the holders of this patient's card, "
        "and requests waiting for this patient's answer.",
        (out("Bundle", "RelatedPerson entries"),)),
)


def by_type() -> dict[str, list[Operation]]:
    found: dict[str, list[Operation]] = {}
    for op in OPERATIONS:
        found.setdefault(op.resource, []).append(op)
    return found


def find(op_id: str) -> Operation | None:
    return next((op for op in OPERATIONS if op.id == op_id), None)


def url(op: Operation, base: str) -> str:
    """The URL of the definition served here."""
    return f"{base}/OperationDefinition/{op.id}"


def canonical(op: Operation, base: str) -> str:
    """What the CapabilityStatement names: the published definition, else ours."""
    return op.standard or url(op, base)


def _parameter(p: Param) -> dict[str, Any]:
    out_: dict[str, Any] = {"name": p.name, "use": p.use, "min": p.min, "max": p.max,
                            "documentation": p.doc, "type": p.type}
    if p.search_type:
        out_["searchType"] = p.search_type
    if p.targets:
        out_["targetProfile"] = [f"http://hl7.org/fhir/StructureDefinition/{t}"
                                 for t in p.targets]
    return out_


def definition(op: Operation, base: str, date: str) -> dict[str, Any]:
    """The OperationDefinition resource of ``op`` as served by the server at ``base``."""
    resource: dict[str, Any] = {
        "resourceType": "OperationDefinition",
        "id": op.id,
        "url": url(op, base),
        "version": __version__,
        "name": "".join(w.capitalize() for w in op.id.replace("$", "").split("-")),
        "title": op.title,
        "status": "active",
        "kind": "operation",
        "date": date,
        "publisher": "fhirserver",
        "description": op.description,
        "affectsState": op.affects_state,
        "code": op.code,
        "resource": [op.resource] if op.resource else [],
        "system": not op.resource,
        "type": bool(op.resource) and not op.instance,
        "instance": op.instance,
        "parameter": [_parameter(p) for p in op.params],
    }
    if not op.resource:
        del resource["resource"]  # a system-level operation
    if op.standard:
        resource["base"] = op.standard
    return resource
