"""Resource types and ids (FHIR R4 4.0.1).

The HTTP layer needs to tell three cases apart (http.html#general: an unknown or
unsupported type is answered with 404): a type this server stores, a type R4
defines but this server does not store, and a name that is no R4 resource type.
"""

from __future__ import annotations

import re
from typing import Final

#: The clinical record (the Patient compartment) first, then the clinician
#: directory that its performer, author and care team references point to, then
#: the groups of patients that Group-level Bulk Data export names.
SUPPORTED_TYPES: Final = ("Patient", "Observation", "DiagnosticReport", "CareTeam",
                          "Practitioner", "Organization", "PractitionerRole", "Group")

#: The clinician directory (practitioner.html, organization.html,
#: practitionerrole.html): who works where. No patient's data: readable by whoever
#: holds a scope for the type, kept by operators and registration.
DIRECTORY_TYPES: Final = ("Practitioner", "Organization", "PractitionerRole")

#: Every concrete resource type of FHIR R4 4.0.1: the codes of the ResourceType
#: value set (valueset-resource-types.html) without the abstract Resource and
#: DomainResource.
ALL_R4_TYPES: Final = frozenset((
    "Account", "ActivityDefinition", "AdverseEvent", "AllergyIntolerance", "Appointment",
    "AppointmentResponse", "AuditEvent", "Basic", "Binary", "BiologicallyDerivedProduct",
    "BodyStructure", "Bundle", "CapabilityStatement", "CarePlan", "CareTeam", "CatalogEntry",
    "ChargeItem", "ChargeItemDefinition", "Claim", "ClaimResponse", "ClinicalImpression",
    "CodeSystem", "Communication", "CommunicationRequest", "CompartmentDefinition",
    "Composition", "ConceptMap", "Condition", "Consent", "Contract", "Coverage",
    "CoverageEligibilityRequest", "CoverageEligibilityResponse", "DetectedIssue", "Device",
    "DeviceDefinition", "DeviceMetric", "DeviceRequest", "DeviceUseStatement",
    "DiagnosticReport", "DocumentManifest", "DocumentReference", "EffectEvidenceSynthesis",
    "Encounter", "Endpoint", "EnrollmentRequest", "EnrollmentResponse", "EpisodeOfCare",
    "EventDefinition", "Evidence", "EvidenceVariable", "ExampleScenario",
    "ExplanationOfBenefit", "FamilyMemberHistory", "Flag", "Goal", "GraphDefinition", "Group",
    "GuidanceResponse", "HealthcareService", "ImagingStudy", "Immunization",
    "ImmunizationEvaluation", "ImmunizationRecommendation", "ImplementationGuide",
    "InsurancePlan", "Invoice", "Library", "Linkage", "List", "Location", "Measure",
    "MeasureReport", "Media", "Medication", "MedicationAdministration", "MedicationDispense",
    "MedicationKnowledge", "MedicationRequest", "MedicationStatement", "MedicinalProduct",
    "MedicinalProductAuthorization", "MedicinalProductContraindication",
    "MedicinalProductIndication", "MedicinalProductIngredient", "MedicinalProductInteraction",
    "MedicinalProductManufactured", "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical", "MedicinalProductUndesirableEffect", "MessageDefinition",
    "MessageHeader", "MolecularSequence", "NamingSystem", "NutritionOrder", "Observation",
    "ObservationDefinition", "OperationDefinition", "OperationOutcome", "Organization",
    "OrganizationAffiliation", "Parameters", "Patient", "PaymentNotice",
    "PaymentReconciliation", "Person", "PlanDefinition", "Practitioner", "PractitionerRole",
    "Procedure", "Provenance", "Questionnaire", "QuestionnaireResponse", "RelatedPerson",
    "RequestGroup", "ResearchDefinition", "ResearchElementDefinition", "ResearchStudy",
    "ResearchSubject", "RiskAssessment", "RiskEvidenceSynthesis", "Schedule", "SearchParameter",
    "ServiceRequest", "Slot", "Specimen", "SpecimenDefinition", "StructureDefinition",
    "StructureMap", "Subscription", "Substance", "SubstanceNucleicAcid", "SubstancePolymer",
    "SubstanceProtein", "SubstanceReferenceInformation", "SubstanceSourceMaterial",
    "SubstanceSpecification", "SupplyDelivery", "SupplyRequest", "Task",
    "TerminologyCapabilities", "TestReport", "TestScript", "ValueSet", "VerificationResult",
    "VisionPrescription",
))

#: R4 datatypes.html#id: "Any combination of upper- or lower-case ASCII letters
#: ('A'..'Z', and 'a'..'z', numerals ('0'..'9'), '-' and '.', with a length limit of
#: 64 characters."
ID_PATTERN: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def is_valid_id(value: object) -> bool:
    """True when ``value`` is a string that is a valid FHIR id (datatypes.html#id)."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None
