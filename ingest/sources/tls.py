"""TLS for both listeners: the server's context from --tls-cert / --tls-key,
client certificates required when --tls-client-ca is given, and the common
name of a verified client certificate (how a TCP sender is identified: it
names the token whose scopes apply).

A plain-text request to a TLS port fails its handshake and is closed; the
handshake's failure is logged as one short line at debug level, not as a
traceback.
"""
from __future__ import annotations

import logging
import ssl
from pathlib import Path

log = logging.getLogger("ingest.tls")

HANDSHAKE_TIMEOUT = 10.0  # seconds a client has to finish its handshake before it is closed


class TlsError(ValueError):
    """The certificate, key or CA cannot be used; one line for the operator."""


def server_context(cert: Path | None, key: Path | None, client_ca: Path | None) -> ssl.SSLContext | None:
    """The context both listeners speak TLS with, or None without --tls-cert."""
    if cert is None and key is None:
        if client_ca is not None:
            raise TlsError("--tls-client-ca needs --tls-cert and --tls-key: client certificates are checked over TLS")
        return None
    if cert is None or key is None:
        raise TlsError("give --tls-cert and --tls-key together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for path, what in ((cert, "--tls-cert"), (key, "--tls-key"), (client_ca, "--tls-client-ca")):
        if path is not None and not Path(path).is_file():
            raise TlsError(f"{what} {path}: no such file")
    try:
        context.load_cert_chain(str(cert), str(key), password=_no_passphrase)
    except ssl.SSLError as exc:
        raise TlsError(f"--tls-cert {cert} / --tls-key {key}: {_reason(exc)} (is the key the certificate's, "
                       "both in PEM, the key without a passphrase?)") from None
    except (OSError, ValueError) as exc:
        raise TlsError(f"--tls-cert {cert} / --tls-key {key}: {exc}") from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=str(client_ca))
        except (ssl.SSLError, OSError) as exc:
            raise TlsError(f"--tls-client-ca {client_ca}: {_reason(exc)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _no_passphrase() -> bytes:
    raise ValueError("the key is protected by a passphrase; give it without one (openssl pkey -in KEY -out KEY2)")


def _reason(exc: Exception) -> str:
    return getattr(exc, "reason", None) or str(exc)


def peer_common_name(transport) -> str | None:
    """The subject common name of the client's verified certificate, or None
    (no TLS, or no client certificate)."""
    certificate = transport.get_extra_info("peercert")
    if not certificate:
        return None
    for rdn in certificate.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return value
    return None


def quiet_handshake_failures(loop) -> None:
    """Handshake failures (a plain-text client, a wrong or missing client
    certificate, a scanner) are the client's problem: a debug line, not the
    traceback asyncio would log. Everything else goes to the default handler."""
    previous = loop.get_exception_handler()

    def handle(loop, context):
        exception = context.get("exception")
        if isinstance(exception, (ssl.SSLError, ConnectionResetError)) or "SSL handshake" in context.get("message", ""):
            log.debug("TLS: %s: %s", context.get("message", "handshake failed"), exception)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)
    loop.set_exception_handler(handle)
