// bzzz web view: live updates for server-rendered pages. No framework, no build step.
// The page works without this file; with it, <main> is refetched (as a fragment) when the
// daemon's event stream names a kind the page shows (its data-live), at most every 250 ms.
(function () {
  "use strict";
  var main = document.getElementById("live");
  var conn = document.getElementById("conn");
  if (!main || !window.EventSource || !window.fetch) return;

  var wanted = {};  // kind -> true (any event of it) or {type: true}
  (main.getAttribute("data-live") || "").split(/\s+/).forEach(function (token) {
    if (!token) return;
    var parts = token.split(":");
    if (parts.length === 1) wanted[parts[0]] = true;
    else if (wanted[parts[0]] !== true) {
      wanted[parts[0]] = wanted[parts[0]] || {};
      wanted[parts[0]][parts[1]] = true;
    }
  });

  var MIN_GAP = 250;
  var last = 0, timer = null, busy = false, dirty = false, lastId = "";

  function show(state, text) {
    if (!conn) return;
    conn.setAttribute("data-state", state);
    conn.textContent = text;
  }

  function matches(kind, payload) {
    var want = wanted[kind];
    if (kind === "resync") return true;
    if (want === true) return true;
    if (!want) return false;
    var type = payload && payload.data && payload.data.type;
    return !!(type && want[type]);
  }

  function schedule() {
    dirty = true;
    if (timer || busy) return;
    var wait = Math.max(0, last + MIN_GAP - Date.now());
    timer = setTimeout(refresh, wait);
  }

  function remember() {
    var active = document.activeElement, kept = null;
    if (active && active !== main && main.contains(active)) {
      kept = { id: active.id, href: active.getAttribute("href"), text: active.textContent };
      if ("value" in active && active.id) {
        kept.value = active.value;
        try { kept.start = active.selectionStart; kept.end = active.selectionEnd; } catch (e) {}
      }
    }
    var lefts = [];
    main.querySelectorAll(".scroll").forEach(function (box) { lefts.push(box.scrollLeft); });
    return { focus: kept, x: window.scrollX, y: window.scrollY, lefts: lefts };
  }

  function restore(state) {
    main.querySelectorAll(".scroll").forEach(function (box, i) {
      if (i < state.lefts.length) box.scrollLeft = state.lefts[i];
    });
    window.scrollTo(state.x, state.y);
    var kept = state.focus;
    if (!kept) return;
    var target = kept.id ? document.getElementById(kept.id) : null;
    if (!target && kept.href) {
      var links = main.querySelectorAll("a[href]");
      for (var i = 0; i < links.length; i++) {
        if (links[i].getAttribute("href") === kept.href && links[i].textContent === kept.text) {
          target = links[i];
          break;
        }
      }
    }
    if (!target) return;
    if (kept.value !== undefined && "value" in target) {
      target.value = kept.value;
      try { target.setSelectionRange(kept.start, kept.end); } catch (e) {}
    }
    target.focus({ preventScroll: true });
  }

  function refresh() {
    timer = null;
    if (document.hidden) return;  // dirty stays set: refreshed when shown again
    dirty = false;
    busy = true;
    last = Date.now();
    fetch(window.location.href, {
      headers: { "X-Bzzz-Fragment": "1" },
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (answer) {
      if (!answer.ok && answer.status !== 404) throw new Error("HTTP " + answer.status);
      return answer.text();
    }).then(function (html) {
      var state = remember();
      main.innerHTML = html;
      restore(state);
      main.setAttribute("data-updated", lastId);
    }).catch(function () {
      show("reconnecting", "reconnecting…");
    }).then(function () {
      busy = false;
      if (dirty) schedule();
    });
  }

  var broken = false;
  var source = new EventSource("/api/events");
  source.onopen = function () {
    show("live", "live");
    if (broken) schedule();  // what happened meanwhile
    broken = false;
  };
  source.onerror = function () {
    broken = true;
    show("reconnecting", "reconnecting…");
  };
  function onEvent(event) {
    var payload = null;
    try { payload = JSON.parse(event.data); } catch (e) { return; }
    if (event.lastEventId) lastId = event.lastEventId;
    if (matches(event.type, payload)) schedule();
  }
  Object.keys(wanted).concat(["resync"]).forEach(function (kind) {
    source.addEventListener(kind, onEvent);
  });
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && dirty) schedule();
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();
