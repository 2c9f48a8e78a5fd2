"""JSON Schema (2020-12, as OpenAPI 3.1 uses it) of FHIR resources, derived from the
``fhir.resources`` models the server validates with (R4 json.html).

One schema per resource, data type and backbone element, each referenced by
``$ref`` from the others, so that a type used in many places is written once. A
schema names the elements and their types, the required ones, and the codes of a
required binding; the rest of the rules (invariants, the profiles in ``profiles/``)
are checked by the server, not described here. Primitive extensions (``_birthDate``)
are allowed by one pattern.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any

from pydantic import BaseModel

REF = "#/components/schemas/"

#: FHIR primitive type (fhir_core's ``__visit_name__``) -> JSON Schema
NUMERIC: dict[str, dict[str, Any]] = {"boolean": {"type": "boolean"}, "integer": {"type": "integer"},
           "positiveInt": {"type": "integer", "minimum": 1},
           "unsignedInt": {"type": "integer", "minimum": 0}, "integer64": {"type": "string"},
           "decimal": {"type": "number"}}
#: Only ``instant`` is always a full RFC 3339 date-time: a FHIR date or dateTime may be
#: partial ("1973-06") and a uri relative, which JSON Schema's formats refuse.
FORMATS = {"instant": "date-time"}
PYTHON: dict[type, dict[str, Any]] = {bool: {"type": "boolean"}, int: {"type": "integer"}, float: {"type": "number"},
          str: {"type": "string"}}


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The element type of an annotation, and whether the element repeats."""
    many = False
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0]
        elif origin in (list, typing.List):  # noqa: UP006  # typing.List as the models use it
            many, annotation = True, typing.get_args(annotation)[0]
        else:
            return annotation, many


def _primitive(annotation: Any) -> dict[str, Any] | None:
    if typing.get_origin(annotation) is typing.Annotated:
        marker = typing.get_args(annotation)[1]
        name = getattr(marker, "__visit_name__", "") or type(marker).__name__.lower()
        if name in NUMERIC:
            return dict(NUMERIC[name])
        out: dict[str, Any] = {"type": "string"}
        if name in FORMATS:
            out["format"] = FORMATS[name]
        return out
    return dict(PYTHON[annotation]) if annotation in PYTHON else None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    klass = getattr(annotation, "_model_klass", None)
    if isinstance(klass, str):
        module, _, name = klass.rpartition(".")
        return getattr(__import__(module, fromlist=[name]), name)  # type: ignore[no-any-return]
    return klass if isinstance(klass, type) and issubclass(klass, BaseModel) else None


def _name(model: type[BaseModel]) -> str:
    return model.__name__


def _summary(model: type[BaseModel]) -> str:
    """The model's one-line FHIR definition (its docstring after fhir.resources' note)."""
    lines = [ln.strip() for ln in (model.__doc__ or "").splitlines() if ln.strip()]
    useful = [ln for ln in lines if "__ext" not in ln and "StructureDefinition" not in ln
              and not ln.startswith("for FHIR Primitive")]
    return useful[0] if useful else model.__name__


def _element(field: Any, todo: list[type[BaseModel]]) -> dict[str, Any]:
    inner, many = _unwrap(field.annotation)
    model = _model_of(inner)
    if model is not None:
        schema: dict[str, Any] = {"$ref": REF + _name(model)}
        todo.append(model)
    else:
        schema = _primitive(inner) or {}
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    codes = extra.get("enum_values")
    if isinstance(codes, list) and codes and "+" not in codes:
        schema["enum"] = codes
    if field.title and "$ref" not in schema:
        schema["description"] = field.title
    return {"type": "array", "items": schema, "minItems": 1} if many else schema


#: A choice element with more alternatives than this (Extension.value[x] and
#: Parameters.parameter.value[x] allow every data type) is written as one pattern:
#: listing them all makes every schema that holds an extension a tree of every data
#: type, which documentation tools expand for minutes.
MAX_CHOICES = 16


def _wide_choices(model: type[BaseModel]) -> set[str]:
    counts: dict[str, int] = {}
    for field in model.model_fields.values():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        choice = extra.get("one_of_many")
        if isinstance(choice, str):
            counts[choice] = counts.get(choice, 0) + 1
    return {name for name, n in counts.items() if n > MAX_CHOICES}


def _object(model: type[BaseModel], todo: list[type[BaseModel]]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    patterns: dict[str, Any] = {"^_[A-Za-z]": {"$ref": REF + "Element"}}
    wide = _wide_choices(model)
    for choice in sorted(wide):
        patterns[f"^{choice}[A-Z]"] = {"description": f"{choice}[x]: a value of any FHIR data "
                                                      "type, named by its type"}
    required: list[str] = []
    resource = _is_resource(model)
    if resource:
        properties["resourceType"] = {"const": model.__name__}
        required.append("resourceType")
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if name == "fhir_comments" or name.endswith("__ext") or extra.get("one_of_many") in wide:
            continue
        key = field.alias or name
        properties[key] = _element(field, todo)
        if extra.get("element_required"):
            required.append(key)
    schema: dict[str, Any] = {"type": "object", "description": _summary(model),
                              "properties": properties,
                              "patternProperties": patterns,
                              "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def _is_resource(model: type[BaseModel]) -> bool:
    return any(base.__name__ == "DomainResource" for base in model.__mro__[1:]) or \
        model.__name__ in ("Bundle", "Parameters", "Binary")


def _any_resource() -> dict[str, Any]:
    """``Resource`` where any type may stand (Bundle.entry.resource, contained)."""
    return {"type": "object", "description": "Any FHIR resource, named by its resourceType",
            "required": ["resourceType"],
            "properties": {"resourceType": {"type": "string"}}}


#: What a primitive's ``_name`` companion holds (json.html#primitive).
ELEMENT = {"type": "object", "description": "The id and extensions of a primitive element",
           "properties": {"id": {"type": "string"},
                          "extension": {"type": "array", "items": {"$ref": REF + "Extension"}}}}


@functools.cache
def _components(roots: tuple[type[BaseModel], ...]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"Resource": _any_resource(), "Element": ELEMENT}
    todo = list(roots)
    while todo:
        model = todo.pop()
        name = _name(model)
        if name in out:
            continue
        out[name] = _object(model, todo)
    return dict(sorted(out.items()))


def schemas(resource_types: typing.Iterable[str]) -> dict[str, dict[str, Any]]:
    """``components.schemas`` for these resource types and everything they use."""
    import importlib

    models = []
    for rtype in resource_types:
        module = importlib.import_module(f"fhir.resources.R4B.{rtype.lower()}")
        models.append(getattr(module, rtype))
    return _components(tuple(models))
