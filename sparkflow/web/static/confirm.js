// Forms with data-confirm ask before they submit (a static script: the Content-Security-Policy allows no inline
// handlers).
(function () {
  "use strict";
  document.addEventListener("submit", function (event) {
    var text = event.target.dataset && event.target.dataset.confirm;
    if (text && !window.confirm(text)) event.preventDefault();
  });
})();
