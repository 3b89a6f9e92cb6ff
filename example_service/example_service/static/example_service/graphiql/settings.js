// graphene-django's GraphiQL settings, read from a JSON element rather than set by an inline script
// (a Content-Security-Policy without 'unsafe-inline' allows this file, not inline code).
window.GRAPHENE_SETTINGS = JSON.parse(document.getElementById("graphene-settings").textContent);
