// Start-up: sign in through this server's SMART authorization (standalone launch, or
// EHR launch when opened with ``launch``), authorization code with PKCE (fhirclient),
// then the clinician's or the patient's view by who signed in (fhirUser).
//
// Tokens stay in fhirclient's sessionStorage, never in a URL or a log line: the
// code in the redirect is removed from the address bar once exchanged.
import { $, say } from "./dom.js";
import { t, translate } from "./i18n.js";
import { startClinician, openPatient } from "./clinician.js";
import { startPatient } from "./patient.js";

const config = document.body.dataset;
const CLINICIAN_SCOPE = "openid fhirUser user/Patient.rs user/Observation.rs user/DiagnosticReport.rs";
const PATIENT_SCOPE = "openid fhirUser launch/patient patient/Patient.rus patient/Observation.rs "
  + "patient/DiagnosticReport.rs patient/AuditEvent.rs";
const EHR_SCOPE = `launch ${CLINICIAN_SCOPE}`;
const status = $("status");

function authorize(scope, launch) {
  say(status, t("signingIn"), "busy");
  return window.FHIR.oauth2.authorize({
    clientId: config.clientId,
    scope,
    redirectUri: config.redirectUri,
    iss: config.iss,
    launch: launch || undefined,
    pkceMode: "required",
  }).catch((error) => say(status, error.message, "error"));
}

let signedInClient = null;

/** Revoke the access token at the server (RFC 7009, the endpoint the SMART
 * configuration names), then forget the sign-in. */
async function signOut() {
  try {
    const token = signedInClient && signedInClient.state.tokenResponse.access_token;
    if (token) {
      const found = await fetch(`${config.iss}/.well-known/smart-configuration`).then((r) => r.json());
      await fetch(found.revocation_endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ token, token_type_hint: "access_token", client_id: config.clientId }),
      });
    }
  } catch (error) {
    // Signed out here all the same; the token ends when it expires.
  }
  sessionStorage.clear();
  location.replace(config.redirectUri);
}

async function signedIn() {
  const client = await window.FHIR.oauth2.ready();
  signedInClient = client;
  const fhirUser = client.getFhirUser() || "";
  const scope = String(client.state.tokenResponse.scope || "");
  $("signin").hidden = true;
  $("signout").hidden = false;
  $("user").textContent = fhirUser;
  say(status, "", "ok");
  document.body.dataset.view = fhirUser.startsWith("Patient/") ? "patient" : "clinician";
  if (fhirUser.startsWith("Patient/")) {
    if (!/\bpatient\//.test(scope)) throw new Error(t("wrongRole"));
    await startPatient(client, fhirUser.slice("Patient/".length));
  } else {
    if (!/\buser\//.test(scope)) throw new Error(t("wrongRole"));
    startClinician(client);
    const launched = client.patient && client.patient.id;
    if (launched) openPatient(launched);  // EHR launch: the EHR's patient
  }
  status.dataset.state = "ready";
}

function boot() {
  translate();
  $("signout").addEventListener("click", signOut);
  if (!window.FHIR || !window.jsQR || !window.Chart) {
    say(status, t("missingLibs"), "error");
    return;
  }
  const params = new URLSearchParams(location.search);
  if (params.has("launch")) {
    // EHR launch: only for this server (an iss naming another server is refused, so
    // a crafted link cannot point the app at someone else's server).
    if (params.get("iss") && params.get("iss").replace(/\/$/, "") !== config.iss) {
      say(status, t("wrongIss"), "error");
      return;
    }
    authorize(EHR_SCOPE, params.get("launch"));
    return;
  }
  const returning = params.has("code") || params.has("error") || params.has("state")
    || sessionStorage.getItem("SMART_KEY");
  if (returning) {
    say(status, t("signingIn"), "busy");
    signedIn().catch((error) => {
      say(status, error.message || String(error), "error");
      $("signout").hidden = false;
    });
    return;
  }
  say(status, "", "ok");
  $("signin").hidden = false;
  $("signin-clinician").addEventListener("click", () => authorize(CLINICIAN_SCOPE));
  $("signin-patient").addEventListener("click", () => authorize(PATIENT_SCOPE));
}

boot();
