// facegate admin page. Loaded from this site only (the Content-Security-Policy forbids inline
// script), so everything the pages do in the browser is here.
"use strict";

// The live camera view: fetch a fresh /live.jpg every data-refresh-ms, swapping it in only
// once it has loaded (no flicker); show the placeholder while no frame comes.
function startLiveView(img) {
  const placeholder = document.getElementById("live-placeholder");
  const period = parseInt(img.dataset.refreshMs || "500", 10);
  const source = img.dataset.src;
  let busy = false;
  let failures = 0;

  function show(ok) {
    img.hidden = !ok;
    if (placeholder) placeholder.hidden = ok;
  }

  function signedOut() {
    // A session that timed out answers with a redirect to the sign-in page.
    fetch(source, { cache: "no-store" }).then(function (response) {
      if (response.redirected && response.url.indexOf("/login") !== -1) {
        window.location.reload();
      }
    }).catch(function () {});
  }

  function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    const next = new Image();
    next.onload = function () {
      img.src = next.src;
      failures = 0;
      show(true);
      busy = false;
    };
    next.onerror = function () {
      failures += 1;
      show(false);
      if (failures === 3) signedOut();
      busy = false;
    };
    next.src = source + "?t=" + Date.now();
  }

  img.addEventListener("error", function () { show(false); });
  window.setInterval(refresh, period);
}

// Long form posts (enrolment runs the face pipeline): say so, and refuse a second click.
function guardSubmit(form) {
  form.addEventListener("submit", function () {
    const button = form.querySelector("button[type=submit], button:not([type])");
    if (!button) return;
    window.setTimeout(function () {
      button.disabled = true;
      button.dataset.label = button.textContent;
      button.textContent = "Working…";
    }, 0);
  });
}

document.addEventListener("DOMContentLoaded", function () {
  const live = document.getElementById("live-view");
  if (live) startLiveView(live);
  ["enrol-upload", "capture", "confirm-duplicate", "confirm-delete"].forEach(function (id) {
    const form = document.getElementById(id);
    if (form) guardSubmit(form);
  });
});
