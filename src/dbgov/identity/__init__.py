"""Who is connecting: tokens (local issuer, OIDC), SCRAM service accounts, client certs."""

from dbgov.identity.model import AuthError, Identity

__all__ = ["AuthError", "Identity"]
