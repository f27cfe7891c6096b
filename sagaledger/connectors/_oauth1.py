"""OAuth 1.0a request signing (RFC 5849) as NetSuite token-based authentication uses it.

NetSuite's token-based authentication (TBA) is OAuth 1.0a with two fixed
choices: the signature method is ``HMAC-SHA256`` and the ``realm`` is the
account id (``1234567`` or ``1234567_SB1`` for a sandbox). Every request is
signed on its own; there is no session to log in to or to expire.

The signature covers the method, the base string URI and the parameters: the
query string's and the ``oauth_*`` ones. A JSON body is not covered (only a
form-encoded body would be, RFC 5849 section 3.4.1.3.1).

:class:`OAuth1Verifier` is the server side, for the ERP simulator: it
recomputes the signature and refuses stale timestamps and reused nonces, as
NetSuite does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, SecretStr

#: The only signature method NetSuite accepts for new integrations.
SIGNATURE_METHOD = "HMAC-SHA256"
#: How far a request's timestamp may be from the server's clock, in seconds.
DEFAULT_MAX_SKEW = 300.0

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Parameters the Authorization header carries that the signature does not cover.
_NOT_SIGNED = {"realm", "oauth_signature"}
_HEADER_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="([^"]*)"')


class OAuth1Credentials(BaseModel):
    """A NetSuite integration's consumer and an access token, for one account.

    The two secrets are ``SecretStr``: they print as ``**********``.

    Attributes:
        realm: The account id (``1234567``, ``1234567_SB1``).
        consumer_key: The integration record's consumer key.
        consumer_secret: The integration record's consumer secret.
        token_id: The access token's id.
        token_secret: The access token's secret.
    """

    model_config = ConfigDict(frozen=True)

    realm: str
    consumer_key: str
    consumer_secret: SecretStr
    token_id: str
    token_secret: SecretStr

    def secrets(self) -> list[str]:
        """The values that must never be logged or shown."""
        return [self.consumer_secret.get_secret_value(), self.token_secret.get_secret_value()]


def percent_encode(value: str) -> str:
    """RFC 3986 percent-encoding of ``value`` (UTF-8; only ``A-Za-z0-9-._~`` left as is)."""
    return urllib.parse.quote(value, safe="~")


def base_string_uri(url: str) -> str:
    """The base string URI of ``url`` (RFC 5849 section 3.4.1.2).

    Lower-case scheme and host, the port only when it is not the scheme's
    default, the path as sent (``/`` when empty), no query and no fragment.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


def normalized_parameters(params: Iterable[tuple[str, str]]) -> str:
    """The parameters' normalized string (RFC 5849 section 3.4.1.3.2).

    Each name and value is percent-encoded, the pairs are sorted by name and
    then by value, and joined as ``name=value`` with ``&``.
    """
    encoded = sorted((percent_encode(name), percent_encode(value)) for name, value in params)
    return "&".join(f"{name}={value}" for name, value in encoded)


def signature_base_string(
    method: str,
    url: str,
    oauth_params: Mapping[str, str],
    body_params: Iterable[tuple[str, str]] = (),
) -> str:
    """The signature base string of a request (RFC 5849 section 3.4.1.1).

    Args:
        method: The HTTP method (upper-cased here).
        url: The full request URL; its query parameters are signed.
        oauth_params: The protocol parameters; ``realm`` and ``oauth_signature``
            are left out, as the RFC says.
        body_params: A form-encoded body's parameters, decoded. Leave empty for
            a JSON body, which the signature does not cover.
    """
    query = urllib.parse.urlsplit(url).query
    params = urllib.parse.parse_qsl(query, keep_blank_values=True)
    params += [(k, v) for k, v in oauth_params.items() if k not in _NOT_SIGNED]
    params += list(body_params)
    return "&".join(
        [
            method.upper(),
            percent_encode(base_string_uri(url)),
            percent_encode(normalized_parameters(params)),
        ]
    )


def hmac_sha256_signature(base_string: str, consumer_secret: str, token_secret: str) -> str:
    """The base64 HMAC-SHA256 of ``base_string``, keyed ``enc(consumer)&enc(token)``."""
    key = f"{percent_encode(consumer_secret)}&{percent_encode(token_secret)}"
    digest = hmac.new(key.encode(), base_string.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def authorization_header(params: Mapping[str, str]) -> str:
    """An ``Authorization: OAuth ...`` value: ``realm`` first, each value percent-encoded."""
    ordered = sorted(params.items(), key=lambda item: (item[0] != "realm", item[0]))
    return "OAuth " + ", ".join(f'{k}="{percent_encode(v)}"' for k, v in ordered)


def parse_authorization(header: str) -> dict[str, str] | None:
    """The parameters of an ``Authorization: OAuth ...`` value, or None if it is not one."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "oauth":
        return None
    return {k: urllib.parse.unquote(v) for k, v in _HEADER_PARAM.findall(rest)}


def _new_nonce() -> str:
    return secrets.token_hex(16)


class OAuth1Signer:
    """Signs requests for one set of credentials.

    Args:
        credentials: Whose requests these are.
        nonce: Makes each request's nonce; random by default (inject for tests).
        clock: Seconds since the epoch, for ``oauth_timestamp`` (inject for tests).
    """

    def __init__(
        self,
        credentials: OAuth1Credentials,
        *,
        nonce: Callable[[], str] = _new_nonce,
        clock: Callable[[], float] = time.time,
    ):
        self.credentials = credentials
        self._nonce = nonce
        self._clock = clock

    def oauth_params(self) -> dict[str, str]:
        """Fresh protocol parameters (new nonce and timestamp), not yet signed."""
        c = self.credentials
        return {
            "oauth_consumer_key": c.consumer_key,
            "oauth_token": c.token_id,
            "oauth_signature_method": SIGNATURE_METHOD,
            "oauth_timestamp": str(int(self._clock())),
            "oauth_nonce": self._nonce(),
            "oauth_version": "1.0",
        }

    def authorization(self, method: str, url: str) -> str:
        """The ``Authorization`` header value for one request (JSON or no body).

        Args:
            method: The HTTP method.
            url: The full URL, query string included, exactly as it will be sent.
        """
        c = self.credentials
        params = self.oauth_params()
        base = signature_base_string(method, url, params)
        params["oauth_signature"] = hmac_sha256_signature(
            base, c.consumer_secret.get_secret_value(), c.token_secret.get_secret_value()
        )
        params["realm"] = c.realm
        return authorization_header(params)


class OAuth1Verifier:
    """Checks signed requests the way the server does (used by the ERP simulator).

    Args:
        credentials: The only consumer and token this server knows.
        max_skew: Seconds a timestamp may differ from ``clock``.
        clock: Seconds since the epoch.
    """

    def __init__(
        self,
        credentials: OAuth1Credentials,
        *,
        max_skew: float = DEFAULT_MAX_SKEW,
        clock: Callable[[], float] = time.time,
    ):
        self.credentials = credentials
        self.max_skew = max_skew
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str, str], float] = {}  # (consumer, token, nonce) -> ts

    def verify(
        self,
        method: str,
        url: str,
        authorization: str | None,
        body_params: Iterable[tuple[str, str]] = (),
    ) -> str | None:
        """Why the request is refused, or None when it is properly signed.

        The reason names what is wrong and never contains a secret.
        """
        params = parse_authorization(authorization or "")
        if params is None:
            return "no OAuth Authorization header"
        missing = [
            p
            for p in (
                "realm",
                "oauth_consumer_key",
                "oauth_token",
                "oauth_signature_method",
                "oauth_timestamp",
                "oauth_nonce",
                "oauth_signature",
            )
            if not params.get(p)
        ]
        if missing:
            return f"missing OAuth parameter(s) {missing}"
        c = self.credentials
        if params["oauth_signature_method"] != SIGNATURE_METHOD:
            return f"unsupported signature method {params['oauth_signature_method']!r}"
        if params.get("oauth_version", "1.0") != "1.0":
            return f"unsupported OAuth version {params['oauth_version']!r}"
        if params["realm"] != c.realm:
            return f"realm {params['realm']!r} is not this account"
        if params["oauth_consumer_key"] != c.consumer_key or params["oauth_token"] != c.token_id:
            return "unknown consumer key or token"
        try:
            timestamp = int(params["oauth_timestamp"])
        except ValueError:
            return "oauth_timestamp is not an integer"
        now = self._clock()
        if abs(now - timestamp) > self.max_skew:
            return f"stale timestamp ({now - timestamp:+.0f} s from the server's clock)"
        base = signature_base_string(method, url, params, body_params)
        expected = hmac_sha256_signature(
            base, c.consumer_secret.get_secret_value(), c.token_secret.get_secret_value()
        )
        if not hmac.compare_digest(expected.encode(), params["oauth_signature"].encode()):
            return "signature mismatch"
        seen = (params["oauth_consumer_key"], params["oauth_token"], params["oauth_nonce"])
        with self._lock:
            # Nonces only need remembering while their timestamp is still acceptable.
            horizon = now - 2 * self.max_skew
            self._seen = {k: ts for k, ts in self._seen.items() if ts >= horizon}
            if seen in self._seen:
                return "nonce already used"
            self._seen[seen] = timestamp
        return None
