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

// The dashboard's door state, camera state and latest events: fetch /dashboard/state every
// data-refresh-ms and update them in place (the events' HTML is rendered by the door).
const CAMERA_WORDS = { up: "up", down: "down", none: "not connected" };

function startStatePoll(list) {
  const url = list.dataset.stateUrl;
  const period = parseInt(list.dataset.refreshMs || "2000", 10);
  const door = document.getElementById("door-state");
  const camera = document.getElementById("camera-state");
  let latest = list.dataset.latest || "";
  let busy = false;

  function show(state) {
    if (door && door.textContent !== state.door) {
      door.textContent = state.door;
      door.className = "state-" + state.door.replace(/ /g, "-");
    }
    if (camera) {
      camera.textContent = CAMERA_WORDS[state.camera] || state.camera;
      camera.className = "state-camera-" + state.camera;
    }
    if ((state.latest || "") !== latest) {
      list.innerHTML = state.events_html;
      latest = state.latest || "";
    }
  }

  function poll() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(url, { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.redirected && response.url.indexOf("/login") !== -1) {
          window.location.reload();
          return null;
        }
        return response.ok ? response.json() : null;
      })
      .then(function (state) { if (state) show(state); })
      .catch(function () {})
      .finally(function () { busy = false; });
  }

  poll();
  window.setInterval(poll, period);
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
  const recent = document.getElementById("recent-events");
  if (recent && recent.dataset.stateUrl) startStatePoll(recent);
  ["enrol-upload", "capture", "confirm-duplicate", "confirm-delete"].forEach(function (id) {
    const form = document.getElementById(id);
    if (form) guardSubmit(form);
  });
});
