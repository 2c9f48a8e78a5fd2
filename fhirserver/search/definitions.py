"""The R4 (4.0.1) search parameter tables for the supported resource types.

Transcribed from the "Search Parameters" tables of patient.html#search,
observation.html#search, diagnosticreport.html#search, careteam.html#search,
practitioner.html#search, organization.html#search, practitionerrole.html#search
and group.html#search. Each FHIRPath expression is
written as :mod:`.paths` paths: a choice element ``value[x]`` is spelled once per
type the expression admits (``(Observation.value as Quantity)`` is
``valueQuantity:Quantity``); SampledData values are not indexed.
"""

from __future__ import annotations

from .parameters import Component, SearchParameter

P = SearchParameter

_PRACTITIONERS = ("Practitioner", "Organization", "CareTeam", "PractitionerRole")
_SUBJECTS = ("Group", "Device", "Patient", "Location")

PATIENT: tuple[SearchParameter, ...] = (
    P("active", "token", ("active:boolean",)),
    P("address", "string", ("address:Address",)),
    P("address-city", "string", ("address.city:string",)),
    P("address-country", "string", ("address.country:string",)),
    P("address-postalcode", "string", ("address.postalCode:string",)),
    P("address-state", "string", ("address.state:string",)),
    P("address-use", "token", ("address.use:code",), system="http://hl7.org/fhir/address-use"),
    P("birthdate", "date", ("birthDate:date",)),
    P("death-date", "date", ("deceasedDateTime:dateTime",)),
    P("deceased", "token", ("deceasedBoolean:boolean", "deceasedDateTime:present"),
      absent="false"),
    P("email", "token", ("telecom[system=email]:ContactPoint",)),
    P("family", "string", ("name.family:string",)),
    P("gender", "token", ("gender:code",), system="http://hl7.org/fhir/administrative-gender"),
    P("general-practitioner", "reference", ("generalPractitioner:Reference",),
      targets=("Organization", "Practitioner", "PractitionerRole")),
    P("given", "string", ("name.given:string",)),
    P("identifier", "token", ("identifier:Identifier",)),
    P("language", "token", ("communication.language:CodeableConcept",)),
    P("link", "reference", ("link.other:Reference",), targets=("Patient", "RelatedPerson")),
    P("name", "string", ("name:HumanName",)),
    P("organization", "reference", ("managingOrganization:Reference",),
      targets=("Organization",)),
    P("phone", "token", ("telecom[system=phone]:ContactPoint",)),
    # No phonetic algorithm is defined by the spec; this matches like ``name``.
    P("phonetic", "string", ("name:HumanName",)),
    P("telecom", "token", ("telecom:ContactPoint",)),
)

_CODE = Component("token", ("code:CodeableConcept",))
_VALUE_CONCEPT = Component("token", ("valueCodeableConcept:CodeableConcept",))
_VALUE_QUANTITY = Component("quantity", ("valueQuantity:Quantity",))
_VALUE_DATE = Component("date", ("valueDateTime:dateTime", "valuePeriod:Period"))
_VALUE_STRING = Component("string", ("valueString:string", "valueCodeableConcept.text:string"))
_BOTH = ("", "component")


def _composite(name: str, bases: tuple[str, ...], *components: Component,
               union: tuple[str, ...] = ()) -> SearchParameter:
    return P(name, "composite", bases=bases, components=components, union=union)


OBSERVATION: tuple[SearchParameter, ...] = (
    P("based-on", "reference", ("basedOn:Reference",),
      targets=("CarePlan", "DeviceRequest", "ImmunizationRecommendation", "MedicationRequest",
               "NutritionOrder", "ServiceRequest")),
    P("category", "token", ("category:CodeableConcept",)),
    P("code", "token", ("code:CodeableConcept",)),
    _composite("code-value-concept", ("",), _CODE, _VALUE_CONCEPT),
    _composite("code-value-date", ("",), _CODE, _VALUE_DATE),
    _composite("code-value-quantity", ("",), _CODE, _VALUE_QUANTITY),
    _composite("code-value-string", ("",), _CODE, _VALUE_STRING),
    P("combo-code", "token", ("code:CodeableConcept", "component.code:CodeableConcept"),
      union=("code", "component-code")),
    _composite("combo-code-value-concept", _BOTH, _CODE, _VALUE_CONCEPT,
               union=("code-value-concept", "component-code-value-concept")),
    _composite("combo-code-value-quantity", _BOTH, _CODE, _VALUE_QUANTITY,
               union=("code-value-quantity", "component-code-value-quantity")),
    P("combo-data-absent-reason", "token",
      ("dataAbsentReason:CodeableConcept", "component.dataAbsentReason:CodeableConcept"),
      union=("data-absent-reason", "component-data-absent-reason")),
    P("combo-value-concept", "token",
      ("valueCodeableConcept:CodeableConcept", "component.valueCodeableConcept:CodeableConcept"),
      union=("value-concept", "component-value-concept")),
    P("combo-value-quantity", "quantity",
      ("valueQuantity:Quantity", "component.valueQuantity:Quantity"),
      union=("value-quantity", "component-value-quantity")),
    P("component-code", "token", ("component.code:CodeableConcept",)),
    _composite("component-code-value-concept", ("component",), _CODE, _VALUE_CONCEPT),
    _composite("component-code-value-quantity", ("component",), _CODE, _VALUE_QUANTITY),
    P("component-data-absent-reason", "token",
      ("component.dataAbsentReason:CodeableConcept",)),
    P("component-value-concept", "token", ("component.valueCodeableConcept:CodeableConcept",)),
    P("component-value-quantity", "quantity", ("component.valueQuantity:Quantity",)),
    P("data-absent-reason", "token", ("dataAbsentReason:CodeableConcept",)),
    P("date", "date", ("effectiveDateTime:dateTime", "effectivePeriod:Period",
                       "effectiveTiming:Timing", "effectiveInstant:instant")),
    P("derived-from", "reference", ("derivedFrom:Reference",),
      targets=("DocumentReference", "ImagingStudy", "Media", "QuestionnaireResponse",
               "Observation", "MolecularSequence")),
    P("device", "reference", ("device:Reference",), targets=("Device", "DeviceMetric")),
    P("encounter", "reference", ("encounter:Reference",), targets=("Encounter",)),
    P("focus", "reference", ("focus:Reference",)),
    P("has-member", "reference", ("hasMember:Reference",),
      targets=("Observation", "QuestionnaireResponse", "MolecularSequence")),
    P("identifier", "token", ("identifier:Identifier",)),
    P("method", "token", ("method:CodeableConcept",)),
    P("part-of", "reference", ("partOf:Reference",),
      targets=("MedicationAdministration", "MedicationDispense", "MedicationStatement",
               "Procedure", "Immunization", "ImagingStudy")),
    P("patient", "reference", ("subject[is=Patient]:Reference",), targets=("Patient",)),
    P("performer", "reference", ("performer:Reference",),
      targets=(*_PRACTITIONERS, "Patient", "RelatedPerson")),
    P("specimen", "reference", ("specimen:Reference",), targets=("Specimen",)),
    P("status", "token", ("status:code",), system="http://hl7.org/fhir/observation-status"),
    P("subject", "reference", ("subject:Reference",), targets=_SUBJECTS),
    P("value-concept", "token", ("valueCodeableConcept:CodeableConcept",)),
    P("value-date", "date", ("valueDateTime:dateTime", "valuePeriod:Period")),
    P("value-quantity", "quantity", ("valueQuantity:Quantity",)),
    P("value-string", "string", ("valueString:string", "valueCodeableConcept.text:string")),
)

DIAGNOSTIC_REPORT: tuple[SearchParameter, ...] = (
    P("based-on", "reference", ("basedOn:Reference",),
      targets=("CarePlan", "ImmunizationRecommendation", "MedicationRequest",
               "NutritionOrder", "ServiceRequest")),
    P("category", "token", ("category:CodeableConcept",)),
    P("code", "token", ("code:CodeableConcept",)),
    P("conclusion", "token", ("conclusionCode:CodeableConcept",)),
    P("date", "date", ("effectiveDateTime:dateTime", "effectivePeriod:Period")),
    P("encounter", "reference", ("encounter:Reference",), targets=("Encounter",)),
    P("identifier", "token", ("identifier:Identifier",)),
    P("issued", "date", ("issued:instant",)),
    P("media", "reference", ("media.link:Reference",), targets=("Media",)),
    P("patient", "reference", ("subject[is=Patient]:Reference",), targets=("Patient",)),
    P("performer", "reference", ("performer:Reference",), targets=_PRACTITIONERS),
    P("result", "reference", ("result:Reference",), targets=("Observation",)),
    P("results-interpreter", "reference", ("resultsInterpreter:Reference",),
      targets=_PRACTITIONERS),
    P("specimen", "reference", ("specimen:Reference",), targets=("Specimen",)),
    P("status", "token", ("status:code",),
      system="http://hl7.org/fhir/diagnostic-report-status"),
    P("subject", "reference", ("subject:Reference",), targets=_SUBJECTS),
)

CARE_TEAM: tuple[SearchParameter, ...] = (
    P("category", "token", ("category:CodeableConcept",)),
    P("date", "date", ("period:Period",)),
    P("encounter", "reference", ("encounter:Reference",), targets=("Encounter",)),
    P("identifier", "token", ("identifier:Identifier",)),
    P("participant", "reference", ("participant.member:Reference",),
      targets=(*_PRACTITIONERS, "Patient", "RelatedPerson")),
    P("patient", "reference", ("subject[is=Patient]:Reference",), targets=("Patient",)),
    P("status", "token", ("status:code",), system="http://hl7.org/fhir/care-team-status"),
    P("subject", "reference", ("subject:Reference",), targets=("Group", "Patient")),
)

#: What Practitioner and PractitionerRole share with Patient (the address, name and
#: telecom rows of practitioner.html#search are Patient's, on the same elements).
_ADDRESS = tuple(p for p in PATIENT if p.name.startswith("address"))
_TELECOM = tuple(p for p in PATIENT if p.name in ("email", "phone", "telecom"))

PRACTITIONER: tuple[SearchParameter, ...] = (
    P("active", "token", ("active:boolean",)),
    *_ADDRESS,
    P("communication", "token", ("communication:CodeableConcept",)),
    *_TELECOM,
    *(p for p in PATIENT if p.name in ("family", "given", "identifier", "name", "phonetic")),
    P("gender", "token", ("gender:code",), system="http://hl7.org/fhir/administrative-gender"),
)

ORGANIZATION: tuple[SearchParameter, ...] = (
    P("active", "token", ("active:boolean",)),
    *_ADDRESS,
    P("endpoint", "reference", ("endpoint:Reference",), targets=("Endpoint",)),
    P("identifier", "token", ("identifier:Identifier",)),
    P("name", "string", ("name:string", "alias:string")),
    P("partof", "reference", ("partOf:Reference",), targets=("Organization",)),
    P("phonetic", "string", ("name:string",)),
    P("type", "token", ("type:CodeableConcept",)),
)

PRACTITIONER_ROLE: tuple[SearchParameter, ...] = (
    P("active", "token", ("active:boolean",)),
    P("date", "date", ("period:Period",)),
    *_TELECOM,
    P("endpoint", "reference", ("endpoint:Reference",), targets=("Endpoint",)),
    P("identifier", "token", ("identifier:Identifier",)),
    P("location", "reference", ("location:Reference",), targets=("Location",)),
    P("organization", "reference", ("organization:Reference",), targets=("Organization",)),
    P("practitioner", "reference", ("practitioner:Reference",), targets=("Practitioner",)),
    P("role", "token", ("code:CodeableConcept",)),
    P("service", "reference", ("healthcareService:Reference",),
      targets=("HealthcareService",)),
    P("specialty", "token", ("specialty:CodeableConcept",)),
)

_CHARACTERISTIC_VALUE = ("valueCodeableConcept:CodeableConcept", "valueBoolean:boolean")

GROUP: tuple[SearchParameter, ...] = (
    P("actual", "token", ("actual:boolean",)),
    P("characteristic", "token", ("characteristic.code:CodeableConcept",)),
    # group.html: characteristic-value is characteristic & value on Group.characteristic;
    # ``value`` is a token, so its Quantity, Range and Reference forms are not indexed.
    _composite("characteristic-value", ("characteristic",), _CODE,
               Component("token", _CHARACTERISTIC_VALUE)),
    P("code", "token", ("code:CodeableConcept",)),
    P("exclude", "token", ("characteristic.exclude:boolean",)),
    P("identifier", "token", ("identifier:Identifier",)),
    P("managing-entity", "reference", ("managingEntity:Reference",),
      targets=("Practitioner", "PractitionerRole", "Organization", "RelatedPerson")),
    P("member", "reference", ("member.entity:Reference",),
      targets=("Practitioner", "Group", "Device", "Medication", "Patient", "Substance",
               "PractitionerRole")),
    P("type", "token", ("type:code",), system="http://hl7.org/fhir/group-type"),
    P("value", "token", tuple(f"characteristic.{p}" for p in _CHARACTERISTIC_VALUE)),
)

TABLES: dict[str, tuple[SearchParameter, ...]] = {
    "Patient": PATIENT,
    "Observation": OBSERVATION,
    "DiagnosticReport": DIAGNOSTIC_REPORT,
    "CareTeam": CARE_TEAM,
    "Practitioner": PRACTITIONER,
    "Organization": ORGANIZATION,
    "PractitionerRole": PRACTITIONER_ROLE,
    "Group": GROUP,
}
