"""The example service's GraphiQL page: every file from the service, each checked by its integrity hash."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from django.contrib.staticfiles import finders

pytestmark = pytest.mark.django_db


def test_graphiql_loads_nothing_from_elsewhere_and_sends_a_strict_csp(client):
    response = client.get("/graphql/", HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    page = response.content.decode()
    assert "<script>" not in page.replace('<script type="application/json"', "")  # no inline code
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(url.startswith("/static/") or url == "data:," for url in sources), sources
    # Each vendored file matches the hash the page asks the browser to check.
    tags = re.findall(r'(?:src|href)="/static/([^"]+)"(?: rel="[^"]*")?\s+integrity="([^"]+)"', page)
    tags += [(m[1], m[0]) for m in re.findall(r'integrity="([^"]+)"[^>]*(?:src|href)="/static/([^"]+)"', page)]
    assert len(tags) == 8, tags
    for path, integrity in tags:
        found = finders.find(path)
        assert found, path
        with open(found, "rb") as file:
            digest = base64.b64encode(hashlib.sha256(file.read()).digest()).decode()
        assert integrity == f"sha256-{digest}", path


def test_seed_demo_makes_an_auditor_who_may_only_view(client):
    from django.core.management import call_command

    call_command("seed_demo", quiet=True)
    call_command("seed_demo", quiet=True)  # idempotent
    assert client.login(username="auditor", password="auditor-password")
    assert client.get("/admin/gql_audit/securityevent/").status_code == 200
    assert client.get("/admin/auditlog/logentry/").status_code == 200
    from example_service.models import Document

    document = Document.objects.first()
    page = client.get(f"/admin/example_service/document/{document.pk}/change/")
    assert page.status_code == 200 and b"access-history/" in page.content and b'name="_save"' not in page.content
    assert client.get("/admin/example_service/document/add/").status_code == 403
