"""The one place where exceptions become HTTP responses (OpenAI error shape)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from cambist.domain.errors import CambistError

__all__ = ["error_body", "install_error_handlers"]

log = logging.getLogger("cambist.api")


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    """The OpenAI error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


async def _cambist(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CambistError)
    return JSONResponse(error_body(exc.message, exc.type, exc.code, exc.param),
                        status_code=exc.status)


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errs = exc.errors()
    first = errs[0] if errs else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid request")
    if first.get("type") == "json_invalid":
        return JSONResponse(error_body("request body is not valid JSON", "invalid_request_error",
                                       "invalid_json"), status_code=400)
    return JSONResponse(error_body(f"{param or 'request'}: {msg}", "invalid_request_error",
                                   "invalid_request", param), status_code=400)


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {401: "invalid_api_key", 403: "permission_denied", 404: "not_found",
            405: "method_not_allowed"}.get(exc.status_code, "error")
    type_ = "authentication_error" if exc.status_code == 401 else "invalid_request_error"
    return JSONResponse(error_body(str(exc.detail), type_, code), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    return JSONResponse(error_body("internal error; see the exchange log", "server_error",
                                   "internal_error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; call once when assembling the app."""
    app.add_exception_handler(CambistError, _cambist)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)
