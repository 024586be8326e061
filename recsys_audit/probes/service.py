"""HTTP probes of recsys-service: per-role credentials, timing, redaction, and read-only by construction.

The client refuses to send anything that could change the target: only GET/HEAD/OPTIONS, the read-only POSTs
(recommend, validate, similar) and write-denial PUTs carrying an ``If-Match`` that can never match a real ETag
(ETags are 64-hex SHA-256), with a body the service must reject anyway.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from recsys_audit.params import Credential, Params
from recsys_audit.probes import ProbeError, http

Role = Literal["viewer", "operator", "admin", "no_role", "other_tenant", "anonymous"]

READ_ONLY_POSTS = ("/v1/recommend", "/v1/recommend/validate", "/v1/similar")
# Not 64-hex, so no stored document can ever have this ETag: a PUT carrying it writes nothing.
IMPOSSIBLE_ETAG = "recsys-audit-write-denial-probe-never-matches"
# A config the service must reject (negative weight) — a second guard should If-Match ever be ignored.
WRITE_DENIAL_BODY: dict[str, Any] = {"weights": {"pop": -1}, "recsys_audit_probe": True}


def recommend_body(surface: str) -> dict[str, Any]:
    """The small recommend request every live probe sends (k=5, a fixed probe user)."""
    return {"surface": surface, "k": 5, "user": {"user_id": "recsys-audit-probe"}, "options": {}}


@dataclass
class ProbeResponse:
    method: str
    path: str
    role: str
    status: int
    headers: httpx.Headers
    text: str
    elapsed_ms: float
    request_headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        try:
            return json.loads(self.text)
        except json.JSONDecodeError as exc:
            raise ProbeError(f"{self.method} {self.path}: answer is not JSON ({exc.msg})") from None

    def json_or_none(self) -> Any:
        try:
            return json.loads(self.text)
        except json.JSONDecodeError:
            return None

    @property
    def problem_code(self) -> str | None:
        body = self.json_or_none()
        return body.get("code") if isinstance(body, dict) else None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    def evidence(self) -> dict[str, Any]:
        """A one-row summary of the exchange for a findings table (no secrets: headers are not included)."""
        row: dict[str, Any] = {
            "request": f"{self.method} {self.path}",
            "as": self.role,
            "status": self.status,
            "ms": round(self.elapsed_ms, 1),
        }
        if self.problem_code:
            row["code"] = self.problem_code
        return row


class ServiceClient:
    """One bounded httpx client for the audited service, with the identities from params (see probes.http)."""

    def __init__(self, params: Params, transport: httpx.BaseTransport | None = None) -> None:
        self.params = params
        target = params.target
        self.base_url = target.base_url.rstrip("/")
        self.timeout_s = target.timeout_s
        self._client = http.client(
            timeout_s=target.timeout_s, verify=params.tls(), base_url=self.base_url, transport=transport
        )

    def close(self) -> None:
        self._client.close()

    # --- identities --------------------------------------------------------------------------------------------

    def credential(self, role: Role) -> Credential | None:
        auth = self.params.auth
        if role == "other_tenant":
            return auth.other_tenant.credential if auth.other_tenant else None
        if role == "anonymous":
            return None
        return getattr(auth.credentials, role)

    def has_role(self, role: Role) -> bool:
        return role == "anonymous" or self.credential(role) is not None

    def auth_headers(self, role: Role) -> dict[str, str]:
        credential = self.credential(role)
        if role != "anonymous" and credential is None:
            raise ProbeError(f"no credential for role '{role}' in params (auth.credentials.{role})")
        headers: dict[str, str] = {}
        if credential is not None:
            headers.update(credential.headers)
            if credential.bearer is not None:
                headers["Authorization"] = f"Bearer {credential.bearer.reveal()}"
            if credential.api_key is not None:
                headers[self.params.auth.api_key_header] = credential.api_key.reveal()
        return headers

    # --- requests ----------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        role: Role = "anonymous",
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> ProbeResponse:
        method = method.upper()
        all_headers = {**self.auth_headers(role), **(headers or {})}
        _refuse_writes(method, path, all_headers)
        if method == "PUT":
            json_body = WRITE_DENIAL_BODY
        answer = http.fetch(
            self._client,
            method,
            path,
            cap=http.API_BODY,
            deadline_s=timeout_s if timeout_s is not None else self.timeout_s,
            headers=all_headers,
            json=json_body,
            params=params,
            shown_url=f"{self.base_url}{path}",
        )
        return ProbeResponse(method, path, role, answer.status, answer.headers, answer.text, answer.elapsed_ms)

    def get(self, path: str, **kwargs: Any) -> ProbeResponse:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json_body: Any, **kwargs: Any) -> ProbeResponse:
        return self.request("POST", path, json_body=json_body, **kwargs)

    def recommend(self, tenant: str, surface: str, *, role: Role = "viewer", **extra: Any) -> ProbeResponse:
        body = {**recommend_body(surface), **extra}
        return self.post("/v1/recommend", body, role=role, headers={self.params.auth.tenant_header: tenant})


def _refuse_writes(method: str, path: str, headers: dict[str, str]) -> None:
    if method in {"GET", "HEAD", "OPTIONS"}:
        return
    bare = path.split("?")[0].rstrip("/")
    if method == "POST" and bare in READ_ONLY_POSTS:
        return
    if method == "PUT" and headers.get("If-Match") == IMPOSSIBLE_ETAG:
        return
    raise ProbeError(f"refused to send {method} {bare}: the audit never changes the target")
