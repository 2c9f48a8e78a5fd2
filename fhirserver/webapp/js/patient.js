// The patient's view: my record and my family members' (switch between them), my
// health card's QR code (refreshed before it expires), who saw my record, my sharing
// choices, and binding family members' cards.
import { el, clear, $, say, table } from "./dom.js";
import { t } from "./i18n.js";
import { showRecord } from "./record.js";
import { humanName, entries, nextLink, operation, errorText, param, shortDate, conceptText } from "./fhir.js";
import { fromFile } from "./scan.js";

const RELATIONSHIPS = ["CHILD", "MTH", "FTH", "SPS", "PRN", "SIB", "GRPRN", "FAMMEMB"];
let client;
let me;
let current;
let cardTimer = null;
let countdown = null;

export async function startPatient(smart, self) {
  client = smart;
  me = self;
  current = (smart.patient && smart.patient.id) || self;
  $("patient").hidden = false;
  for (const button of document.querySelectorAll("#patient-tabs button")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  $("whose").addEventListener("change", (event) => {
    current = event.target.value;
    showTab(document.querySelector("#patient-tabs [aria-selected=true]").dataset.tab);
  });
  $("consent-form").addEventListener("submit", saveConsent);
  $("bind-form").addEventListener("submit", bindMember);
  $("bind-photo").addEventListener("change", async (event) => {
    const file = event.target.files && event.target.files[0];
    if (file) $("bind-code").value = (await fromFile(file).catch(() => null)) || "";
    event.target.value = "";
  });
  for (const code of RELATIONSHIPS) $("bind-relationship").append(el("option", { value: code }, code));
  await loadFamilySwitch();
  showTab("record");
}

function showTab(name) {
  for (const button of document.querySelectorAll("#patient-tabs button")) {
    button.setAttribute("aria-selected", String(button.dataset.tab === name));
  }
  for (const panel of document.querySelectorAll(".patient-panel")) panel.hidden = panel.id !== `panel-${name}`;
  if (name !== "card") stopCard();
  if (name === "record") showRecord(client, $("panel-record"), current);
  if (name === "card") showCard();
  if (name === "audit") showAudit(`AuditEvent?patient=Patient/${encodeURIComponent(current)}&_count=20`, []);
  if (name === "consent") loadConsent();
  if (name === "family") loadFamily();
}

async function family() {
  return entries(await client.request(`Patient/${encodeURIComponent(me)}/$family`), "RelatedPerson");
}

/** Me and the members whose cards I hold. */
async function loadFamilySwitch() {
  const select = clear($("whose"));
  select.append(el("option", { value: me }, t("me")));
  try {
    const self = await client.request(`Patient/${encodeURIComponent(me)}`);
    select.firstChild.textContent = `${humanName(self)} (${t("me")})`;
    for (const rp of await family()) {
      const member = (rp.patient.reference || "").replace(/^Patient\//, "");
      if (!rp.active || member === me) continue;
      const patient = await client.request(`Patient/${encodeURIComponent(member)}`).catch(() => null);
      select.append(el("option", { value: member }, patient ? humanName(patient) : member));
    }
  } catch (error) {
    $("patient-status").textContent = errorText(error);
  }
  if (![...select.options].some((o) => o.value === current)) current = me;  // unbound since
  select.value = current;
}

// --- health card -------------------------------------------------------------------

function stopCard() {
  clearTimeout(cardTimer);
  clearInterval(countdown);
  cardTimer = countdown = null;
}

async function showCard() {
  stopCard();
  const box = clear($("card-box"));
  const status = el("p", { class: "status", role: "status" });
  box.append(status);
  say(status, t("loading"), "busy");
  try {
    const answer = await client.request(`Patient/${encodeURIComponent(current)}/$card-qr`);
    const png = param(answer, "png");
    const expires = new Date(param(answer, "expires"));
    const left = el("p", { class: "expires", id: "card-expires" });
    clear(box).append(
      el("img", { id: "card-qr", class: "qr", alt: "QR", src: `data:${png.contentType};base64,${png.data}`,
                  dataset: { payload: param(answer, "payload"), expires: expires.toISOString() } }),
      left, el("p", { class: "note" }, t("cardHint")));
    const tick = () => { left.textContent = t("expiresIn", { s: Math.max(0, Math.round((expires - Date.now()) / 1000)) }); };
    tick();
    countdown = setInterval(tick, 1000);
    // A fresh code a little before this one expires (and at least a few seconds on).
    const wait = Math.max(5000, expires - Date.now() - Math.min(30000, (expires - Date.now()) / 5));
    cardTimer = setTimeout(showCard, wait);
  } catch (error) {
    say(status, error && error.status === 403 ? t("cardOnlyHolder") : errorText(error), "error");
  }
}

// --- who saw my record -------------------------------------------------------------

function agentOf(event) {
  const agents = event.agent || [];
  const person = agents.find((a) => a.who && a.who.reference && !a.who.reference.startsWith("Organization/"));
  const org = agents.find((a) => a.who && (a.who.reference || "").startsWith("Organization/"));
  const app = agents.find((a) => a.who && a.who.identifier);
  return {
    who: person ? (person.who.display || person.who.reference) : (agents[0] && agents[0].who && agents[0].who.display) || "",
    org: org ? (org.who.display || org.who.reference) : "",
    app: app ? app.who.identifier.value : "",
  };
}

function whatOf(event) {
  const query = (event.entity || []).find((e) => e.description);
  if (query) return query.description;
  const subtype = ((event.subtype || [])[0] || {}).code || "";
  const action = t(`do-${subtype}`) === `do-${subtype}` ? subtype : t(`do-${subtype}`);
  const resource = (event.entity || []).find((e) => e.what && e.what.reference
    && !e.what.reference.startsWith("Patient/"));
  return `${action}${resource ? ` (${resource.what.reference})` : ""}`;
}

function emergencyOf(event) {
  return ((event.purposeOfEvent || [])[0] || { coding: [] }).coding.some((c) => c.code === "ETREAT")
    || /^break-the-glass:/.test(event.outcomeDesc || "");
}

async function showAudit(url, seen) {
  const box = clear($("audit-box"));
  const status = el("p", { class: "status", role: "status" });
  box.append(status);
  say(status, t("loading"), "busy");
  try {
    const bundle = await client.request(url);
    const events = entries(bundle, "AuditEvent");
    // The reason of each clinician's emergency access, to show beside their reads.
    const reasons = new Map();
    for (const e of [...events].reverse()) {
      const m = /^break-the-glass: (.*)$/s.exec(e.outcomeDesc || "");
      if (m) reasons.set(agentOf(e).who, m[1]);
    }
    say(status, events.length ? "" : t("none"), "ok");
    const list = el("ol", { class: "timeline" });
    for (const e of events) {
      const who = agentOf(e);
      const emergency = emergencyOf(e);
      const own = /^break-the-glass: (.*)$/s.exec(e.outcomeDesc || "");
      const reason = own ? own[1] : emergency ? reasons.get(who.who) : null;
      const failed = e.outcome && e.outcome !== "0";
      const started = !e.outcome;  // the record made before a change; its outcome follows
      list.append(el("li", { class: `event${emergency ? " emergency" : ""}`, dataset: { who: who.who } },
        el("time", { datetime: e.recorded }, shortDate(e.recorded)),
        el("div", { class: "who" }, who.who === `Patient/${me}` ? `${t("you")} (${who.who})` : who.who),
        el("div", { class: "what" }, whatOf(e), failed ? ` (${t("auditFailed")})` : "",
           started ? ` (${t("auditStarted")})` : ""),
        el("div", { class: "meta" }, [who.org && `${t("auditOrg")}: ${who.org}`,
                                      who.app && `${t("auditApp")}: ${who.app}`].filter(Boolean).join(" · ")),
        emergency ? el("p", { class: "flag" }, "⚠ ", t("auditEmergency"),
                       reason ? ` — ${t("auditReason", { r: reason })}` : "") : null));
    }
    box.append(list);
    const nav = el("div", { class: "pager" });
    if (seen.length) nav.append(el("button", { type: "button", onclick: () => showAudit(seen[seen.length - 1], seen.slice(0, -1)) }, t("previous")));
    const next = nextLink(bundle);
    if (next) nav.append(el("button", { type: "button", onclick: () => showAudit(next, [...seen, url]) }, t("next")));
    box.append(nav);
  } catch (error) {
    say(status, errorText(error), "error");
  }
}

// --- consent -------------------------------------------------------------------------

const CHOICES = ["restrictSensitive", "optOut", "shareWithFamily"];

async function loadConsent() {
  const status = $("consent-status");
  say(status, t("loading"), "busy");
  try {
    const answer = await client.request(`Patient/${encodeURIComponent(current)}/$consent`);
    for (const name of CHOICES) $(`consent-${name}`).checked = param(answer, name) === true;
    say(status, "", "ok");
  } catch (error) {
    say(status, errorText(error), "error");
  }
}

async function saveConsent(event) {
  event.preventDefault();
  const status = $("consent-status");
  say(status, t("loading"), "busy");
  const values = Object.fromEntries(CHOICES.map((name) => [name, $(`consent-${name}`).checked]));
  try {
    await operation(client, `Patient/${encodeURIComponent(current)}/$consent`, values);
    say(status, t("saved"), "ok");
  } catch (error) {
    say(status, errorText(error), "error");
  }
}

// --- family --------------------------------------------------------------------------

async function loadFamily() {
  const box = clear($("family-box"));
  const status = $("family-status");
  say(status, t("loading"), "busy");
  try {
    const all = await family();
    const members = all.filter((rp) => rp.active && rp.patient.reference !== `Patient/${me}`);
    const holders = all.filter((rp) => rp.active && rp.patient.reference === `Patient/${me}`);
    const requests = all.filter((rp) => !rp.active);
    const names = new Map();
    for (const rp of members) {
      const p = await client.request(rp.patient.reference).catch(() => null);
      names.set(rp.id, p ? humanName(p) : rp.patient.reference);
    }
    const relation = (rp) => conceptText((rp.relationship || [])[0]);
    box.append(
      el("h3", {}, t("members")),
      members.length ? table([t("name"), t("relationship"), ""], members.map((rp) => [names.get(rp.id), relation(rp),
        el("button", { type: "button", onclick: () => unbind({ member: rp.patient.reference }) }, t("unbind"))]))
        : el("p", {}, t("none")),
      el("h3", {}, t("holders")),
      // The server names a holder but gives the member no id of theirs: the holder
      // ends that binding from their side.
      holders.length ? table([t("name"), t("relationship")], holders.map((rp) => [humanName(rp), relation(rp)]))
        : el("p", {}, t("none")),
      el("h3", {}, t("requests")),
      requests.length ? table([t("name"), t("relationship"), ""], requests.map((rp) => [humanName(rp), relation(rp),
        el("span", {},
          el("button", { type: "button", onclick: () => answer(rp.id, "accept") }, t("accept")), " ",
          el("button", { type: "button", onclick: () => answer(rp.id, "decline") }, t("decline")))]))
        : el("p", {}, t("none")));
    say(status, "", "ok");
  } catch (error) {
    say(status, errorText(error), "error");
  }
}

async function unbind(values) {
  try {
    await operation(client, `Patient/${encodeURIComponent(me)}/$unbind-family`, values);
    await loadFamilySwitch();
    loadFamily();
  } catch (error) {
    say($("family-status"), errorText(error), "error");
  }
}

async function answer(request, decision) {
  try {
    await operation(client, `Patient/${encodeURIComponent(me)}/$accept-family`,
                    { request, decision: decision === "decline" ? "decline" : undefined });
    await loadFamilySwitch();
    loadFamily();
  } catch (error) {
    say($("family-status"), errorText(error), "error");
  }
}

async function bindMember(event) {
  event.preventDefault();
  const status = $("family-status");
  const card = $("bind-card").value.trim();
  const code = $("bind-code").value.trim();
  say(status, t("loading"), "busy");
  try {
    const result = await operation(client, `Patient/${encodeURIComponent(me)}/$bind-family`,
      { ...(code ? { code } : { card }), relationship: $("bind-relationship").value });
    $("bind-card").value = "";
    $("bind-code").value = "";
    await loadFamilySwitch();
    await loadFamily();
    say(status, result.resourceType === "OperationOutcome"
      ? (result.issue || []).map((i) => i.diagnostics).join("; ") : t("saved"), "ok");
  } catch (error) {
    say(status, errorText(error), "error");
  }
}
