// Starts Swagger UI on the API's OpenAPI document. A file of its own, not an
// inline script, so that the page's Content-Security-Policy needs no
// 'unsafe-inline'. The document's URL is relative to this page (/api/docs/),
// so the page also works under a path prefix added by a gateway.
window.ui = SwaggerUIBundle({
  url: new URL("../v1/openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui",
  deepLinking: true,
  // Swagger UI would otherwise send the document to validator.swagger.io.
  validatorUrl: null,
  // Bearer tokens typed into "Authorize" are not kept in localStorage.
  persistAuthorization: false,
});
