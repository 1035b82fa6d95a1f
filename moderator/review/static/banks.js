// The hash-bank page: upload an image to a bank and remove entries through the JSON API, then reload.
// Every request carries the session's CSRF token; messages are shown with textContent only.
"use strict";

const csrf = document.body.dataset.csrf;
const status = document.getElementById("bank-status");

async function send(method, path, body) {
  const response = await fetch(path, { method, body, credentials: "same-origin", headers: { "X-CSRF-Token": csrf } });
  if (response.status === 401) { window.location.assign("/banks"); return; }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(typeof data.detail === "string" ? data.detail : `HTTP ${response.status}`);
  window.location.reload();
}

document.getElementById("bank-upload").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const bank = form.get("bank");
  form.delete("bank");
  status.textContent = "uploading…";
  send("POST", `/api/banks/${encodeURIComponent(bank)}/entries`, form)
    .catch((error) => { status.textContent = error.message; });
});

for (const button of document.querySelectorAll("button.remove")) {
  button.addEventListener("click", () => {
    const { bank, hash } = button.dataset;
    if (!window.confirm(`Remove ${hash.slice(0, 16)}… from ${bank}?`)) return;
    send("DELETE", `/api/banks/${encodeURIComponent(bank)}/entries/${hash}`)
      .catch((error) => { status.textContent = error.message; });
  });
}
