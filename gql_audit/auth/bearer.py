"""``bearer_authenticator``: ``Authorization: Bearer`` JWTs verified with PyJWT.

Configured by ``GQL_AUDIT["JWT"]``; needs neither django-graphql-jwt nor its
mutations, so the access tokens of an OpenID Connect provider (Keycloak, Auth0,
Tunnistamo) work as they are. The token's own header never chooses how it is
verified: its algorithm must be one of ``algorithms``, and the key is the one
configured for that algorithm, or the JWKS key its ``kid`` names, built for that
algorithm only (an HS256 token is never checked against an RSA public key).

Failures raise PyJWT's own exceptions, whose texts say what was wrong
(``ExpiredSignatureError`` is ``TOKEN_EXPIRED``, every other one
``TOKEN_INVALID``), or :class:`~gql_audit.auth.base.AuthUnavailable` when the key
set cannot be read or the setting is unusable: the token was then not judged.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import jwt
from jwt.algorithms import HMACAlgorithm, get_default_algorithms

from gql_audit.auth.base import MAX_TOKEN_LENGTH, AuthUnavailable
from gql_audit.auth.jwks import KeySet, describe, is_url
from gql_audit.conf import SETTINGS_NAME, conf

if TYPE_CHECKING:
    from django.http import HttpRequest

SETTING = f"{SETTINGS_NAME}['JWT']"
KEYS = ("algorithms", "key", "jwks", "issuer", "audience", "leeway", "user_claim", "user_field")
DEFAULTS: dict[str, Any] = {"leeway": "30s", "user_claim": "sub", "user_field": "username"}
#: A JWS in compact form: three base64url segments (the signature's may not be empty).
TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
LEEWAY = re.compile(r"\s*(\d+)\s*([sm]?)\s*")
#: RFC 7518, 3.2: an HMAC key at least as long as the hash it feeds.
HMAC_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
#: The longest claim value looked up as a user's field.
MAX_CLAIM_LENGTH = 255
MAX_CLAIM_INT = 2**63 - 1


@dataclass(frozen=True)
class Problem:
    """What is wrong with ``GQL_AUDIT["JWT"]``; ``topic`` picks the system check's id."""

    #: "setting", "algorithms", "key", "weak_secret", "plain_http", "not_unique"
    topic: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class BearerSettings:
    """``GQL_AUDIT["JWT"]``, read and checked once per settings generation."""

    algorithms: frozenset[str]
    #: With ``key``: algorithm -> the key prepared for it.
    keys: Mapping[str, Any]
    #: With ``jwks``.
    key_set: KeySet | None
    issuer: str | list[str] | None
    audience: str | list[str] | None
    leeway: float
    user_claim: str
    user_field: str

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of ``token``; PyJWT's exceptions when it is not acceptable."""
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise jwt.InvalidAlgorithmError(f"the token's algorithm is not one of {SETTING}['algorithms']")
        key: Any
        if self.key_set is not None:
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise jwt.InvalidTokenError("the token names no key ('kid') of the JWKS")
            key = self.key_set.key(kid, algorithm)
        else:
            key = self.keys[algorithm]
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            issuer=self.issuer,
            audience=self.audience,
            leeway=self.leeway,
            # A token that never expires is not accepted.
            options={"require": ["exp"]},
        )
        return claims

    def user(self, claims: Mapping[str, Any]) -> Any:
        """The active user whose ``user_field`` is the token's ``user_claim``."""
        from django.contrib.auth import get_user_model
        from django.core.exceptions import ValidationError

        value = claims.get(self.user_claim)
        if not _lookup_value(value):
            raise jwt.InvalidTokenError(f"the token's {self.user_claim!r} claim is missing or names no user")
        model = get_user_model()
        named = f"the user whose {self.user_field!r} is the token's {self.user_claim!r} claim"
        try:
            user = model._default_manager.get(**{self.user_field: value})
        except model.DoesNotExist:
            raise jwt.InvalidTokenError(f"{named} does not exist") from None
        except model.MultipleObjectsReturned:
            raise jwt.InvalidTokenError(f"{named} is not one user but several") from None
        except (ValueError, TypeError, ValidationError):
            raise jwt.InvalidTokenError(
                f"the token's {self.user_claim!r} claim cannot be a {self.user_field!r}"
            ) from None
        if not getattr(user, "is_active", True):
            raise jwt.InvalidTokenError(f"{named} is inactive")
        return user


def _lookup_value(value: Any) -> bool:
    """Whether a claim can be compared with a database column as it is: no NUL
    or lone surrogate a driver would refuse (a driver's error is not the token's)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -MAX_CLAIM_INT <= value <= MAX_CLAIM_INT
    if not isinstance(value, str) or not value or len(value) > MAX_CLAIM_LENGTH or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def bearer_token(request: HttpRequest) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None when there is
    no such header (another scheme, such as ``Basic``, is not this authenticator's)."""
    header = request.META.get("HTTP_AUTHORIZATION")
    if not isinstance(header, str):
        return None
    parts = header.split(None, 2)
    if not parts or parts[0].lower() != "bearer":
        return None
    if len(parts) != 2:
        raise jwt.InvalidTokenError("the Authorization header is not 'Bearer <token>'")
    token = parts[1]
    if len(token) > MAX_TOKEN_LENGTH:
        raise jwt.InvalidTokenError(f"the token is longer than {MAX_TOKEN_LENGTH} characters")
    if TOKEN.fullmatch(token) is None:
        raise jwt.InvalidTokenError("the token is not a JWT in compact form")
    return token


def bearer_authenticator(request: HttpRequest) -> Any:
    """An ``AUTHENTICATOR``: the user of a valid ``Authorization: Bearer`` JWT.

    Verified as ``GQL_AUDIT["JWT"]`` says (see docs/oidc.md); no header, or one
    of another scheme, is no credential (None). Cookies are not read.
    """
    token = bearer_token(request)
    if token is None:
        return None
    settings = configured()
    return settings.user(settings.verify(token))


_lock = threading.Lock()


def configured() -> BearerSettings:
    """The settings in force; :class:`AuthUnavailable` when they are unusable
    (``manage.py check`` names what is wrong)."""
    with _lock:  # one KeySet per settings generation, however many requests start at once
        found: BearerSettings = conf.derived("bearer", _build)
    return found


def _build() -> BearerSettings:
    settings, problems = parse(conf.JWT)
    if settings is None:
        errors = [p.message for p in problems if not p.warning] or ["it is not set"]
        raise AuthUnavailable(f"{SETTING} is unusable: {errors[0]} (see manage.py check)")
    return settings


# --- reading the setting ------------------------------------------------------------


def parse(raw: Any) -> tuple[BearerSettings | None, list[Problem]]:
    """``GQL_AUDIT["JWT"]`` read, and what is wrong with it (no file or network read here).

    The settings are None when any problem is an error.
    """
    if not isinstance(raw, dict):
        return None, [Problem("setting", f"{SETTING} must be a dict with 'algorithms' and 'key' or 'jwks'.")]
    problems = [Problem("setting", f"{SETTING} has an unknown key {key!r}.") for key in sorted(set(raw) - set(KEYS))]
    values = {**DEFAULTS, **raw}
    algorithms = _algorithms(values.get("algorithms"), problems)
    keys, key_set = _keys(values.get("key"), values.get("jwks"), algorithms, problems)
    issuer = _names("issuer", values.get("issuer"), problems)
    audience = _names("audience", values.get("audience"), problems)
    leeway = _leeway(values["leeway"], problems)
    claims = {}
    for name in ("user_claim", "user_field"):
        claims[name] = values[name]
        if not isinstance(values[name], str) or not values[name]:
            problems.append(Problem("setting", f"{SETTING}[{name!r}] must be a name, such as {DEFAULTS[name]!r}."))
    if any(not p.warning for p in problems) or leeway is None:
        return None, problems
    settings = BearerSettings(
        algorithms=frozenset(algorithms),
        keys=keys,
        key_set=key_set,
        issuer=issuer,
        audience=audience,
        leeway=leeway,
        user_claim=claims["user_claim"],
        user_field=claims["user_field"],
    )
    return settings, problems


def _algorithms(value: Any, problems: list[Problem]) -> list[str]:
    where = f"{SETTING}['algorithms']"
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        problems.append(Problem("algorithms", f"{where} must be a list of algorithm names, such as ['RS256']."))
        return []
    known = get_default_algorithms()
    found = []
    for name in value:
        if isinstance(name, str) and name.lower() == "none":
            problems.append(Problem("algorithms", f"{where} names 'none': an unsigned token proves nothing."))
        elif name not in known:
            choices = ", ".join(n for n in known if n != "none")
            problems.append(Problem("algorithms", f"{where} names {name!r}, not one of {choices}."))
        else:
            found.append(name)
    hmac = {name for name in found if isinstance(known[name], HMACAlgorithm)}
    if hmac and len(hmac) != len(found):
        problems.append(
            Problem(
                "algorithms",
                f"{where} mixes shared-secret (HS*) and public-key algorithms: one key cannot be both, and "
                "a public key accepted as an HMAC secret would let anyone sign tokens.",
            )
        )
    return found


def _keys(
    key: Any, source: Any, algorithms: list[str], problems: list[Problem]
) -> tuple[dict[str, Any], KeySet | None]:
    if (key is None) == (source is None):
        problems.append(Problem("key", f"{SETTING} takes either 'key' (a secret or a PEM public key) or 'jwks'."))
        return {}, None
    if source is not None:
        return {}, _key_set(source, algorithms, problems)
    if not isinstance(key, (str, bytes)) or not key:
        problems.append(Problem("key", f"{SETTING}['key'] must be a secret or a PEM public key (str or bytes)."))
        return {}, None
    known = get_default_algorithms()
    prepared: dict[str, Any] = {}
    for name in algorithms:
        try:
            prepared[name] = known[name].prepare_key(_public_key_of_certificate(key))
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            kind = "a shared secret, not a public key" if name in HMAC_KEY_BYTES else "a PEM public key"
            problems.append(Problem("key", f"{SETTING}['key'] must be {kind} for {name}: {exc}"))
            continue
        if hasattr(prepared[name], "private_bytes"):
            problems.append(
                Problem(
                    "key",
                    f"{SETTING}['key'] is a private key: give its public key (or certificate); "
                    "verifying needs no signing secret.",
                )
            )
        elif name in HMAC_KEY_BYTES and len(prepared[name]) < HMAC_KEY_BYTES[name]:
            problems.append(
                Problem(
                    "weak_secret",
                    f"{SETTING}['key'] is {len(prepared[name])} bytes: {name} wants a secret of at least "
                    f"{HMAC_KEY_BYTES[name]} random bytes (RFC 7518, 3.2).",
                    warning=True,
                )
            )
    return prepared, None


def _public_key_of_certificate(key: str | bytes) -> Any:
    """The public key of a PEM certificate (as Keycloak offers a realm's key); ``key`` otherwise."""
    text = key.encode() if isinstance(key, str) else key
    if b"-----BEGIN CERTIFICATE-----" not in text:
        return key
    from cryptography import x509

    return x509.load_pem_x509_certificate(text).public_key()


def _key_set(source: Any, algorithms: list[str], problems: list[Problem]) -> KeySet | None:
    where = f"{SETTING}['jwks']"
    if not isinstance(source, str) or not source:
        problems.append(Problem("key", f"{where} must be the URL or the path of a JWKS."))
        return None
    if any(name in HMAC_KEY_BYTES for name in algorithms):
        problems.append(
            Problem("algorithms", f"{where} holds public keys: HS* algorithms take a shared 'key' instead.")
        )
    if is_url(source):
        from urllib.parse import urlsplit

        parts = urlsplit(source)
        if not parts.hostname or parts.username is not None or parts.password is not None:
            problems.append(Problem("key", f"{where} must be a URL with a host and no credentials."))
            return None
        if parts.scheme.lower() == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
            problems.append(
                Problem(
                    "plain_http",
                    f"{where} is fetched over plain HTTP from {describe(source)}: anyone on the way can "
                    "replace the keys and sign tokens the service accepts. Use https.",
                    warning=True,
                )
            )
    elif "://" in source:
        problems.append(Problem("key", f"{where} must be an http(s) URL or a file path."))
        return None
    return KeySet(source)


def _names(name: str, value: Any, problems: list[Problem]) -> str | list[str] | None:
    if value is None or (isinstance(value, str) and value):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    problems.append(Problem("setting", f"{SETTING}[{name!r}] must be a string, a list of strings, or None."))
    return None


def _leeway(value: Any, problems: list[Problem]) -> float | None:
    """Seconds of clock difference allowed: ``"30s"``, ``"2m"``, a number of seconds or a timedelta."""
    if isinstance(value, timedelta):
        seconds: float | None = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := LEEWAY.fullmatch(value)):
        seconds = float(int(match[1]) * (60 if match[2] == "m" else 1))
    else:
        seconds = None
    if seconds is None or not 0 <= seconds <= 3600:
        problems.append(Problem("setting", f"{SETTING}['leeway'] must be a duration such as '30s', up to an hour."))
        return None
    return seconds


def check(raw: Any) -> list[Problem]:
    """What ``manage.py check`` reports: :func:`parse`'s problems, a JWKS file that
    cannot be read, and a ``user_field`` the user model lacks or does not keep unique."""
    settings, problems = parse(raw)
    if settings is None:
        return problems
    if settings.key_set is not None and not is_url(settings.key_set.source):
        from gql_audit.auth.jwks import FetchFailed, fetch

        try:
            fetch(settings.key_set.source, timeout=0)
        except FetchFailed as exc:
            problems.append(Problem("key", f"{SETTING}['jwks'] {settings.key_set.source!r}: {exc}."))
    problems.extend(_user_field_problems(settings.user_field))
    return problems


def _user_field_problems(name: str) -> list[Problem]:
    from django.contrib.auth import get_user_model
    from django.core.exceptions import FieldDoesNotExist

    model = get_user_model()
    if name == "pk":
        return []
    try:
        found = model._meta.get_field(name)
    except FieldDoesNotExist:
        return [Problem("setting", f"{SETTING}['user_field'] {name!r} is not a field of {model._meta.label}.")]
    if getattr(found, "unique", False):
        return []
    return [
        Problem(
            "not_unique",
            f"{SETTING}['user_field'] {name!r} is not unique in {model._meta.label}: a token's claim may "
            "name several users (or, for an e-mail address the provider did not verify, someone else).",
            warning=True,
        )
    ]
