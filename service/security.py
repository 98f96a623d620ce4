"""Credentials, compared in constant time: the optional inference API key and the admin token."""

from __future__ import annotations

import hmac

from pydantic import SecretStr

from service.errors import Unauthorized


def bearer_token(authorization: str | None, api_key_header: str | None) -> str | None:
    """The credential a request carries: ``Authorization: Bearer <token>`` or ``X-API-Key``."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return api_key_header


def check_credential(expected: SecretStr | None, presented: str | None) -> None:
    """Pass when nothing is configured or the credential matches; raise 401 otherwise."""
    if expected is None:
        return
    wanted = expected.get_secret_value().encode("utf-8")
    given = (presented or "").encode("utf-8", errors="replace")
    if not hmac.compare_digest(wanted, given):
        raise Unauthorized()
