"""Bearer-token check of the write endpoints (``Authorization: Bearer <OBSQC_API_TOKEN>``).

* no ``Authorization`` header, or not of the form ``Bearer <token>``: 401 with ``WWW-Authenticate: Bearer``;
* a token that is not the configured one: 403 (compared in constant time);
* no token configured (``OBSQC_API_TOKEN`` unset): every write is refused with 403, whatever is sent.

Reads (``GET``) need no token.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from obsqc.service.api.errors import ApiError

__all__ = ["RequireToken", "bearer_scheme", "require_token"]

bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="bearer",
    description="The service's API token (OBSQC_API_TOKEN), as `Authorization: Bearer <token>`.",
)


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """Let the request through only with the configured bearer token."""
    expected = request.app.state.obsqc.settings.api_token
    if expected is None:
        raise ApiError(403, "forbidden", "this service accepts no writes: no API token is configured. "
                                         "Set OBSQC_API_TOKEN on the server and send it as a bearer token")
    if credentials is None or not credentials.credentials.strip():
        raise ApiError(401, "unauthorized", "send the API token as 'Authorization: Bearer <token>'",
                       headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(credentials.credentials.strip().encode(), expected.encode()):
        raise ApiError(403, "forbidden", "the bearer token is not this service's API token")


RequireToken = Annotated[None, Depends(require_token)]
"""Dependency of every write endpoint."""
