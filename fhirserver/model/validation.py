"""Validation of incoming resources (FHIR R4 validation.html, http.html#create).

Three passes, all problems of a pass reported together:

1. The envelope: a JSON object whose ``resourceType`` is a type this server stores
   and, when the URL names a type, the same one (http.html#update: the body's type
   must match the URL's) -> :class:`~fhirserver.errors.Invalid` (400).
2. Structure and datatypes -> ``Invalid`` (400): the ``fhir.resources`` R4B model
   (cardinality, unknown elements, datatype syntax, one type per choice element),
   plus what its lax parsing lets through: JSON types of primitives (json.html#
   primitive: numbers and booleans are JSON numbers and booleans, everything else
   a string), ``null`` outside primitive arrays, empty objects and arrays (json.html:
   "empty objects and arrays are not allowed"; ele-1 "All FHIR elements must have a
   @value or children").
   Every narrative's div (the resource's and its contained resources') keeps to
   txt-1 and txt-2: safe XHTML with some content (:mod:`.narrative`).
3. Profiles -> :class:`~fhirserver.errors.Unprocessable` (422): the rules the
   models do not check (required bindings, invariants), as JSON Schemas in
   ``profiles/``. ``profiles/<Type>.schema.json`` applies to every node of FHIR type
   ``<Type>`` or a type derived from it: the resource itself, contained resources,
   datatypes anywhere (``Identifier`` inside ``Reference.identifier`` too). An
   invariant that compares two parts of a resource, which JSON Schema cannot
   express, is a Python function in :data:`_INVARIANTS` (obs-7).

R4 versus R4B: ``fhir.resources`` ships R4B models. Patient, Observation,
DiagnosticReport, CareTeam, Practitioner, Organization, PractitionerRole and Group have the
same elements in R4 and R4B; every R4 example of these types and every Synthea (R4)
one validates unchanged, so no R4-specific handling is needed. Validation only reports: the stored form is the client's JSON.

Expressions are FHIRPath (operationoutcome.html#OperationOutcome.issue.expression),
choice elements as ``value.ofType(Quantity)`` (fhirpath.html, choice types).
"""

from __future__ import annotations

import decimal
import functools
import importlib
import json
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError
from pydantic import BaseModel
from pydantic import ValidationError as ModelError

from ..errors import Invalid, Issue, Unprocessable
from .narrative import narrative_problems
from .types import ALL_R4_TYPES, SUPPORTED_TYPES

__all__ = ["PROFILES_DIR", "Profiles", "load_profiles", "validate_resource"]

PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles"

Model = type[BaseModel]


def validate_resource(
    data: object, expected_type: str | None = None, *, profiles: Profiles | None = None
) -> None:
    """Raise ``Invalid`` (400) or ``Unprocessable`` (422) unless ``data`` is an
    acceptable resource of a supported type; return None when it is."""
    rtype = _check_envelope(data, expected_type)
    assert isinstance(data, dict)
    cls = get_fhir_model_class(rtype)
    found = _Walk()
    found.node(data, cls, rtype)
    issues = _model_issues(cls, data)
    seen = {e for i in issues for e in i.expression}
    issues += [i for i in found.issues if not seen.intersection(i.expression)]
    issues += [i for i in _narrative_issues(found.nodes) if not seen.intersection(i.expression)]
    if issues:
        raise Invalid(issues=tuple(issues))
    rules = _profiles() if profiles is None else profiles
    problems = [issue for node in found.nodes for issue in rules.check(*node)]
    if problems:
        raise Unprocessable(issues=tuple(problems))


def _check_envelope(data: object, expected_type: str | None) -> str:
    if not isinstance(data, dict):
        kind = "an array" if isinstance(data, list) else f"a JSON {type(data).__name__}"
        raise Invalid(f"The body must be a FHIR resource as a JSON object, not {kind}")
    rtype = data.get("resourceType")
    where = rtype if isinstance(rtype, str) and rtype in ALL_R4_TYPES else (
        expected_type or "Resource")
    if rtype is not None and not isinstance(rtype, str):
        raise Invalid(issues=(Issue(
            f"resourceType must be a JSON string, got {_json_type(rtype)} {_short(rtype)}",
            code="structure", expression=(f"{where}.resourceType",)),))
    if not isinstance(rtype, str) or not rtype:
        raise Invalid(issues=(Issue("The resource has no resourceType", code="required",
                                    expression=(f"{where}.resourceType",)),))
    if expected_type is not None and rtype != expected_type:
        raise Invalid(f"Resource type {rtype} does not match the URL type {expected_type}",
                      expression=f"{where}.resourceType")
    if rtype not in SUPPORTED_TYPES:
        known = "is not supported by this server" if rtype in ALL_R4_TYPES else "is unknown"
        raise Invalid(f"Resource type {_short(rtype)} {known}; supported: "
                      + ", ".join(SUPPORTED_TYPES), expression=f"{where}.resourceType")
    return rtype


# -- the shape of the models ------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    """One JSON property of a model: its FHIRPath segment and what it holds."""

    segment: str
    kind: str  # boolean | integer | decimal | string | model | resource
    model: Model | None
    many: bool


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    many = False
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        elif origin is list:
            many, annotation = True, typing.get_args(annotation)[0]
        elif origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation, many


def _model_of(annotation: Any) -> Model | None:
    target = getattr(annotation, "_model_klass", None)
    if isinstance(target, str):
        module, _, name = target.rpartition(".")
        return typing.cast(Model, getattr(importlib.import_module(module), name))
    return None


@functools.cache
def _fields(cls: Model) -> dict[str, _Field]:
    """JSON property name -> field, for a fhir.resources model class."""
    out: dict[str, _Field] = {}
    by_alias = {f.alias or n: f for n, f in cls.model_fields.items() if n != "fhir_comments"}
    for alias, info in by_alias.items():
        if alias.startswith("_"):
            continue
        annotation, many = _unwrap(info.annotation)
        model = _model_of(annotation)
        if model is not None:
            kind = "resource" if model.__name__ == "Resource" else "model"
        elif annotation is bool:
            kind = "boolean"
        elif annotation is int:
            kind = "integer"
        elif annotation is decimal.Decimal:
            kind = "decimal"
        else:
            kind = "string"
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        segment = alias
        base = extra.get("one_of_many")
        if isinstance(base, str) and alias.startswith(base) and alias != base:
            suffix = alias[len(base):]
            typename = suffix if model is not None else suffix[0].lower() + suffix[1:]
            segment = f"{base}.ofType({typename})"
        out[alias] = _Field(segment, kind, model, many)
    for alias, info in by_alias.items():
        if alias.startswith("_") and alias[1:] in out:
            ext_model = _model_of(_unwrap(info.annotation)[0])
            out[alias] = _Field(out[alias[1:]].segment, "extension", ext_model,
                                out[alias[1:]].many)
    return out


def _type_names(cls: Model) -> tuple[str, ...]:
    """FHIR type names of ``cls`` and the types it derives from (Age -> Quantity)."""
    return tuple(c.__name__ for c in cls.__mro__ if c.__module__.startswith("fhir.resources"))


def _resource_model(value: object) -> Model | None:
    rtype = value.get("resourceType") if isinstance(value, dict) else None
    if not isinstance(rtype, str) or rtype not in ALL_R4_TYPES:
        return None
    try:
        return typing.cast(Model, get_fhir_model_class(rtype))
    except (KeyError, ValueError, ImportError, AttributeError):
        return None  # an R4 type R4B dropped; the model reports the contained resource


# -- pass 2: JSON representation ---------------------------------------------------------

_JSON_KINDS: dict[str, tuple[type, ...]] = {
    "boolean": (bool,), "integer": (int,), "decimal": (int, float, decimal.Decimal),
    "string": (str,)}
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_JSON_NAMES = {"boolean": "a JSON boolean", "integer": "a JSON number without fraction",
               "decimal": "a JSON number", "string": "a JSON string"}


@dataclass
class _Walk:
    """One walk over a resource: representation issues and the nodes profiles check."""

    issues: list[Issue] = field(default_factory=list)
    nodes: list[tuple[Model, dict[str, Any], str]] = field(default_factory=list)

    def node(self, value: dict[str, Any], cls: Model, path: str) -> None:
        if not value:
            self._issue(path, "an element must have a value or children; empty objects are "
                        "not allowed (ele-1, json.html)", "required")
            return
        self.nodes.append((cls, value, path))
        fields = _fields(cls)
        for key, item in value.items():
            spec = fields.get(key)
            if spec is None:
                if key in cls.model_fields:  # a Python name pydantic also accepts
                    self._issue(f"{path}.{key}", f"unknown element '{key}'", "structure")
                continue  # resourceType, or an unknown element the model reports
            where = f"{path}.{spec.segment}"
            if isinstance(item, list) and spec.many:
                if not item:
                    self._issue(where, "empty arrays are not allowed (json.html)", "required")
                for index, entry in enumerate(item):
                    # null keeps primitive arrays aligned with their _x twin (json.html)
                    self.value(entry, spec, f"{where}[{index}]", null_ok=spec.kind != "model")
            else:
                self.value(item, spec, where, null_ok=False)

    def value(self, item: object, spec: _Field, where: str, *, null_ok: bool) -> None:
        if item is None:
            if not null_ok:
                self._issue(where, "null is not a valid value (json.html)", "structure")
        elif spec.kind in _JSON_KINDS:
            ok = isinstance(item, _JSON_KINDS[spec.kind])
            if not ok or (spec.kind != "boolean" and isinstance(item, bool)):
                self._issue(where, f"must be {_JSON_NAMES[spec.kind]}, got {_json_type(item)} "
                            f"{_short(item)}", "structure")
            elif isinstance(item, str) and (control := _CONTROL.search(item)):
                code = ord(control.group())
                self._issue(where, f"holds U+{code:04X}{' (NUL)' if code == 0 else ''}: strings "
                            "may not contain characters below U+0020 other than tab, carriage "
                            "return and line feed (json.html)", "value")
        elif isinstance(item, dict):
            cls = _resource_model(item) if spec.kind == "resource" else spec.model
            if cls is not None:
                self.node(item, cls, where)
            elif spec.kind == "resource":
                self._resource_type(item.get("resourceType"), where)

    def _resource_type(self, rtype: object, where: str) -> None:
        if rtype is not None and not isinstance(rtype, str):
            self._issue(f"{where}.resourceType", f"resourceType must be a JSON string, got "
                        f"{_json_type(rtype)} {_short(rtype)}", "structure")
        elif not isinstance(rtype, str):
            self._issue(f"{where}.resourceType", "a contained resource needs a resourceType "
                        "(json.html#resources)", "required")
        elif rtype not in ALL_R4_TYPES:
            self._issue(f"{where}.resourceType", f"unknown resource type {_short(rtype)}",
                        "structure")

    def _issue(self, where: str, text: str, code: str) -> None:
        self.issues.append(Issue(f"{where}: {text}", code=code, expression=(where,)))


def _narrative_issues(nodes: list[tuple[Model, dict[str, Any], str]]) -> Iterator[Issue]:
    """txt-1 and txt-2 on every narrative the walk met (the resource's ``text``, its
    contained resources'): a 400, as an unsafe or empty div is not a Narrative at all."""
    for cls, node, path in nodes:
        div = node.get("div")
        if isinstance(div, str) and "Narrative" in _type_names(cls):
            for problem in narrative_problems(div):
                yield Issue(f"{path}.div: {problem}", code="value", expression=(f"{path}.div",))


def _json_type(value: object) -> str:
    for kind, name in ((bool, "boolean"), (str, "string"), (dict, "object"), (list, "array")):
        if isinstance(value, kind):
            return name
    return "number" if isinstance(value, (int, float, decimal.Decimal)) else "null"


def _short(value: object, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- pass 2: the fhir.resources model ----------------------------------------------------

_STRUCTURE = {"extra_forbidden", "json_invalid", "list_type", "model_type", "dict_type",
              "model_attributes_type", "string_type", "bool_type", "int_type", "float_type",
              "decimal_type", "is_instance_of"}
_CHOICE = re.compile(r"Any of one field value is expected from this list \[(.*?)\]")
_REGEX = re.compile(r"(\w+) value string does not match spec regex")


def _model_issues(cls: Model, data: dict[str, Any]) -> list[Issue]:
    try:
        cls.model_validate(_for_model(data))
    except ModelError as error:
        out: list[Issue] = []
        for e in error.errors(include_url=False):
            out.extend(_issue_of(cls, data, e))
        return out
    except (KeyError, TypeError, ValueError) as error:  # the model gave up without a report
        name = _root_name(cls, data)
        return [Issue(f"{name}: the resource could not be parsed ({type(error).__name__})",
                      code="structure", expression=(name,))]
    return []


#: Stands in, for the model only, for a contained resource it cannot parse.
_PLACEHOLDER = {"resourceType": "Basic", "code": {"text": "contained resource"}}


def _for_model(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each contained resource the R4B models cannot parse replaced by a
    placeholder, keeping the indices of the others.

    R4B dropped 18 R4 resource types (EffectEvidenceSynthesis, RiskEvidenceSynthesis,
    MedicinalProduct*, SubstanceNucleicAcid/Polymer/Protein/ReferenceInformation/
    SourceMaterial/Specification), and fhir.resources fails with a KeyError on them,
    on unknown types and on a missing resourceType. A contained resource of an R4-only
    type is valid R4, so it is accepted unchecked by the model; unknown or missing
    types are reported by the representation walk (_Walk.value).
    """
    contained = data.get("contained")
    if not isinstance(contained, list):
        return data
    items = [item if not isinstance(item, dict)
             else _for_model(item) if _resource_model(item) is not None else _PLACEHOLDER
             for item in contained]
    if all(a is b for a, b in zip(items, contained)):
        return data
    return {**data, "contained": items}


def _issue_of(cls: Model, data: dict[str, Any], err: Any) -> Iterator[Issue]:
    path, node, leaf = _locate(cls, data, err["loc"])
    kind, msg, value = err["type"], str(err["msg"]), err.get("input")
    choice = _CHOICE.search(msg)
    if choice and isinstance(node, dict) and leaf is not None:
        names = [n.strip(" '\"") for n in choice.group(1).split(",")]
        present = [n for n in names if n in node]
        where = tuple(f"{path}.{_fields(leaf)[n].segment}" for n in present if n in _fields(leaf))
        yield Issue(f"{path}: only one of {', '.join(present)} may be present (a choice "
                    "element [x] takes one type)", code="structure", expression=where or (path,))
        return
    if kind in ("missing", "model_field_validation.missing"):
        text, code = "required element is missing", "required"
    elif kind == "extra_forbidden":
        text, code = f"unknown element '{err['loc'][-1]}'", "structure"
    elif kind in _STRUCTURE:
        expected = {"list_type": "a JSON array (the element repeats)",
                    "string_type": "a JSON string"}.get(kind, "a JSON object")
        if kind in ("bool_type", "int_type", "float_type", "decimal_type"):
            expected = "a JSON " + ("boolean" if kind == "bool_type" else "number")
        text, code = f"must be {expected}, got {_json_type(value)} {_short(value)}", "structure"
    elif (regex := _REGEX.search(msg)) is not None:
        name = regex.group(1)
        text, code = f"{_short(value)} is not a valid {name[0].lower()}{name[1:]}", "value"
    elif kind == "string_pattern_mismatch" and value == "":
        text, code = "must not be empty", "value"
    else:
        text = msg.removeprefix("Value error, ").replace("Input should be", "must be")
        text, code = f"{_short(value)}: {text}", "value"
    yield Issue(f"{path}: {text}", code=code, expression=(path,))


def _locate(cls: Model, data: Any, loc: tuple[Any, ...]) -> tuple[str, Any, Model | None]:
    """FHIRPath of a pydantic error location, the JSON there, and its model class."""
    path, node, current = _root_name(cls, data), data, cls
    spec: _Field | None = None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if spec is not None and spec.kind == "resource":
                current = _resource_model(node)
            continue
        if not isinstance(part, str) or "[" in part:
            continue  # pydantic's own union/function tags
        spec = _fields(current).get(part) if current is not None else None
        path += f".{spec.segment if spec else part}"
        node = node.get(part) if isinstance(node, dict) else None
        current = None if spec is None else (
            _resource_model(node) if spec.kind == "resource" else spec.model)
    return path, node, current


def _root_name(cls: Model, data: Any) -> str:
    rtype = data.get("resourceType") if isinstance(data, dict) else None
    return rtype if isinstance(rtype, str) else cls.__name__


# -- pass 3: profiles -------------------------------------------------------------------

Invariant = Callable[[Model, dict[str, Any], str], Iterator[Issue]]


def _obs_7(cls: Model, node: dict[str, Any], path: str) -> Iterator[Issue]:
    """obs-7 (observation.html#invariants): "If Observation.code is the same as an
    Observation.component.code then the value element associated with the code SHALL
    NOT be present": ``value.empty() or component.code.where(coding.intersect(
    %resource.code.coding).exists()).empty()``. Codings are compared whole, as
    FHIRPath equality compares every child."""
    values = [k for k, f in _fields(cls).items() if f.segment.startswith("value.") and k in node]
    code = node.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    components = node.get("component")
    if not values or not isinstance(codings, list) or not isinstance(components, list):
        return
    for index, component in enumerate(components):
        own = (component.get("code") or {}).get("coding") if isinstance(component, dict) else None
        if isinstance(own, list) and any(c in codings for c in own):
            yield Issue(f"{path}: obs-7: component[{index}] has the Observation's own code, so "
                        f"the Observation SHALL NOT have a value ({', '.join(values)})",
                        code="business-rule",
                        expression=(f"{path}.{_fields(cls)[values[0]].segment}",))


_INVARIANTS: dict[str, tuple[Invariant, ...]] = {"Observation": (_obs_7,)}


@dataclass(frozen=True)
class Profiles:
    """Compiled profiles by FHIR type name (the part of ``<Type>.schema.json``)."""

    schemas: dict[str, Draft202012Validator]
    _by_class: dict[Model, tuple[list[Draft202012Validator], list[Invariant]]] = field(
        default_factory=dict, repr=False, compare=False)

    def check(self, cls: Model, node: dict[str, Any], path: str) -> Iterator[Issue]:
        validators, invariants = self._rules(cls)
        for validator in validators:
            for error in validator.iter_errors(node):
                yield _schema_issue(validator.schema, cls, node, path, error)
        for invariant in invariants:
            yield from invariant(cls, node, path)

    def _rules(self, cls: Model) -> tuple[list[Draft202012Validator], list[Invariant]]:
        rules = self._by_class.get(cls)
        if rules is None:
            names = _type_names(cls)
            rules = ([self.schemas[n] for n in names if n in self.schemas],
                     [i for n in names for i in _INVARIANTS.get(n, ())])
            self._by_class[cls] = rules
        return rules


def load_profiles(directory: Path = PROFILES_DIR) -> Profiles:
    """Read and compile every ``<Type>.schema.json`` in ``directory``.

    A missing directory or a type without a file means no extra rules for it; a file
    that is not a valid Draft 2020-12 schema is a deployment error and raises.
    """
    schemas: dict[str, Draft202012Validator] = {}
    for file in sorted(directory.glob("*.schema.json")) if directory.is_dir() else ():
        schema = json.loads(file.read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        schemas[file.name.removesuffix(".schema.json")] = Draft202012Validator(schema)
    return Profiles(schemas)


@functools.cache
def _profiles() -> Profiles:
    return load_profiles()


def _schema_issue(
    schema: Any, cls: Model, node: dict[str, Any], path: str, error: SchemaError
) -> Issue:
    where, _, _ = _locate(cls, node, tuple(error.absolute_path))
    where = path + where[len(_root_name(cls, node)):]
    rule = _rule_of(schema, error)
    if rule is not None:
        text = f"{rule.get('title')}: {rule.get('description', '')}".rstrip(": ")
    else:
        desc = error.schema.get("description") if isinstance(error.schema, dict) else None
        if error.validator == "enum":
            text = f"{_short(error.instance)} is not one of " + " | ".join(
                map(str, error.validator_value))
        elif error.validator == "pattern":
            text = f"{_short(error.instance)} does not match {error.validator_value}"
        else:
            text = _short(error.message, 200)
        text += f" ({desc})" if desc else ""
    code = "business-rule" if rule else "code-invalid" if error.validator == "enum" else "value"
    return Issue(f"{where}: {text}", code=code, expression=(where,))


def _rule_of(schema: Any, error: SchemaError) -> dict[str, Any] | None:
    """The innermost subschema on the error's schema path titled with an invariant key
    (``obs-6``, ``pat-1``...): its description is the spec's text."""
    found, current = None, schema
    for step in error.relative_schema_path:
        if isinstance(current, dict) and re.fullmatch(r"[a-z]+-\d+", str(current.get("title"))):
            found = current
        try:
            current = current[step]
        except (KeyError, IndexError, TypeError):
            break
    if isinstance(current, dict) and re.fullmatch(r"[a-z]+-\d+", str(current.get("title"))):
        found = current
    return found
