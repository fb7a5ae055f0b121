"""Where and how to reach Redis: the URL and its TLS options, parsed once.

A Redis URL (``redis://`` or ``rediss://``) becomes a frozen
:class:`RedisAddress`; the TLS query parameters are named as redis-py names
them, so one URL serves the hot-path client (:mod:`bus.resp`) and redis-py on
the administrative paths. A URL that cannot work raises :class:`InvalidRedisURL`
saying which part is wrong. No I/O here beyond reading the TLS files when a
context is built.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["InvalidRedisURL", "RedisAddress", "TLSConfig"]


class InvalidRedisURL(ValueError):
    """A Redis URL or TLS setting that cannot work: says which part and why."""


# Query parameters of a Redis URL, named as redis-py names them so that one
# URL serves both the hot-path client and redis-py on the admin paths.
_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_TLS_PARAMS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """How to speak TLS to Redis (``rediss://``).

    ``ca_file``: the CA bundle that signed the server's certificate (None: the
    system's trust store, right for managed Redis with a public CA).
    ``cert_file``/``key_file``: a client certificate, for servers that ask for
    one (``tls-auth-clients yes``, Redis's default). ``cert_reqs`` and
    ``check_hostname`` loosen verification; leave them alone in production.
    """

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_reqs: str = "required"
    check_hostname: bool = True

    def context(self) -> ssl.SSLContext:
        """A client ``SSLContext``; ``InvalidRedisURL`` when a file cannot be used."""
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file is not None:
                ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidRedisURL(f"cannot use the Redis TLS files: {exc}") from exc
        ctx.check_hostname = self.check_hostname and self.cert_reqs != "none"
        ctx.verify_mode = _CERT_REQS[self.cert_reqs]
        return ctx


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where and how to connect, parsed from a Redis URL.

    ``redis://[user:password@]host:port/db`` or ``rediss://...`` (TLS), with
    the TLS options as query parameters named as in redis-py:
    ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
    ``ssl_cert_reqs`` (required|optional|none), ``ssl_check_hostname``.
    """

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: TLSConfig | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        """Parse ``url``; ``InvalidRedisURL`` (a ``ValueError``) says what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise InvalidRedisURL(
                f"unsupported Redis URL scheme {parts.scheme!r} (want redis:// or rediss://)"
            )
        path = parts.path.strip("/")
        try:
            db = int(path) if path else 0
            port = parts.port or 6379
        except ValueError as exc:
            raise InvalidRedisURL(f"bad port or database number in Redis URL: {exc}") from exc
        if db < 0:
            raise InvalidRedisURL(f"bad Redis database number in URL: {db}")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(query) - set(_TLS_PARAMS))
        if unknown:
            raise InvalidRedisURL(
                f"unknown Redis URL parameter(s) {', '.join(unknown)} "
                f"(known: {', '.join(_TLS_PARAMS)})"
            )
        tls: TLSConfig | None = None
        if parts.scheme == "rediss":
            reqs = query.get("ssl_cert_reqs", "required").lower()
            if reqs not in _CERT_REQS:
                raise InvalidRedisURL(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
            check = query.get("ssl_check_hostname", "true").lower()
            if check not in _BOOLS:
                raise InvalidRedisURL("ssl_check_hostname must be true or false")
            tls = TLSConfig(
                ca_file=query.get("ssl_ca_certs") or None,
                cert_file=query.get("ssl_certfile") or None,
                key_file=query.get("ssl_keyfile") or None,
                cert_reqs=reqs,
                check_hostname=_BOOLS[check],
            )
            if tls.key_file and not tls.cert_file:
                raise InvalidRedisURL("ssl_keyfile needs ssl_certfile too")
        elif query:
            raise InvalidRedisURL("TLS parameters need a rediss:// URL, not redis://")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=tls,
        )

    def at(self, host: str, port: int) -> RedisAddress:
        """The same credentials and TLS settings for another node (a cluster's)."""
        return replace(self, host=host, port=port)

    def __str__(self) -> str:  # never print the password
        scheme = "rediss" if self.tls is not None else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"
