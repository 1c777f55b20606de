// The API docs page: Swagger UI (served from the fastapi-offline package) on the server's OpenAPI document.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  // validatorUrl null: no badge fetched from validator.swagger.io (offline, and the CSP allows own images only)
  window.SwaggerUIBundle({ url: root.dataset.openapiUrl, dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null });
})();
