// shelfwise review: keyboard shortcuts and taxonomy search-as-you-type. No framework, no CDN.
// Product and category text is only ever inserted with textContent, never as HTML.
(function () {
  "use strict";
  var loadedAt = Date.now();

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  function csrfToken() { var m = $('meta[name="csrf-token"]'); return m ? m.getAttribute("content") : ""; }

  // Time spent on an item, sent with every decision.
  $all("form.decision").forEach(function (form) {  // also submits from buttons outside it (form= attribute)
    form.addEventListener("submit", function () {
      var field = form.querySelector('input[name="duration_ms"]');
      if (field) field.value = String(Date.now() - loadedAt);
    });
  });

  // Forms that ask before they act (bulk accept, user changes).
  $all("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(form.getAttribute("data-confirm"))) ev.preventDefault();
    });
  });

  // ---- database unavailable: send a decision that was not saved once more ------------------
  // The 503 page holds the decision (same request id, so it is never recorded twice) and says how long
  // to wait (Retry-After); a resend that fails again waits for the reviewer's click.
  var resend = $("#resend-form[data-resend-after]");
  if (resend) {
    var left = parseInt(resend.getAttribute("data-resend-after"), 10) || 3;
    var countdown = $("#resend-countdown");
    var tick = setInterval(function () {
      left -= 1;
      if (countdown) countdown.textContent = String(Math.max(left, 0));
      if (left <= 0) { clearInterval(tick); resend.submit(); }
    }, 1000);
  }

  // ---- taxonomy search -------------------------------------------------------------------
  var box = $("#taxo-search");
  var results = $("#taxo-results");
  var status = $("#taxo-status");
  var chosenForm = $("#choose-form");
  var chosenId = $("#choose-category-id");
  var chosenLabel = $("#choose-label");
  var active = -1;
  var timer = null;
  var inflight = null;

  function setActive(i) {
    var items = $all("li", results);
    if (!items.length) { active = -1; return; }
    active = (i + items.length) % items.length;
    items.forEach(function (li, k) { li.classList.toggle("active", k === active); });
    items[active].scrollIntoView({ block: "nearest" });
  }

  function pick(li) {
    if (!li || !chosenForm) return;
    $all("li", results).forEach(function (other) { other.classList.toggle("active", other === li); });
    chosenId.value = li.getAttribute("data-id");
    chosenLabel.textContent = li.getAttribute("data-path");
    chosenForm.hidden = false;
    var btn = $("#btn-choose");
    if (btn) { btn.value = "choose:" + chosenId.value; btn.focus(); }
  }

  function render(data) {
    results.textContent = "";
    active = -1;
    data.results.forEach(function (r) {
      var li = document.createElement("li");
      li.setAttribute("data-id", r.id);
      li.setAttribute("data-path", r.path);
      li.setAttribute("role", "option");
      var parts = r.path.split(" > ");
      var leaf = document.createElement("span");
      leaf.className = "leaf";
      leaf.textContent = parts[parts.length - 1];
      li.appendChild(leaf);
      if (parts.length > 1) {
        var anc = document.createElement("span");
        anc.className = "anc";
        anc.textContent = parts.slice(0, -1).join(" \u203a ");
        li.appendChild(anc);
      }
      if (r.localized_path) {
        var loc = document.createElement("span");
        loc.className = "loc";
        loc.textContent = r.localized_path;
        li.appendChild(loc);
      }
      li.addEventListener("mousedown", function (ev) { ev.preventDefault(); pick(li); });
      results.appendChild(li);
    });
    if (status) {
      status.textContent = data.results.length ? data.results.length + " matches (" + data.took_ms + " ms)" : "No category matches.";
    }
  }

  function search() {
    var q = box.value.trim();
    if (!q) { results.textContent = ""; if (status) status.textContent = ""; return; }
    if (inflight) inflight.abort();
    inflight = new AbortController();
    var url = box.getAttribute("data-url") + "?limit=12&q=" + encodeURIComponent(q);
    fetch(url, { signal: inflight.signal, credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (resp) {
        if (resp.status === 401) { window.location.href = "/login?next=" + encodeURIComponent(window.location.pathname); return null; }
        if (!resp.ok) throw new Error("search failed: HTTP " + resp.status);
        return resp.json();
      })
      .then(function (data) { if (data) render(data); })
      .catch(function (err) { if (err.name !== "AbortError" && status) status.textContent = String(err.message || err); });
  }

  if (box && results) {
    box.addEventListener("input", function () {
      if (timer) clearTimeout(timer);
      timer = setTimeout(search, 120);
    });
    box.addEventListener("keydown", function (ev) {
      if (ev.key === "ArrowDown") { ev.preventDefault(); setActive(active + 1); }
      else if (ev.key === "ArrowUp") { ev.preventDefault(); setActive(active - 1); }
      else if (ev.key === "Enter") {
        ev.preventDefault();
        var items = $all("li", results);
        if (items.length) pick(items[active >= 0 ? active : 0]);
      } else if (ev.key === "Escape") { box.blur(); }
    });
  }

  // ---- keyboard shortcuts -----------------------------------------------------------------
  function clickIf(sel) { var el = $(sel); if (el) { el.click(); return true; } return false; }

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var t = ev.target;
    var typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
    if (typing) { if (ev.key === "Escape") t.blur(); return; }
    if (!$("#decision-panel")) return;
    var handled = false;
    switch (ev.key) {
      case "a": handled = clickIf("#btn-accept"); break;
      case "n": case "j": handled = clickIf("#btn-next"); break;
      case "s": handled = clickIf("#btn-skip"); break;
      case "/": if (box) { box.focus(); box.select(); handled = true; } break;
      case "1": case "2": case "3": case "4": case "5":
        handled = clickIf('[data-candidate="' + ev.key + '"]'); break;
    }
    if (handled) ev.preventDefault();
  });

  // Expose the token for scripts that call the JSON API from this page.
  window.shelfwiseCsrf = csrfToken;
})();
