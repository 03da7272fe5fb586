"""The one error shape of the API, ``{"error": <short code>, "detail": <message>}``, and its handlers.

Every 4xx/5xx answer, FastAPI's own validation errors and Starlette's 404/405 included, uses it, so
clients parse one thing. ``error`` is a stable machine-readable code (for a refused file: the
:data:`obsqc.service.errors.INVALID_EXPOSURE_REASONS` code); ``detail`` says what to do next.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from obsqc.service.api.paths import PathRefused
from obsqc.service.errors import InvalidExposureError

__all__ = ["ApiError", "error_response", "install_error_handlers"]

logger = logging.getLogger(__name__)

_CODE_OF_STATUS = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    406: "not_acceptable", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
    422: "invalid_request", 429: "too_many_requests", 500: "internal_error", 503: "unavailable",
}


class ApiError(Exception):
    """An answer other than success: HTTP ``status``, a short ``error`` code and a ``detail`` sentence."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers


def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None, **extra) -> JSONResponse:
    """The JSON error body with ``status``."""
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.error, exc.detail, exc.headers)


async def _invalid_exposure(_request: Request, exc: InvalidExposureError) -> JSONResponse:
    return error_response(422, exc.reason, exc.message)


async def _path_refused(_request: Request, exc: PathRefused) -> JSONResponse:
    return error_response(exc.status, exc.error, exc.message)


async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(422, "invalid_request", _validation_detail(exc))


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _CODE_OF_STATUS.get(exc.status_code, "client_error" if exc.status_code < 500 else "server_error")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}; the API is described at /docs"
    elif exc.status_code == 405 and detail == "Method Not Allowed":
        detail = f"{request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, code, detail, getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error answering %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "the server failed on this request; the error is in its log")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` answer the JSON error shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(InvalidExposureError, _invalid_exposure)
    app.add_exception_handler(PathRefused, _path_refused)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
