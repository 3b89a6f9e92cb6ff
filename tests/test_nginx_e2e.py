"""End to end: a real nginx terminating mutual TLS in front of the example service.

nginx (Debian's package) verifies client certificates against a CA made here
(``ssl_verify_client optional``), forwards ``$ssl_client_escaped_cert`` and
``$ssl_client_verify``, and proxies to the example service under Django's
threaded WSGI live server. Requests come from httpx over TLS with real client
certificates.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from gql_audit.models import RequestReads, SecurityEvent
from gql_audit.mtls import serial_hex
from tests.certs import NOW, make_ca, make_leaf
from tests.conftest import make_token

pytestmark = [pytest.mark.server, pytest.mark.nginx, pytest.mark.django_db(transaction=True)]

CONFIG = """
{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {dir}/server.crt;
        ssl_certificate_key {dir}/server.key;
        ssl_client_certificate {dir}/ca.crt;
        ssl_verify_client optional;
        # A certificate that fails verification still reaches the application,
        # which records it; the proxy could refuse it here instead.
        error_page 495 = @unverified;

        location / {{
            include {dir}/proxy.conf;
        }}
        location @unverified {{
            include {dir}/proxy.conf;
        }}
    }}
}}
"""

PROXY = """
proxy_pass http://{upstream};
proxy_set_header Host $host;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
# Always set, so a client's own header of the same name never passes.
proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
proxy_set_header X-SSL-Client-Verify $ssl_client_verify;
"""


def nginx_binary():
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is required under CI (.ci/run installs Debian's nginx)")
        pytest.skip("needs nginx: apt-get install nginx (.ci/run installs it under CI)")
    return found


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca, other_ca = make_ca(), make_ca("an unrelated CA")
    ca.write(directory, "ca")
    make_leaf(ca, "localhost", server=True).write(directory, "server")
    clients = {
        "valid": make_leaf(ca, "billing-service"),
        "expired": make_leaf(
            ca, "old-service", not_before=NOW - datetime.timedelta(days=9), not_after=NOW - datetime.timedelta(days=2)
        ),
        "other-ca": make_leaf(other_ca, "stranger"),
    }
    paths = {name: issued.write(directory, f"client-{name}") for name, issued in clients.items()}
    return directory, clients, paths


@pytest.fixture
def nginx(pki, live_server, settings):
    binary = nginx_binary()
    directory, _, _ = pki
    run_dir = directory / f"run-{free_port()}"
    run_dir.mkdir()
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copy(directory / name, run_dir / name)
    port = free_port()
    upstream = live_server.url.removeprefix("http://")
    (run_dir / "proxy.conf").write_text(PROXY.format(upstream=upstream))
    user = "user root;" if os.geteuid() == 0 else ""
    (run_dir / "nginx.conf").write_text(CONFIG.format(user=user, dir=run_dir, port=port))
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "CLIENT_CERT_SOURCE": "nginx", "TRUSTED_PROXIES": ["127.0.0.1/32"]}
    process = subprocess.Popen(
        [
            binary,
            "-p",
            str(run_dir),
            "-c",
            str(run_dir / "nginx.conf"),
            "-e",
            str(run_dir / "error.log"),
            "-g",
            "daemon off;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"nginx did not start: {process.stderr.read().decode(errors='replace')}")
            time.sleep(0.05)
    yield f"https://localhost:{port}"
    process.terminate()
    process.wait(timeout=15)


def query(base, pki, client_cert, *, headers=None, request_id):
    directory, _, paths = pki
    tls = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    if client_cert:
        tls.load_cert_chain(*(str(p) for p in paths[client_cert]))
    with httpx.Client(verify=tls, timeout=30) as client:
        response = client.post(
            f"{base}/graphql/",
            json={"query": "{ serviceStatus { ok } documents { title } }"},
            headers={"Authorization": f"JWT {make_token('alice')}", "X-Request-ID": request_id, **(headers or {})},
        )
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-ID"] == request_id
    return response.json()


def fingerprint(issued):
    return hashlib.sha256(issued.der).hexdigest()


def cert_on_reads(request_id):
    reads = RequestReads.objects.get(request_id=request_id)
    assert reads.keys
    return reads.context["client_cert"]


def test_valid_certificate(nginx, pki, users):
    _, clients, _ = pki
    body = query(nginx, pki, "valid", request_id="e2e-valid")
    assert body["data"]["serviceStatus"] == {"ok": True} and body["data"]["documents"]
    assert list(SecurityEvent.objects.filter(request_id="e2e-valid").values("kind", "details")) == []
    cert = cert_on_reads("e2e-valid")
    assert cert["verify"] == "SUCCESS" and cert["source"] == "nginx"
    assert cert["fingerprint_sha256"] == fingerprint(clients["valid"])
    assert cert["serial"] == serial_hex(clients["valid"].cert.serial_number)
    assert "CN=billing-service" in cert["subject"]
    assert list(SecurityEvent.objects.filter(request_id="e2e-valid").values("kind", "details")) == []


@pytest.mark.parametrize(("name", "verify"), [("expired", "FAILED:certificate has expired"), ("other-ca", "FAILED:")])
def test_failing_certificates_are_recorded(nginx, pki, users, name, verify):
    _, clients, _ = pki
    body = query(nginx, pki, name, request_id=f"e2e-{name}")
    assert body["data"]["serviceStatus"] == {"ok": True}  # the proxy let it through; the app served it
    cert = cert_on_reads(f"e2e-{name}")
    assert cert["verify"].startswith(verify) and cert["fingerprint_sha256"] == fingerprint(clients[name])
    event = SecurityEvent.objects.get(request_id=f"e2e-{name}", kind="cert_failed")
    assert event.details["client_cert"]["verify"].startswith(verify)


def test_no_certificate(nginx, pki, users):
    query(nginx, pki, None, request_id="e2e-none")
    assert cert_on_reads("e2e-none") is None
    assert not SecurityEvent.objects.filter(request_id="e2e-none").exists()


def test_forged_headers_cannot_override_nginx(nginx, pki, users):
    _, clients, _ = pki
    forged = quote(clients["valid"].pem, safe="")
    spoof = {"X-SSL-Client-Cert": forged, "X-SSL-Client-Verify": "SUCCESS", "X_SSL_Client_Cert": forged}
    # Without a certificate of its own, the client's headers are replaced by nginx's empty values.
    query(nginx, pki, None, headers=spoof, request_id="e2e-forged")
    assert cert_on_reads("e2e-forged") is None
    # With a failing certificate, it cannot claim a verified one.
    query(nginx, pki, "other-ca", headers=spoof, request_id="e2e-forged-2")
    cert = cert_on_reads("e2e-forged-2")
    assert cert["verify"].startswith("FAILED:") and cert["fingerprint_sha256"] == fingerprint(clients["other-ca"])
