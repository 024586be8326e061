"""RFC 7807 problem bodies as recsys-service writes them (``application/problem+json``).

recsys-made problems carry a ``RECSYS_*`` ``code`` and a ``type`` URL derived from it; problems the HTTP toolkit makes
(bad JWT, tenant rate limit, 415) carry no code.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://errors.recsys.example/problem/"


class ProblemError(Exception):
    """Raised inside handlers; the middleware turns it into a problem response."""

    def __init__(
        self, status: int, detail: str, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.headers = headers or {}


def problem_body(status: int, detail: str, code: str | None, instance: str, request_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code.lower().replace("_", "-") if code else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if code:
        body["code"] = code
    body["request_id"] = request_id
    return body


def problem_response(error: ProblemError, instance: str, request_id: str) -> JSONResponse:
    return JSONResponse(
        problem_body(error.status, error.detail, error.code, instance, request_id),
        status_code=error.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers={"Cache-Control": "no-store", **error.headers},
    )


def bad_request(detail: str, code: str = "RECSYS_INVALID_REQUEST") -> ProblemError:
    return ProblemError(400, detail, code)


def unprocessable(detail: str, code: str = "RECSYS_UNPROCESSABLE_ENTITY") -> ProblemError:
    return ProblemError(422, detail, code)


def forbidden(detail: str, code: str = "RECSYS_FORBIDDEN") -> ProblemError:
    return ProblemError(403, detail, code)


def not_found(detail: str, code: str) -> ProblemError:
    return ProblemError(404, detail, code)
