// The upload control follows enable-reference-images live: the OpenFeature web SDK with the OFREP web provider in
// its default change detection (SSE: the control plane's stream says "refetch", the provider re-evaluates in bulk).
// The control plane is on another origin; it answers CORS to this one (CONTROLPLANE_CORS_ALLOWED_ORIGINS).
import { OFREPWebProvider, OpenFeature, ProviderEvents } from "./vendor/openfeature-web.js";

const config = JSON.parse(document.getElementById("flag-config").textContent);
const body = document.body;
const upload = document.getElementById("upload");
const status = document.getElementById("flag-status");
const signIn = document.getElementById("sign-in");
const userInput = document.getElementById("user-id");
const uploadForm = document.getElementById("upload-form");
const uploadResult = document.getElementById("upload-result");
const client = OpenFeature.getClient();
let user = "";
let providerSet = false;

/** Show the control only to a signed-in user for whom the flag is on; note when it last changed (for benchmarks). */
function render() {
  const details = user ? client.getBooleanDetails(config.flagKey, false) : null;
  const on = details !== null && details.value === true;
  if (upload.hidden === on) {
    upload.hidden = !on;
    body.dataset.changedAt = String(Date.now());
  }
  body.dataset.flag = on ? "on" : "off";
  if (!user) {
    status.textContent = "Not signed in.";
  } else if (details.errorCode) {
    status.textContent = `Reference images are unavailable for ${user} (${details.errorCode}).`;
  } else {
    status.textContent = `Reference images are ${on ? "on" : "off"} for ${user} (${details.reason}).`;
  }
}

for (const event of [ProviderEvents.Ready, ProviderEvents.ConfigurationChanged, ProviderEvents.ContextChanged,
  ProviderEvents.Error, ProviderEvents.Stale]) {
  client.addHandler(event, render);
}

async function signInAs(id) {
  user = id.trim();
  userInput.value = user;
  const url = new URL(window.location.href);
  url.searchParams.set("user", user);
  window.history.replaceState(null, "", url);
  await OpenFeature.setContext({ targetingKey: user });
  if (!providerSet) {
    providerSet = true;
    OpenFeature.setProvider(new OFREPWebProvider({
      baseUrl: config.controlPlaneUrl,
      headers: [["Authorization", `Bearer ${config.token}`]],
      // Never from a stored copy: with the control plane unreachable the flag's default (off) hides the control,
      // rather than a cached "on" from before a rollback showing it.
      cacheMode: "disabled",
    }));
  }
  render();
}

signIn.addEventListener("submit", (event) => {
  event.preventDefault();
  if (config.token) signInAs(userInput.value);
});

uploadForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(uploadForm);
  form.set("user_id", user);
  uploadResult.textContent = "Uploading...";
  const response = await fetch("/upload/reference-image", { method: "POST", body: form });
  const answer = await response.json();
  uploadResult.textContent = response.ok
    ? `Stored ${answer.asset_id} (${answer.content_type}, ${answer.size} bytes).`
    : `Refused: ${answer.detail}`;
});

if (!config.token) {
  status.textContent = "Flag evaluation is not configured: set PIPELINE_BROWSER_EVALUATE_TOKEN.";
  signIn.querySelector("button").disabled = true;
} else {
  const requested = new URLSearchParams(window.location.search).get("user");
  if (requested) signInAs(requested);
}
body.dataset.ready = "true";
