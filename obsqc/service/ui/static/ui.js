/* obsqc operators' pages: self-refreshing regions and auto-submitting filters. No dependencies.
 *
 * A region <el id=... data-live-url=URL data-live-interval=SECONDS data-version=V> is refreshed by
 * fetching URL, taking the element with the same id from the answer and swapping it in when its
 * data-version differs. Rows (data-key) that were not there before are highlighted. A region whose
 * new version has no data-live-url stops polling (an exposure page once everything has arrived).
 */
(function () {
  "use strict";

  var indicator = null;

  function setStatus(ok) {
    if (!indicator) return;
    indicator.hidden = false;
    indicator.classList.toggle("offline", !ok);
    indicator.querySelector(".live-text").textContent = ok ? "live" : "reconnecting";
  }

  function keys(el) {
    var out = {};
    el.querySelectorAll("[data-key]").forEach(function (n) { out[n.getAttribute("data-key")] = true; });
    return out;
  }

  function refresh(el) {
    var url = el.getAttribute("data-live-url");
    return fetch(url, { headers: { "Accept": "text/html" }, cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (text) {
        setStatus(true);
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById(el.id);
        if (!fresh || fresh.getAttribute("data-version") === el.getAttribute("data-version")) return el;
        var before = keys(el);
        fresh = document.importNode(fresh, true);
        el.replaceWith(fresh);
        fresh.querySelectorAll("[data-key]").forEach(function (n) {
          if (!before[n.getAttribute("data-key")]) n.classList.add("is-new");
        });
        document.dispatchEvent(new CustomEvent("obsqc:refreshed", { detail: { id: fresh.id } }));
        return fresh;
      });
  }

  function poll(el) {
    var seconds = parseFloat(el.getAttribute("data-live-interval")) || 5;
    window.setTimeout(function () {
      refresh(el).then(function (current) {
        if (current.getAttribute("data-live-url")) poll(current);
        else if (indicator) indicator.hidden = true;
      }, function () {
        setStatus(false);
        poll(el);
      });
    }, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    indicator = document.getElementById("live-indicator");
    var live = document.querySelectorAll("[data-live-url]");
    if (live.length) setStatus(true);
    live.forEach(poll);
    document.querySelectorAll("form[data-autosubmit] select").forEach(function (s) {
      s.addEventListener("change", function () { s.form.requestSubmit(); });
    });
    document.querySelectorAll("form[data-autosubmit]").forEach(function (f) {
      f.addEventListener("submit", function () {  // no empty parameters in the URL
        f.querySelectorAll("select, input").forEach(function (i) { if (!i.value) i.disabled = true; });
      });
    });
  });

  window.addEventListener("pageshow", function () {  // back from a filtered page: the form is usable again
    document.querySelectorAll("form[data-autosubmit] [disabled]").forEach(function (i) { i.disabled = false; });
  });
})();
