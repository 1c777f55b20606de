// Live tail of a task instance's log: poll /ti/<id>/log with the byte offset the last answer gave, append the new
// lines, and update the state badge and the Spark progress bar from the same answer. Stops when the try is over.
(function () {
  "use strict";
  var pre = document.getElementById("log-content");
  if (!pre) return;
  var offset = 0, status = document.getElementById("log-status"), base = pre.dataset.src, startState = pre.dataset.state;
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
    fetch(base + "&offset=" + offset, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (d) {
        if (d.content) {
          var stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
          pre.appendChild(document.createTextNode(d.content));
          if (stick) pre.scrollTop = pre.scrollHeight;
        }
        offset = d.offset;
        setProgress(d.progress);
        var badge = document.getElementById("ti-state");
        if (badge && badge.dataset.state !== d.state) { badge.textContent = d.state; badge.dataset.state = d.state; }
        if (d.spark_app_id) { var app = document.getElementById("spark-app-id"); if (app) app.textContent = d.spark_app_id; }
        if (d.done) {
          status.textContent = "(complete)";
          var active = ["running", "queued", "scheduled", "none", "up_for_retry", "up_for_reschedule"];
          if (active.indexOf(startState) >= 0 && active.indexOf(d.state) < 0) {
            setTimeout(function () { window.location.reload(); }, 800);  // show the final metrics and tries
          } else if (active.indexOf(d.state) >= 0) {
            status.textContent = "(waiting for the task to start)"; setTimeout(poll, 2000);
          }
          return;
        }
        status.textContent = "(following live)";
        setTimeout(poll, 1000);
      })
      .catch(function (e) { status.textContent = "(log unavailable: " + e + ")"; setTimeout(poll, 5000); });
  }
  poll();
})();
