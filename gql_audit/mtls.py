"""Client certificates forwarded by a TLS-terminating proxy.

Each ``CLIENT_CERT_SOURCE`` has a parser turning what that proxy sends into a
:class:`ClientCertificate`, or raising :class:`CertificateError`. Parsers never
look at who sent the headers: ``read_client_certificate`` does, and reads
proxy headers only from ``TRUSTED_PROXIES``. Certificates are parsed with
``cryptography``; names are RFC 4514 strings (a DN is never split on commas).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from django.utils import timezone

from gql_audit.conf import conf
from gql_audit.net import peer_is_trusted

logger = logging.getLogger("gql_audit.mtls")

#: Longer header values are refused unread (a certificate chain is a few kB).
MAX_HEADER_LENGTH = 32 * 1024

SUCCESS = "SUCCESS"


class CertificateError(ValueError):
    """A certificate header that cannot be read: garbled, forged, oversized."""


@dataclass(frozen=True)
class ClientCertificate:
    """The client certificate a TLS-terminating proxy forwarded: ``request.client_cert``.

    ``subject`` and ``issuer`` are RFC 4514 strings, ``serial`` upper-case hex,
    ``fingerprint_sha256`` lower-case hex of the DER; ``dns_names``, ``uris`` and
    ``emails`` come from the subject alternative names; ``not_before`` and
    ``not_after`` are aware datetimes; ``source`` names the proxy format it was
    read from (``"nginx"``, ``"envoy"``...).
    """

    subject: str
    issuer: str
    serial: str
    fingerprint_sha256: str
    dns_names: tuple[str, ...]
    uris: tuple[str, ...]
    emails: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime
    #: The proxy's raw verification result: ``SUCCESS``, ``FAILED:reason``, ``NONE``...
    verify: str
    source: str

    @property
    def verified(self) -> bool:
        """True only for an exact ``SUCCESS`` from the proxy."""
        return self.verify == SUCCESS

    def problem(self, moment: datetime.datetime) -> str | None:
        """Why the certificate is not to be relied on at ``moment``, or None if it is."""
        if not self.verified:
            return f"the proxy did not verify the certificate: {self.verify}"
        if moment < self.not_before:
            return "the certificate is not valid yet"
        if moment > self.not_after:
            return "the certificate has expired"
        return None

    def summary(self) -> dict[str, Any]:
        """What audit records carry."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "fingerprint_sha256": self.fingerprint_sha256,
            "verify": self.verify,
            "source": self.source,
        }

    @classmethod
    def from_der(cls, der: bytes, *, verify: str, source: str) -> ClientCertificate:
        """Parse a DER certificate; raises ``CertificateError`` when it is not one."""
        return cls._load(lambda: x509.load_der_x509_certificate(der), "DER", verify=verify, source=source)

    @classmethod
    def from_pem(cls, pem: str, *, verify: str, source: str) -> ClientCertificate:
        """Parse a PEM certificate; raises ``CertificateError`` when it is not one."""
        return cls._load(
            lambda: x509.load_pem_x509_certificate(pem.encode("ascii")), "PEM", verify=verify, source=source
        )

    @classmethod
    def _load(cls, load: Callable[[], x509.Certificate], form: str, *, verify: str, source: str) -> ClientCertificate:
        try:
            return cls._from_x509(load(), verify=verify, source=source)
        except Exception as exc:  # noqa: BLE001 - any parsing failure is a bad certificate
            raise CertificateError(f"not a {form} certificate: {type(exc).__name__}") from None

    @classmethod
    def _from_x509(cls, cert: x509.Certificate, *, verify: str, source: str) -> ClientCertificate:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns = tuple(san.get_values_for_type(x509.DNSName))
            uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
            emails = tuple(san.get_values_for_type(x509.RFC822Name))
        except x509.ExtensionNotFound:
            dns = uris = emails = ()

        return cls(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            serial=serial_hex(cert.serial_number),
            fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
            dns_names=dns,
            uris=uris,
            emails=emails,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            verify=_clean_verify(verify),
            source=source,
        )


def serial_hex(serial: int) -> str:
    """Upper-case hex in whole bytes, as ``openssl x509 -serial`` prints it (``0482``, not ``482``)."""
    digits = format(serial, "X")
    return digits if len(digits) % 2 == 0 else "0" + digits


_VERIFY_SAFE = re.compile(r"[^\x20-\x7e]")


def _clean_verify(value: str) -> str:
    """The proxy's verify string, printable ASCII, bounded."""
    return _VERIFY_SAFE.sub("?", value.strip())[:200] or "NONE"


def _bounded(value: str | None, name: str) -> str:
    if value is None or not value.strip():
        raise CertificateError(f"{name} is empty")
    if len(value) > MAX_HEADER_LENGTH:
        raise CertificateError(f"{name} is longer than {MAX_HEADER_LENGTH} characters")
    return value.strip()


def _unescape(value: str, name: str) -> str:
    # URL escaping: '+' is base64, never a space, hence unquote, not unquote_plus.
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise CertificateError(f"{name} is not valid URL-escaped text") from None


def _pem_from_escaped(value: str, name: str) -> str:
    pem = _unescape(_bounded(value, name), name)
    if pem.count("-----BEGIN CERTIFICATE-----") != 1:
        raise CertificateError(f"{name} must hold exactly one PEM certificate")
    return pem


def _b64_der(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CertificateError(f"{name} is not base64") from None


# --- one parser per proxy ---------------------------------------------------------

Headers = Mapping[str, str]  # HTTP header name (any case) -> value, as Django's request.headers


def parse_nginx(headers: Headers, cert_header: str, verify_header: str) -> ClientCertificate | None:
    """nginx: ``$ssl_client_escaped_cert`` and ``$ssl_client_verify``."""
    raw = headers.get(cert_header)
    verify = headers.get(verify_header, "NONE")
    if raw is None or raw == "":
        return None
    if "," in raw:  # the escaped PEM has no commas: two headers were merged
        raise CertificateError(f"{cert_header} was sent more than once")
    return ClientCertificate.from_pem(_pem_from_escaped(raw, cert_header), verify=verify, source="nginx")


def split_xfcc(value: str) -> list[dict[str, str]]:
    """Envoy's ``x-forwarded-client-cert``: elements split on commas, pairs on
    semicolons, keys and values on ``=``; double-quoted values may hold all three."""
    elements: list[dict[str, str]] = []
    pairs: dict[str, str] = {}
    key, buf, quoted, in_value, i = "", [], False, False, 0
    while i < len(value):
        char = value[i]
        if quoted:
            if char == "\\" and i + 1 < len(value):
                buf.append(value[i + 1])
                i += 2
                continue
            if char == '"':
                quoted = False
            else:
                buf.append(char)
        elif char == '"' and in_value and not buf:
            quoted = True
        elif char == "=" and not in_value:
            key, buf, in_value = "".join(buf).strip(), [], True
        elif char in ";,":
            if not in_value or not key:
                raise CertificateError("x-forwarded-client-cert has a pair without '='")
            pairs.setdefault(key, "".join(buf).strip())
            key, buf, in_value = "", [], False
            if char == ",":
                elements.append(pairs)
                pairs = {}
        else:
            buf.append(char)
        i += 1
    if quoted:
        raise CertificateError("x-forwarded-client-cert has an unterminated quote")
    if in_value and key:
        pairs.setdefault(key, "".join(buf).strip())
    elif "".join(buf).strip():
        raise CertificateError("x-forwarded-client-cert has a pair without '='")
    if pairs:
        elements.append(pairs)
    return elements


def parse_envoy(headers: Headers) -> ClientCertificate | None:
    """Envoy: the last element of ``x-forwarded-client-cert``, added by the nearest hop."""
    raw = headers.get("x-forwarded-client-cert")
    if raw is None or raw == "":
        return None
    elements = split_xfcc(_bounded(raw, "x-forwarded-client-cert"))
    if not elements:
        raise CertificateError("x-forwarded-client-cert is empty")
    element = {k.lower(): v for k, v in elements[-1].items()}
    if "cert" not in element:
        raise CertificateError("x-forwarded-client-cert carries no Cert (set forward_client_cert_details)")
    cert = ClientCertificate.from_pem(
        _pem_from_escaped(element["cert"], "x-forwarded-client-cert Cert"), verify=SUCCESS, source="envoy"
    )
    expected = element.get("hash", "").lower()
    if expected and expected != cert.fingerprint_sha256:
        raise CertificateError("x-forwarded-client-cert Hash does not match its Cert")
    return cert


def parse_traefik(headers: Headers) -> ClientCertificate | None:
    """Traefik: ``X-Forwarded-Tls-Client-Cert``, URL-escaped base64 DER, chain joined by commas."""
    raw = headers.get("X-Forwarded-Tls-Client-Cert")
    if raw is None or raw == "":
        return None
    leaf = _unescape(_bounded(raw, "X-Forwarded-Tls-Client-Cert"), "X-Forwarded-Tls-Client-Cert").split(",")[0]
    return ClientCertificate.from_der(_b64_der(leaf, "X-Forwarded-Tls-Client-Cert"), verify=SUCCESS, source="traefik")


def parse_aws_alb(headers: Headers) -> ClientCertificate | None:
    """AWS ALB: ``X-Amzn-Mtls-Clientcert-Leaf`` (verify mode) or ``X-Amzn-Mtls-Clientcert`` (passthrough)."""
    leaf = headers.get("X-Amzn-Mtls-Clientcert-Leaf")
    if leaf:
        cert = ClientCertificate.from_pem(
            _pem_from_escaped(leaf, "X-Amzn-Mtls-Clientcert-Leaf"), verify=SUCCESS, source="aws-alb"
        )
        serial = headers.get("X-Amzn-Mtls-Clientcert-Serial-Number", "").strip().upper().lstrip("0")
        if serial and serial != cert.serial.lstrip("0"):
            raise CertificateError("X-Amzn-Mtls-Clientcert-Serial-Number does not match the leaf")
        return cert
    chain = headers.get("X-Amzn-Mtls-Clientcert")
    if not chain:
        return None
    pem = _unescape(_bounded(chain, "X-Amzn-Mtls-Clientcert"), "X-Amzn-Mtls-Clientcert")
    first = pem.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----"
    # Passthrough mode: the load balancer did not verify the certificate.
    return ClientCertificate.from_pem(first, verify="PASSTHROUGH", source="aws-alb")


def parse_rfc9440(headers: Headers) -> ClientCertificate | None:
    """RFC 9440: ``Client-Cert: :<base64 DER>:`` (a structured-field byte sequence)."""
    raw = headers.get("Client-Cert")
    if raw is None or raw == "":
        return None
    value = _bounded(raw, "Client-Cert")
    if len(value) < 3 or value[0] != ":" or value[-1] != ":" or ":" in value[1:-1]:
        raise CertificateError("Client-Cert is not a structured-field byte sequence")
    # The TTRP sends it only for a certificate it validated (RFC 9440, section 2).
    return ClientCertificate.from_der(_b64_der(value[1:-1], "Client-Cert"), verify=SUCCESS, source="rfc9440")


def parse_environ(meta: Mapping[str, Any]) -> ClientCertificate | None:
    """mod_ssl / mod_wsgi: ``SSL_CLIENT_CERT`` and ``SSL_CLIENT_VERIFY`` in the WSGI environ."""
    pem = meta.get("SSL_CLIENT_CERT")
    if not pem:
        return None
    value = _bounded(str(pem), "SSL_CLIENT_CERT")
    return ClientCertificate.from_pem(value, verify=str(meta.get("SSL_CLIENT_VERIFY", "NONE")), source="environ")


#: Source -> (header names it reads, for the trust check).
SOURCE_HEADERS: dict[str, tuple[str, ...]] = {
    "nginx": (),  # the configured pair, see headers_of()
    "envoy": ("x-forwarded-client-cert",),
    "traefik": ("X-Forwarded-Tls-Client-Cert", "X-Forwarded-Tls-Client-Cert-Info"),
    "aws-alb": ("X-Amzn-Mtls-Clientcert-Leaf", "X-Amzn-Mtls-Clientcert"),
    "rfc9440": ("Client-Cert", "Client-Cert-Chain"),
    "environ": (),
}

PARSERS: dict[str, Callable[..., ClientCertificate | None]] = {
    "envoy": parse_envoy,
    "traefik": parse_traefik,
    "aws-alb": parse_aws_alb,
    "rfc9440": parse_rfc9440,
}


# --- reading a request -------------------------------------------------------------

DEFAULT_CERT_HEADER = "X-SSL-Client-Cert"
DEFAULT_VERIFY_HEADER = "X-SSL-Client-Verify"


def nginx_headers() -> tuple[str, str]:
    return (conf.CLIENT_CERT_HEADER or DEFAULT_CERT_HEADER, conf.CLIENT_VERIFY_HEADER or DEFAULT_VERIFY_HEADER)


#: ``report(kind, message=..., details=...)``: where a certificate's problems are told.
Reporter = Callable[..., None]


def _ignore(kind: str, **fields: Any) -> None:
    return None


def read_client_certificate(request: Any, report: Reporter = _ignore) -> ClientCertificate | None:
    """The client certificate the configured proxy forwarded, if it may be believed.

    Proxy headers from a peer outside ``TRUSTED_PROXIES`` are ignored and
    reported (``cert_header_untrusted``). A certificate that cannot be parsed,
    failed the proxy's verification, or is outside its validity period is
    reported (``cert_failed``); the request is still served, the proxy having
    decided access. ``report`` is called as ``record_event`` is (the middleware
    passes it). Never raises.
    """
    source = conf.CLIENT_CERT_SOURCE
    if source is None:
        return None
    try:
        if source == "environ":  # set by the server itself, not by the client
            cert = parse_environ(request.META)
        else:
            names = nginx_headers() if source == "nginx" else SOURCE_HEADERS[source]
            present = [name for name in names if name in request.headers]
            if not present:
                return None
            if not peer_is_trusted(request):
                report(
                    "cert_header_untrusted",
                    message="client certificate headers from a peer outside TRUSTED_PROXIES were ignored",
                    details={"headers": present, "peer": request.META.get("REMOTE_ADDR"), "source": source},
                )
                return None
            if source == "nginx":
                cert = parse_nginx(request.headers, *names)
            else:
                cert = PARSERS[source](request.headers)
    except CertificateError as exc:
        report("cert_failed", message=str(exc), details={"source": source})
        return None
    except Exception as exc:  # noqa: BLE001 - a parser bug must not fail the request
        report("cert_failed", message=f"unreadable certificate ({type(exc).__name__})", details={"source": source})
        return None
    if cert is None:
        return None
    problem = cert.problem(timezone.now())
    if problem is not None:
        report("cert_failed", message=problem, details={"client_cert": cert.summary()})
    return cert


def client_identity(cert: ClientCertificate | None) -> str | None:
    """``CLIENT_CERT_IDENTITY(cert)`` for a verified certificate: the service acting."""
    mapper = conf.CLIENT_CERT_IDENTITY
    if cert is None or mapper is None or not cert.verified:
        return None
    try:
        identity = mapper(cert)
    except Exception:  # noqa: BLE001 - a mapping bug must not fail the request, nor go unseen
        logger.exception("CLIENT_CERT_IDENTITY failed for certificate %s", cert.fingerprint_sha256)
        return None
    return str(identity)[:200] if identity else None
