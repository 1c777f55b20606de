// Live tail of a task instance's log: the first call asks the API's log endpoint for the log's last bytes, later
// calls continue from the offset the last answer gave; each answer also carries the state and the Spark progress.
// Which states are finished comes from the page (sparkflow.state.TASK_TERMINAL), not from this file.
(function () {
  "use strict";
  var pre = document.getElementById("log-content");
  if (!pre) return;
  var offset = null, status = document.getElementById("log-status"), base = pre.dataset.src;
  var startState = pre.dataset.state, finished = pre.dataset.finishedStates.split(" ");
  function isFinished(state) { return finished.indexOf(state) >= 0; }
  function setProgress(p) {
    if (!p) return;
    var section = document.getElementById("spark"); if (section) section.hidden = false;
    var fill = document.getElementById("spark-fill"), text = document.getElementById("spark-text");
    var frac = p.tasks_total ? p.tasks_done / p.tasks_total : 0;
    if (fill) fill.style.width = (frac * 100).toFixed(1) + "%";
    if (text) text.textContent = "jobs " + p.jobs_done + "/" + p.jobs_total + " · tasks " + p.tasks_done + "/" + p.tasks_total +
      (p.tasks_failed ? " · failed tasks " + p.tasks_failed : "");
    var list = document.getElementById("spark-stages");
    if (list) {
      list.textContent = "";
      (p.active_stages || []).forEach(function (s) {
        var li = document.createElement("li");
        li.textContent = "stage " + s.stage_id + " " + s.name + ": " + s.tasks_done + "/" + s.tasks_total;
        list.appendChild(li);
      });
    }
  }
  function poll() {
    var query = offset === null ? "&tail=" + pre.dataset.tail : "&offset=" + offset;
    fetch(base + query, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (d) {
        if (offset === null && d.start > 0) {
          pre.appendChild(document.createTextNode("… " + d.start + " earlier bytes of this log are not shown …\n"));
        }
        if (d.content) {
          var stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
          pre.appendChild(document.createTextNode(d.content));
          if (stick) pre.scrollTop = pre.scrollHeight;
        }
        var more = d.offset < d.size;  // a chunk of a long log: fetch the next one at once
        offset = d.offset;
        setProgress(d.progress);
        var badge = document.getElementById("ti-state");
        if (badge && badge.dataset.state !== d.state) { badge.textContent = d.state; badge.dataset.state = d.state; }
        if (d.spark_app_id) { var app = document.getElementById("spark-app-id"); if (app) app.textContent = d.spark_app_id; }
        if (d.done) {
          status.textContent = "(complete)";
          if (!isFinished(startState) && isFinished(d.state)) {
            setTimeout(function () { window.location.reload(); }, 800);  // show the final metrics and tries
          } else if (!isFinished(d.state)) {
            status.textContent = "(waiting for the task to start)"; setTimeout(poll, 2000);
          }
          return;
        }
        status.textContent = "(following live)";
        setTimeout(poll, more ? 0 : 1000);
      })
      .catch(function (e) { status.textContent = "(log unavailable: " + e + ")"; setTimeout(poll, 5000); });
  }
  poll();
})();
