// Reading FHIR resources for display, and calling the server through fhirclient.
import { t, LANG } from "./i18n.js";

export function humanName(resource) {
  const name = (resource && resource.name && resource.name[0]) || {};
  if (name.text) return name.text;
  const given = (name.given || []).join(" ");
  const family = name.family || "";
  // Chinese names read family name first, without a space; others given name first.
  const cjk = /[\u3400-\u9fff]/.test(family + given);
  return (cjk ? `${family}${given}` : `${given} ${family}`).trim() || "?";
}

export function conceptText(concept) {
  if (!concept) return "";
  const coding = (concept.coding || [])[0] || {};
  return concept.text || coding.display || coding.code || "";
}

export function codingKey(concept) {
  const coding = ((concept && concept.coding) || [])[0] || {};
  return coding.system ? `${coding.system}|${coding.code}` : coding.code || "";
}

export function when(resource) {
  return resource.effectiveDateTime || (resource.effectivePeriod || {}).start || resource.issued || "";
}

export function shortDate(value) {
  if (!value) return "";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return value;
  return value.length <= 10 ? d.toLocaleDateString(LANG === "zh" ? "zh-CN" : undefined)
    : d.toLocaleString(LANG === "zh" ? "zh-CN" : undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** A number as recorded, but no more than 6 significant digits for long machine
 * values (12.78468639595923 → 12.7847). */
export function number(v) {
  return typeof v === "number" && String(v).length > 8 ? String(Number(v.toPrecision(6))) : String(v);
}

export function quantity(q) {
  if (!q || q.value === undefined) return "";
  return `${number(q.value)}${q.unit ? " " + q.unit : ""}`;
}

export function value(obs) {
  if (obs.valueQuantity) return quantity(obs.valueQuantity);
  if (obs.valueCodeableConcept) return conceptText(obs.valueCodeableConcept);
  if (obs.valueString !== undefined) return obs.valueString;
  if (obs.valueBoolean !== undefined) return String(obs.valueBoolean);
  if (obs.valueInteger !== undefined) return String(obs.valueInteger);
  if (obs.component) {
    return obs.component.map((c) => `${conceptText(c.code)} ${value(c)}`).join("; ");
  }
  return obs.dataAbsentReason ? conceptText(obs.dataAbsentReason) : "";
}

export function range(obs) {
  const r = (obs.referenceRange || [])[0];
  if (!r) return "";
  if (r.text) return r.text;
  const low = r.low ? quantity(r.low) : "";
  const high = r.high ? quantity(r.high) : "";
  return `${low} – ${high}`.trim();
}

export function categoryCodes(resource) {
  return (resource.category || []).flatMap((c) => (c.coding || []).map((x) => x.code));
}

export function entries(bundle, type) {
  return ((bundle && bundle.entry) || []).map((e) => e.resource)
    .filter((r) => r && (!type || r.resourceType === type));
}

export function nextLink(bundle) {
  const link = ((bundle && bundle.link) || []).find((l) => l.relation === "next");
  return link ? link.url : null;
}

/** A FHIR Parameters body from {name: value}: strings and booleans. */
export function parameters(values) {
  return {
    resourceType: "Parameters",
    parameter: Object.entries(values).filter(([, v]) => v !== undefined && v !== "").map(([name, v]) =>
      typeof v === "boolean" ? { name, valueBoolean: v } : { name, valueString: String(v) }),
  };
}

export function param(params, name) {
  const p = ((params && params.parameter) || []).find((x) => x.name === name);
  if (!p) return undefined;
  for (const key of Object.keys(p)) if (key.startsWith("value")) return p[key];
  return p;
}

/** The message an error carries: an OperationOutcome's diagnostics when there is one. */
export function problem(error) {
  const body = error && error.response && error.body;
  const outcome = (error && error.body) || body;
  if (outcome && outcome.resourceType === "OperationOutcome") {
    return (outcome.issue || []).map((i) => i.diagnostics || i.code).join("; ");
  }
  return (error && error.message) || String(error);
}

/** POST an operation with a Parameters body. */
export function operation(client, path, values) {
  return client.request({
    url: path,
    method: "POST",
    headers: { "Content-Type": "application/fhir+json" },
    body: JSON.stringify(parameters(values)),
  });
}

export function errorText(error) {
  return t("error", { m: problem(error) });
}
