// The clinician's view: find a patient by their health card (camera or a photo of
// the QR code) or among the patients they already treat, then the history; and
// break-the-glass with a reason, clearly marked.
import { el, clear, $, say } from "./dom.js";
import { t } from "./i18n.js";
import { fromFile, fromCamera, cameraAvailable } from "./scan.js";
import { showRecord } from "./record.js";
import { humanName, entries, nextLink, operation, errorText } from "./fhir.js";

let client;
let camera = null;
const emergencies = new Set();  // patients opened by break-the-glass in this session

export function startClinician(smart) {
  client = smart;
  $("clinician").hidden = false;
  const cameraButton = $("scan-camera");
  cameraButton.hidden = !cameraAvailable();
  cameraButton.addEventListener("click", toggleCamera);
  $("card-photo").addEventListener("change", async (event) => {
    const file = event.target.files && event.target.files[0];
    if (!file) return;
    say($("scan-status"), t("scanning"), "busy");
    let text = null;
    try {
      text = await fromFile(file);
    } catch (error) {
      text = null;
    }
    event.target.value = "";
    if (!text) {
      say($("scan-status"), t("noQr"), "error");
      return;
    }
    scanned(text);
  });
  $("emergency-form").addEventListener("submit", (event) => {
    event.preventDefault();
    breakGlass($("emergency-patient").value.trim(), $("emergency-reason").value.trim(), $("emergency-status"));
  });
  $("history-back").addEventListener("click", showSearch);
  loadMyPatients("Patient?_count=20");
}

function showSearch() {
  document.body.classList.remove("emergency-mode");
  $("find").hidden = false;
  $("history").hidden = true;
  loadMyPatients("Patient?_count=20");
}

function toggleCamera() {
  const video = $("camera");
  if (camera) {
    camera.stop();
    return;
  }
  video.hidden = false;
  $("scan-camera").textContent = t("stopCamera");
  camera = fromCamera(video, (error) => say($("scan-status"), t("noCamera", { m: error.message || error.name }), "error"));
  camera.done.then((text) => {
    camera = null;
    video.hidden = true;
    $("scan-camera").textContent = t("scanCamera");
    if (text) scanned(text);
  });
}

async function scanned(payload) {
  const status = $("scan-status");
  say(status, t("loading"), "busy");
  try {
    const patient = await operation(client, "Patient/$scan-card", { payload });
    say(status, "", "ok");
    openPatient(patient.id);
  } catch (error) {
    say(status, errorText(error), "error");
  }
}

async function loadMyPatients(url, seen = []) {
  const box = clear($("my-patients"));
  const status = el("p", { class: "status", role: "status" });
  box.append(status);
  say(status, t("loading"), "busy");
  try {
    const bundle = await client.request(url);
    const patients = entries(bundle, "Patient");
    say(status, patients.length ? "" : t("noPatients"), "ok");
    const list = el("ul", { class: "patient-list" });
    for (const p of patients) {
      list.append(el("li", {},
        el("button", { type: "button", class: "open-patient", dataset: { id: p.id },
                       onclick: () => openPatient(p.id) }, humanName(p)),
        " ", el("span", { class: "meta" }, [p.gender, p.birthDate].filter(Boolean).join(" · "))));
    }
    box.append(list);
    const next = nextLink(bundle);
    const nav = el("div", { class: "pager" });
    if (seen.length) {
      nav.append(el("button", { type: "button", onclick: () => loadMyPatients(seen[seen.length - 1], seen.slice(0, -1)) },
                    t("previous")));
    }
    if (next) nav.append(el("button", { type: "button", onclick: () => loadMyPatients(next, [...seen, url]) }, t("next")));
    box.append(nav);
  } catch (error) {
    say(status, errorText(error), "error");
  }
}

export async function openPatient(pid) {
  $("find").hidden = true;
  $("history").hidden = false;
  document.body.classList.toggle("emergency-mode", emergencies.has(pid));
  const patient = await showRecord(client, $("history-body"), pid);
  const box = $("history-emergency");
  clear(box);
  // Break-the-glass for this patient too: it lifts the patient's sharing limits for a
  // short time, recorded with its reason.
  const reason = el("textarea", { id: "history-emergency-reason", required: true, rows: 2 });
  const status = el("p", { class: "status", role: "status" });
  const form = el("form", { class: "emergency" },
    el("h2", {}, "⚠ ", t("emergency")), el("p", {}, t("emergencyHint")),
    el("label", {}, t("reason"), " ", reason),
    el("button", { type: "submit", class: "danger" }, t("breakGlass")), status);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    breakGlass(pid, reason.value.trim(), status);
  });
  box.append(form);
  return patient;
}

async function breakGlass(pid, reason, status) {
  if (!pid || !reason) return;
  say(status, t("loading"), "busy");
  try {
    await operation(client, `Patient/${encodeURIComponent(pid)}/$break-glass`, { reason });
    say(status, t("breakGlassDone"), "ok");
    emergencies.add(pid);
    openPatient(pid);
  } catch (error) {
    say(status, errorText(error), "error");
  }
}
