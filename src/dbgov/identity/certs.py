"""Client certificates as identities.

When the listener's TLS config names a `client_ca` and `identity.client_certs`
is enabled, a client that presents a certificate signed by that CA whose common
name equals the startup user is authenticated without a password. Groups come
from the certificate's organizational units. The TLS layer has already checked
the chain; here we only map the verified subject.
"""

from __future__ import annotations

from typing import Any

from dbgov.config import ClientCerts
from dbgov.identity.model import Identity


def _subject(cert: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            out.append((str(key), str(value)))
    return out


def identity_from_cert(cert: dict[str, Any] | None, user: str, cfg: ClientCerts) -> Identity | None:
    if not cert:
        return None
    subject = _subject(cert)
    cns = [v for k, v in subject if k == "commonName"]
    if cns != [user]:
        return None
    groups = (
        frozenset(v for k, v in subject if k == "organizationalUnitName")
        if cfg.groups_from_ou
        else frozenset()
    )
    serial = cert.get("serialNumber")
    return Identity(
        user=user,
        groups=groups,
        method="cert",
        issuer="client-ca",
        token_id=str(serial) if serial else None,
    )
