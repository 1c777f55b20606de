// Keeps the grid of the DAG page current while a run is active: fetch the server-rendered fragment and swap it.
(function () {
  "use strict";
  function poll() {
    var grid = document.getElementById("grid");
    if (!grid) return;
    var wasActive = grid.dataset.active === "true";
    fetch(grid.dataset.src, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var holder = document.createElement("div");
        holder.innerHTML = html;
        var fresh = holder.querySelector("#grid");
        if (fresh) grid.replaceWith(fresh);
        var nowActive = fresh && fresh.dataset.active === "true";
        if (wasActive && !nowActive) { window.location.reload(); return; }  // a run ended: refresh graph and Gantt
        setTimeout(poll, nowActive ? 1500 : 5000);
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  setTimeout(poll, 1500);
})();
