"""Redaction: no secret value leaves the kernel in a finding, an error message or a displayed table.

Every :class:`~recsys_audit.params.Secret` registers its value here when it is first revealed; on top of that,
shapes that are secret whatever their origin (DSN passwords, bearer tokens, JWTs, API-key headers) are masked.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
_known_secrets: set[str] = set()

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?P<tail>@)"), rf"\g<head>{MASK}\g<tail>"),
    # password=... in libpq key/value DSNs
    (re.compile(r"(?i)(?P<head>\bpassword\s*=\s*)('[^']*'|\S+)"), rf"\g<head>{MASK}"),
    # Authorization: Bearer <token>
    (re.compile(r"(?i)(?P<head>\bbearer\s+)[A-Za-z0-9._~+/=-]+"), rf"\g<head>{MASK}"),
    # compact JWS (header.payload.signature)
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"), f"eyJ{MASK}"),
    # X-API-Key: <key>
    (re.compile(r"(?i)(?P<head>x-api-key['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"), rf"\g<head>{MASK}"),
]


def register_secret(value: str) -> None:
    """Remember a secret value so that it is masked wherever it appears later."""
    if value and len(value) >= 4:
        _known_secrets.add(value)


def redact_text(text: str) -> str:
    for secret in sorted(_known_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_json(value: Any) -> Any:
    """Redact every string inside a JSON-like structure (keys included)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact_text(str(k)): redact_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_json(v) for v in value]
    return value
