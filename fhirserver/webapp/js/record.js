// One patient's history at a glance: demographics (identifiers as the server masks
// them), latest vital signs, laboratory trends, results and reports, filtered by
// date and category and paged as the server pages (the Bundle's next link).
import { el, clear, table, say } from "./dom.js";
import { t } from "./i18n.js";
import { drawTrend } from "./trend.js";
import {
  humanName, conceptText, codingKey, when, shortDate, value, range, categoryCodes,
  entries, nextLink, errorText,
} from "./fhir.js";

const CATEGORIES = ["laboratory", "vital-signs", "survey", "imaging", "procedure"];
const PAGE = 20;
const MAX_TREND_PAGES = 20;
//: DiagnosticReport categories (v2-0074) for the Observation categories that have one.
const REPORT_CATEGORY = { laboratory: "LAB", imaging: "RAD" };

function query(params) {
  return Object.entries(params).flatMap(([k, v]) => (Array.isArray(v) ? v : [v])
    .filter((x) => x !== undefined && x !== "").map((x) => `${encodeURIComponent(k)}=${encodeURIComponent(x)}`))
    .join("&");
}

function dateParams(filter) {
  const out = [];
  if (filter.from) out.push(`ge${filter.from}`);
  if (filter.to) out.push(`le${filter.to}`);
  return out;
}

/** A list that shows one server page at a time, with next (the Bundle's link) and
 * previous (the pages already seen). */
function pager(client, box, firstUrl, render) {
  const seen = [];
  const status = el("p", { class: "status", role: "status" });
  const body = el("div");
  const prev = el("button", { type: "button", class: "prev" }, t("previous"));
  const next = el("button", { type: "button", class: "next" }, t("next"));
  const nav = el("div", { class: "pager" }, prev, next);
  box.append(status, body, nav);
  async function load(url) {
    say(status, t("loading"), "busy");
    try {
      const bundle = await client.request(url);
      clear(body);
      render(body, bundle);
      say(status, "", "ok");
      const nextUrl = nextLink(bundle);
      next.hidden = !nextUrl;
      next.onclick = () => { seen.push(url); load(nextUrl); };
      prev.hidden = seen.length === 0;
      prev.onclick = () => load(seen.pop());
    } catch (error) {
      say(status, errorText(error), "error");
    }
  }
  return load(firstUrl);
}

function demographics(patient) {
  const ids = (patient.identifier || []).map((i) =>
    el("li", {}, el("span", { class: "id-type" }, conceptText(i.type) || i.system || ""), " ",
       el("span", { class: "id-value" }, i.value || "")));
  const masked = ((patient.meta || {}).security || []).some((s) => s.code === "MASKED");
  return el("dl", { class: "demographics" },
    el("dt", {}, t("name")), el("dd", { class: "patient-name" }, humanName(patient)),
    el("dt", {}, t("gender")), el("dd", {}, patient.gender || ""),
    el("dt", {}, t("birthDate")), el("dd", {}, patient.birthDate || ""),
    el("dt", {}, t("identifiers")), el("dd", {}, el("ul", { class: "identifiers" }, ids),
      masked ? el("p", { class: "note" }, t("masked")) : null));
}

function section(title, className) {
  const box = el("section", { class: `card ${className}` }, el("h2", {}, title));
  return box;
}

/** Render Patient/``pid``'s history into ``container``. */
export async function showRecord(client, container, pid) {
  clear(container);
  const status = el("p", { class: "status", role: "status" });
  container.append(status);
  say(status, t("loading"), "busy");
  let patient;
  try {
    patient = await client.request(`Patient/${encodeURIComponent(pid)}`);
  } catch (error) {
    say(status, errorText(error), "error");
    return null;
  }
  say(status, "", "ok");
  const filter = { from: "", to: "", category: "" };
  const head = section(t("demographics"), "demographics-card");
  head.append(demographics(patient));
  const vitals = section(t("vitals"), "vitals");
  const filters = filterForm(filter, () => refresh());
  const labs = section(t("labs"), "labs");
  const chart = el("div", { class: "trend", id: "trend" });
  const results = section(t("observations"), "observations");
  const reports = section(t("reports"), "reports");
  container.append(head, vitals, filters, labs, results, reports);

  function refresh() {
    for (const box of [labs, results, reports]) {
      while (box.childNodes.length > 1) box.removeChild(box.lastChild);
    }
    loadLabs(client, labs, chart, pid, filter);
    const obsQuery = query({ patient: pid, category: filter.category, date: dateParams(filter),
                             _sort: "-date", _count: PAGE });
    pager(client, results, `Observation?${obsQuery}`, (body, bundle) => {
      const items = entries(bundle, "Observation");
      body.append(items.length ? table([t("date"), t("category"), t("code"), t("value"), t("range")],
        items.map((o) => [shortDate(when(o)), categoryCodes(o).map((c) => t(c)).join(", "),
                          conceptText(o.code), value(o), range(o)]), "observation-table")
        : el("p", {}, t("none")));
    });
    const reportQuery = query({ patient: pid, category: REPORT_CATEGORY[filter.category] || "",
                                date: dateParams(filter), _sort: "-date", _count: 10,
                                _include: "DiagnosticReport:result" });
    if (filter.category && !REPORT_CATEGORY[filter.category]) {
      reports.append(el("p", {}, t("none")));
    } else {
      pager(client, reports, `DiagnosticReport?${reportQuery}`, renderReports);
    }
  }
  loadVitals(client, vitals, pid);
  refresh();
  return patient;
}

function filterForm(filter, onApply) {
  const from = el("input", { type: "date", name: "from", id: "filter-from" });
  const to = el("input", { type: "date", name: "to", id: "filter-to" });
  const category = el("select", { name: "category", id: "filter-category" },
    el("option", { value: "" }, t("all")),
    CATEGORIES.map((c) => el("option", { value: c }, t(c))));
  const form = el("form", { class: "card filters", role: "search" },
    el("h2", {}, t("filters")),
    el("label", {}, t("from"), " ", from), el("label", {}, t("to"), " ", to),
    el("label", {}, t("category"), " ", category),
    el("button", { type: "submit" }, t("apply")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    Object.assign(filter, { from: from.value, to: to.value, category: category.value });
    onApply();
  });
  return form;
}

async function loadVitals(client, box, pid) {
  try {
    const bundle = await client.request(
      `Observation/$lastn?${query({ patient: pid, category: "vital-signs", max: 1 })}`);
    const items = entries(bundle, "Observation");
    box.append(items.length ? table([t("code"), t("value"), t("date")],
      items.map((o) => [conceptText(o.code), value(o), shortDate(when(o))]), "vitals-table")
      : el("p", {}, t("none")));
  } catch (error) {
    box.append(el("p", { class: "error" }, errorText(error)));
  }
}

async function loadLabs(client, box, chart, pid, filter) {
  const codes = new Map();
  try {
    const bundle = await client.request(`Observation?${query({
      patient: pid, category: "laboratory", date: dateParams(filter), _sort: "-date", _count: 100 })}`);
    for (const o of entries(bundle, "Observation")) {
      const key = codingKey(o.code);
      if (key && o.valueQuantity && !codes.has(key)) codes.set(key, o);
    }
  } catch (error) {
    box.append(el("p", { class: "error" }, errorText(error)));
    return;
  }
  if (!codes.size) {
    box.append(el("p", {}, t("none")));
    return;
  }
  const list = el("ul", { class: "lab-codes" });
  for (const [key, latest] of codes) {
    list.append(el("li", {},
      el("button", { type: "button", class: "trend-button", dataset: { code: key },
                     onclick: () => loadTrend(client, chart, pid, key, filter) },
         conceptText(latest.code)),
      " ", el("span", { class: "latest" }, `${value(latest)} · ${shortDate(when(latest))}`)));
  }
  box.append(list, chart);
}

/** Every Observation of one code (all pages), drawn as a trend. */
async function loadTrend(client, box, pid, code, filter) {
  clear(box);
  const status = el("p", { class: "status", role: "status" });
  box.append(status);
  say(status, t("loading"), "busy");
  const found = [];
  try {
    let url = `Observation?${query({ patient: pid, code, date: dateParams(filter), _sort: "date", _count: 100 })}`;
    for (let pages = 0; url && pages < MAX_TREND_PAGES; pages += 1) {
      const bundle = await client.request(url);
      found.push(...entries(bundle, "Observation"));
      url = nextLink(bundle);
    }
  } catch (error) {
    say(status, errorText(error), "error");
    return;
  }
  drawTrend(box, found);
  box.scrollIntoView({ block: "nearest" });
}

function renderReports(body, bundle) {
  const included = new Map(entries(bundle, "Observation").map((o) => [`Observation/${o.id}`, o]));
  const reports = entries(bundle, "DiagnosticReport");
  if (!reports.length) {
    body.append(el("p", {}, t("none")));
    return;
  }
  for (const report of reports) {
    const results = (report.result || []).map((ref) => included.get(ref.reference)).filter(Boolean);
    body.append(el("article", { class: "report" },
      el("h3", {}, conceptText(report.code)),
      el("p", { class: "meta" }, `${shortDate(when(report))} · ${t("status")}: ${report.status || ""}`),
      report.conclusion ? el("p", {}, report.conclusion) : null,
      results.length ? table([t("code"), t("value"), t("range")],
        results.map((o) => [conceptText(o.code), value(o), range(o)]), "report-results") : null));
  }
}
