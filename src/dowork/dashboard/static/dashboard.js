// dowork dashboard: live refresh of marked regions and confirmations. No dependencies.
(function () {
  "use strict";

  function refresh(region) {
    var url = region.getAttribute("data-refresh");
    var every = parseInt(region.getAttribute("data-every"), 10) || 2000;
    function tick() {
      if (document.hidden) { return setTimeout(tick, every); }
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { region.innerHTML = html; } })
        .catch(function () { /* the next tick tries again */ })
        .then(function () { setTimeout(tick, every); });
    }
    setTimeout(tick, every);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refresh);
  });

  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
})();
