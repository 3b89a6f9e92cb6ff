"""Client certificates: every proxy's format, trust, events, hostile input."""

from __future__ import annotations

import base64
import datetime
import hashlib
import subprocess
from urllib.parse import quote

import pytest
from auditlog.models import LogEntry
from django.test import RequestFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gql_audit import mtls
from gql_audit.models import RequestReads, SecurityEvent
from tests.certs import NOW, make_ca, make_leaf
from tests.conftest import codes, make_token, post_graphql, sized

CA = make_ca()
OTHER_CA = make_ca("another CA")
LEAF = make_leaf(CA)
EXPIRED = make_leaf(
    CA, "old-service", not_before=NOW - datetime.timedelta(days=10), not_after=NOW - datetime.timedelta(days=1)
)


def nginx_escaped(pem: str) -> str:
    """What nginx's $ssl_client_escaped_cert holds: the PEM, URL-escaped."""
    return quote(pem, safe="")


def assert_leaf(cert, verify="SUCCESS", source="nginx", issued=LEAF):
    assert cert.subject == issued.cert.subject.rfc4514_string()
    assert "O=gql_audit tests\\, Lda" in cert.subject  # escaped comma, not split
    assert cert.issuer == CA.cert.subject.rfc4514_string()
    assert cert.serial == mtls.serial_hex(issued.cert.serial_number)
    assert cert.fingerprint_sha256 == hashlib.sha256(issued.der).hexdigest()
    assert cert.dns_names == ("billing-service.internal",)
    assert cert.uris == ("spiffe://example.org/billing-service",)
    assert cert.emails == ("billing-service@example.org",)
    assert cert.not_before.tzinfo is not None and cert.not_after > cert.not_before
    assert (cert.verify, cert.verified, cert.source) == (verify, verify == "SUCCESS", source)


@pytest.mark.parametrize("serial", [0x4827, 0x482, 0x80, 0x1, 0x0ABCDEF, 2**159 - 1])
def test_serial_is_printed_like_openssl(tmp_path, serial):
    issued = make_leaf(CA, serial=serial)
    path, _ = issued.write(tmp_path, "leaf")
    out = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-serial"], check=True, capture_output=True, text=True
    ).stdout
    expected = out.strip().split("=", 1)[1]
    assert mtls.ClientCertificate.from_pem(issued.pem, verify="SUCCESS", source="nginx").serial == expected


def test_serial_and_fingerprint_match_openssl(tmp_path):
    path, _ = LEAF.write(tmp_path, "leaf")
    out = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-serial", "-fingerprint", "-sha256"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fields = dict(line.split("=", 1) for line in out.strip().splitlines())
    cert = mtls.ClientCertificate.from_pem(LEAF.pem, verify="SUCCESS", source="nginx")
    assert cert.serial == fields["serial"]
    assert cert.fingerprint_sha256 == fields["sha256 Fingerprint"].replace(":", "").lower()


def test_nginx():
    headers = {"X-SSL-Client-Cert": nginx_escaped(LEAF.pem), "X-SSL-Client-Verify": "SUCCESS"}
    assert_leaf(mtls.parse_nginx(headers, "X-SSL-Client-Cert", "X-SSL-Client-Verify"))
    failed = {**headers, "X-SSL-Client-Verify": "FAILED:certificate has expired"}
    assert mtls.parse_nginx(failed, "X-SSL-Client-Cert", "X-SSL-Client-Verify").verified is False
    assert mtls.parse_nginx({"X-SSL-Client-Verify": "NONE"}, "X-SSL-Client-Cert", "X-SSL-Client-Verify") is None
    # '+' in base64 must survive: unquote, not unquote_plus.
    plus = "+" in LEAF.pem.split("\n", 1)[1]
    assert not plus or mtls.parse_nginx(headers, "X-SSL-Client-Cert", "X-SSL-Client-Verify")


@pytest.mark.parametrize(
    "value",
    [
        nginx_escaped(LEAF.pem) + "," + nginx_escaped(LEAF.pem),  # a duplicate header, merged
        nginx_escaped(LEAF.pem + LEAF.pem),  # two certificates
        "not-a-certificate",
        nginx_escaped(LEAF.pem.replace("M", "N", 3)),  # corrupted body
        "%E0%A4%A",  # broken escape
        "A" * (mtls.MAX_HEADER_LENGTH + 1),
    ],
)
def test_nginx_garbage(value):
    with pytest.raises(mtls.CertificateError):
        mtls.parse_nginx({"X-SSL-Client-Cert": value}, "X-SSL-Client-Cert", "X-SSL-Client-Verify")


def xfcc_element(issued, **extra):
    cert = mtls.ClientCertificate.from_pem(issued.pem, verify="SUCCESS", source="envoy")
    parts = [
        f"Hash={cert.fingerprint_sha256}",
        f'Cert="{quote(issued.pem, safe="")}"',
        f'Subject="{cert.subject}"',
        "URI=spiffe://example.org/billing-service",
        "DNS=billing-service.internal",
    ]
    parts += [f"{k}={v}" for k, v in extra.items()]
    return ";".join(parts)


def test_envoy_takes_the_nearest_hop():
    other = make_leaf(CA, "edge-proxy")
    value = xfcc_element(other) + "," + xfcc_element(LEAF, By="spiffe://example.org/gateway")
    assert_leaf(mtls.parse_envoy({"x-forwarded-client-cert": value}), source="envoy")
    # quoted values with commas, semicolons and escaped quotes are one value
    tricky = 'By="spiffe://a;b,c";Subject="CN=\\"x\\", O=y";' + xfcc_element(LEAF)
    assert_leaf(mtls.parse_envoy({"x-forwarded-client-cert": tricky}), source="envoy")


@pytest.mark.parametrize(
    "value",
    ['Cert="unterminated', "Hash=abc", "justtext", 'Hash=00;Cert="' + quote(LEAF.pem, safe="") + '"'],
)
def test_envoy_garbage(value):
    with pytest.raises(mtls.CertificateError):
        mtls.parse_envoy({"x-forwarded-client-cert": value})


def test_traefik_alb_rfc9440_environ():
    der64 = base64.b64encode(LEAF.der).decode()
    chain = quote(der64 + "," + base64.b64encode(CA.der).decode(), safe="")
    assert_leaf(mtls.parse_traefik({"X-Forwarded-Tls-Client-Cert": chain}), source="traefik")
    alb = {
        "X-Amzn-Mtls-Clientcert-Leaf": quote(LEAF.pem, safe=""),
        "X-Amzn-Mtls-Clientcert-Serial-Number": format(LEAF.cert.serial_number, "X"),
    }
    assert_leaf(mtls.parse_aws_alb(alb), source="aws-alb")
    passthrough = mtls.parse_aws_alb({"X-Amzn-Mtls-Clientcert": quote(LEAF.pem + CA.pem, safe="")})
    assert_leaf(passthrough, verify="PASSTHROUGH", source="aws-alb")
    with pytest.raises(mtls.CertificateError, match="Serial"):
        mtls.parse_aws_alb({**alb, "X-Amzn-Mtls-Clientcert-Serial-Number": "0BAD"})
    assert_leaf(mtls.parse_rfc9440({"Client-Cert": f":{der64}:"}), source="rfc9440")
    for bad in [der64, f":{der64}", f":{der64}:x:", ":!!!:"]:
        with pytest.raises(mtls.CertificateError):
            mtls.parse_rfc9440({"Client-Cert": bad})
    assert_leaf(mtls.parse_environ({"SSL_CLIENT_CERT": LEAF.pem, "SSL_CLIENT_VERIFY": "SUCCESS"}), source="environ")


HOSTILE = st.one_of(
    st.text(max_size=400),
    st.text(alphabet='%:;,="\\-ABCMIQab01+/ \n', max_size=400),
    st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()),
    st.binary(max_size=300).map(lambda b: quote(b, safe="")),
)
FUZZ = settings(max_examples=sized(10_000, 400), deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.mark.parametrize(
    ("name", "parse"),
    [
        ("nginx", lambda v: mtls.parse_nginx({"X-SSL-Client-Cert": v}, "X-SSL-Client-Cert", "X-SSL-Client-Verify")),
        ("envoy", lambda v: mtls.parse_envoy({"x-forwarded-client-cert": v})),
        ("traefik", lambda v: mtls.parse_traefik({"X-Forwarded-Tls-Client-Cert": v})),
        ("aws-alb", lambda v: mtls.parse_aws_alb({"X-Amzn-Mtls-Clientcert-Leaf": v})),
        ("rfc9440", lambda v: mtls.parse_rfc9440({"Client-Cert": v})),
        ("environ", lambda v: mtls.parse_environ({"SSL_CLIENT_CERT": v})),
    ],
)
def test_fuzz_parsers_never_raise_anything_else(name, parse):
    @FUZZ
    @given(HOSTILE)
    def check(value):
        try:
            result = parse(value)
        except mtls.CertificateError:
            return
        assert result is None  # garbage never becomes a certificate

    check()


# --- in the middleware ---------------------------------------------------------------

NGINX = {"CLIENT_CERT_SOURCE": "nginx", "TRUSTED_PROXIES": ["10.0.0.0/8"]}


def cert_headers(issued=LEAF, verify="SUCCESS"):
    return {"X-SSL-Client-Cert": nginx_escaped(issued.pem), "X-SSL-Client-Verify": verify}


@pytest.mark.django_db
def test_trusted_proxy_certificate_on_entries_and_events(client, users, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, **NGINX}
    post_graphql(
        client,
        "{ publicDocuments { title } me { username } }",
        headers={**cert_headers(), "X-Request-ID": "c1"},
        REMOTE_ADDR="10.1.2.3",
    )
    summary = RequestReads.objects.get(request_id="c1").context["client_cert"]
    assert (
        summary["fingerprint_sha256"]
        == mtls.ClientCertificate.from_pem(LEAF.pem, verify="", source="").fingerprint_sha256
    )
    assert summary["verify"] == "SUCCESS" and summary["source"] == "nginx"
    event = SecurityEvent.objects.get(request_id="c1")  # the unauthenticated `me`
    assert event.details["client_cert"]["serial"] == summary["serial"]


@pytest.mark.django_db
def test_untrusted_peer_headers_are_ignored_and_recorded(client, users, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, **NGINX}
    post_graphql(
        client,
        "{ publicDocuments { title } }",
        headers={**cert_headers(), "X-Request-ID": "c2"},
        REMOTE_ADDR="203.0.113.5",
    )
    # From an untrusted peer the request id sent is kept apart, never used as the id.
    event = SecurityEvent.objects.get(details__client_request_id="c2")
    assert event.kind == "cert_header_untrusted" and event.details["peer"] == "203.0.113.5"
    reads = RequestReads.objects.get(request_id=event.request_id)
    assert reads.context["client_cert"] is None and reads.context["client_request_id"] == "c2"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (cert_headers(EXPIRED), "the certificate has expired"),
        (cert_headers(LEAF, "FAILED:unable to get local issuer certificate"), "did not verify"),
        ({"X-SSL-Client-Cert": "garbage", "X-SSL-Client-Verify": "SUCCESS"}, "PEM"),
    ],
)
def test_bad_certificates_are_cert_failed_and_still_served(client, users, settings, headers, message):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, **NGINX}
    response = post_graphql(
        client, "{ publicDocuments { title } }", headers={**headers, "X-Request-ID": "c3"}, REMOTE_ADDR="10.0.0.9"
    )
    assert response.status_code == 200 and len(response.json()["data"]["publicDocuments"]) == 3
    event = SecurityEvent.objects.get(request_id="c3", kind="cert_failed")
    assert message in event.message


@pytest.mark.django_db
def test_require_client_cert_for_private_fields(client, users, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, **NGINX, "REQUIRE_CLIENT_CERT": True}
    query = "{ serviceStatus { ok } me { username } }"
    body = post_graphql(client, query, token=make_token("alice"), REMOTE_ADDR="10.0.0.9").json()
    assert body["data"]["serviceStatus"] == {"ok": True}
    assert codes(body) == {("me",): "CLIENT_CERT_REQUIRED"}
    body = post_graphql(
        client, query, token=make_token("alice"), headers=cert_headers(EXPIRED), REMOTE_ADDR="10.0.0.9"
    ).json()
    assert codes(body) == {("me",): "CLIENT_CERT_REQUIRED"}
    body = post_graphql(client, query, token=make_token("alice"), headers=cert_headers(), REMOTE_ADDR="10.0.0.9").json()
    assert body == {"data": {"serviceStatus": {"ok": True}, "me": {"username": "alice"}}}


def service_of(cert):
    return cert.uris[0].rsplit("/", 1)[-1] if cert.uris else None


@pytest.mark.django_db
def test_certificate_identity_recorded_beside_the_actor(client, users, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, **NGINX, "CLIENT_CERT_IDENTITY": "tests.test_mtls.service_of"}
    post_graphql(
        client,
        'mutation { updateProfile(phone: "7") { profile { phone } } }',
        token=make_token("alice"),
        headers={**cert_headers(), "X-Request-ID": "c4"},
        REMOTE_ADDR="10.0.0.9",
    )
    entry = LogEntry.objects.get(cid="c4", action=LogEntry.Action.UPDATE)
    assert entry.actor_id == users["alice"].pk
    assert entry.additional_data["gql_audit"]["client_cert"]["identity"] == "billing-service"


def test_environ_source_needs_no_proxy(settings):
    settings.GQL_AUDIT = {"CLIENT_CERT_SOURCE": "environ"}
    request = RequestFactory().get(
        "/", SSL_CLIENT_CERT=LEAF.pem, SSL_CLIENT_VERIFY="SUCCESS", REMOTE_ADDR="203.0.113.5"
    )
    assert_leaf(mtls.read_client_certificate(request), source="environ")
    # A client header can never pose as the server's variable.
    spoof = RequestFactory().get("/", HTTP_SSL_CLIENT_CERT=LEAF.pem)
    assert mtls.read_client_certificate(spoof) is None
