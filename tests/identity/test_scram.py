"""SCRAM-SHA-256 both ways: dbgov's client (upstream logins) against dbgov's server
(service accounts), and each against scramp as an independent implementation."""

from __future__ import annotations

import pytest
from scramp import ScramClient as RefClient

from dbgov.config import ServiceAccount
from dbgov.identity import AuthError
from dbgov.identity.scram import ScramExchange, make_verifier
from dbgov.proxy.upstream_scram import ScramClient, ScramError


def _account(password: str) -> ServiceAccount:
    return ServiceAccount(name="etl", groups=("pipelines",), scram=make_verifier(password))


def test_our_client_against_our_server() -> None:
    server = ScramExchange(_account("s3cret"))
    client = ScramClient("s3cret")
    final = client.final(server.first(client.first()))
    client.verify(server.final(final))
    assert server.identity().user == "etl"


def test_wrong_password_is_refused_by_the_server() -> None:
    server = ScramExchange(_account("s3cret"))
    client = ScramClient("guess")
    final = client.final(server.first(client.first()))
    with pytest.raises(AuthError) as exc:
        server.final(final)
    assert exc.value.reason == "bad_password"


def test_a_server_without_the_key_is_caught_by_the_client() -> None:
    import base64
    import os

    real = ScramExchange(_account("s3cret"))
    client = ScramClient("s3cret")
    client.final(real.first(client.first()))
    # A server that does not hold the verifier cannot produce the right signature.
    forged = b"v=" + base64.b64encode(os.urandom(32))
    with pytest.raises(ScramError, match="signature"):
        client.verify(forged)


def test_scramp_client_logs_in_to_our_server() -> None:
    server = ScramExchange(_account("pässword"))
    ref = RefClient(["SCRAM-SHA-256"], "ignored", "pässword")
    server_first = server.first(ref.get_client_first().encode())
    ref.set_server_first(server_first.decode())
    server_final = server.final(ref.get_client_final().encode())
    ref.set_server_final(server_final.decode())  # raises if our signature were wrong


def test_client_refuses_a_nonce_it_did_not_start() -> None:
    client = ScramClient("x")
    client.first()
    with pytest.raises(ScramError, match="nonce"):
        client.final(b"r=someone-elses,s=c2FsdA==,i=4096")
