"""System-level interactions: batch/transaction, history, capabilities (R4 http.html)."""

from __future__ import annotations

from flask import Response
from flask_smorest import Blueprint

from .. import errors
from ..interactions import history as history_
from ..interactions import transaction as bundles
from .body import json_body
from .capability import capability_statement
from .negotiation import render
from .resources import query_items
from .state import context, prefer

blp = Blueprint("system", __name__, url_prefix="/", description="System-level FHIR interactions")


@blp.route("/", methods=["POST"])
def process_bundle() -> Response:
    """batch or transaction: POST a Bundle to the base URL (http.html#transaction)"""
    body = json_body()
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise errors.Invalid("The base URL takes a Bundle of type batch or transaction",
                             expression="Bundle")
    kind = body.get("type")
    ctx = context()
    if kind == "transaction":
        return render(200, bundles.transaction(ctx, body, prefer("return")))
    if kind == "batch":
        return render(200, bundles.batch(ctx, body, prefer("return")))
    raise errors.Invalid(f"Bundle.type must be 'batch' or 'transaction', not '{kind}'",
                         expression="Bundle.type")


@blp.route("/_history")
def system_history() -> Response:
    """history-system (http.html#history)"""
    return render(200, history_.history(context(), query_items()))


@blp.route("/metadata")
def metadata() -> Response:
    """capabilities: the CapabilityStatement (http.html#capabilities)"""
    return render(200, capability_statement(context()))
