"""Redaction: no secret value leaves the kernel in a finding, an error message or a displayed table.

Every :class:`~recsys_audit.params.Secret` registers its value here when it is first revealed, together with the
forms the value takes once something has encoded it: HTML- and XML-escaped, JSON-escaped, Python ``repr``,
percent-encoded, base64 (also inside a longer base64 text), a DSN's password on its own (as written and decoded) and
each line of a PEM block. :func:`redact_outcome` masks all of them in a check's outcome *before* it is displayed or
written; on top of that, shapes that are secret whatever their origin (DSN passwords, bearer tokens, JWTs, API-key
headers) are masked. Library errors that may quote a value are never passed through: :func:`describe_exception`
names them in the kit's own words.
"""

from __future__ import annotations

import base64
import html
import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

if TYPE_CHECKING:
    from recsys_audit.findings import Outcome

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words
MIN_FRAGMENT_LENGTH = 8  # base64 fragments and PEM lines: shorter ones could occur by chance

_known_forms: set[str] = set()
_pattern: re.Pattern[str] | None = None

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?P<tail>@)"), rf"\g<head>{MASK}\g<tail>"),
    # password=... in libpq key/value DSNs
    (re.compile(r"(?i)(?P<head>\bpassword\s*=\s*)('[^']*'|\S+)"), rf"\g<head>{MASK}"),
    # Authorization: Bearer <token> / Basic <credentials>
    (re.compile(r"(?i)(?P<head>\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+"), rf"\g<head>{MASK}"),
    # compact JWS (header.payload.signature)
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"), f"eyJ{MASK}"),
    # X-API-Key: <key>
    (re.compile(r"(?i)(?P<head>x-api-key['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"), rf"\g<head>{MASK}"),
]

# Exceptions of these libraries may quote what they were given (a DSN, a header value, a URL with credentials):
# their text is never shown, only their kind.
_QUOTING_LIBRARIES = {"httpx", "httpcore", "h11", "ssl", "psycopg", "psycopg2", "botocore", "boto3", "urllib3", "jwt"}


def _base64_forms(raw: bytes) -> set[str]:
    """The secret's base64 in every alphabet, padded and not, and the part of it that stays the same whatever bytes
    precede it in a longer base64 text (three alignments)."""
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode("ascii")
        forms |= {whole, whole.rstrip("=")}
        for offset in range(3):
            text = encode(b"\0" * offset + raw).decode("ascii")
            stable = text[4 if offset else 0 : ((offset + len(raw)) // 3) * 4]
            if len(stable) >= MIN_FRAGMENT_LENGTH:
                forms.add(stable)
    return forms


def _dsn_passwords(value: str) -> set[str]:
    """A DSN's password as written and percent-decoded (URL form and libpq key/value form)."""
    found: set[str] = set()
    for candidate in re.findall(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+", value):
        try:
            netloc = urlsplit(candidate).netloc
        except ValueError:
            continue
        userinfo, at, _ = netloc.rpartition("@")
        if at and ":" in userinfo:
            found.add(userinfo.partition(":")[2])
    for quoted, plain in re.findall(r"(?i)\bpassword\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(\S+))", value):
        found.add(re.sub(r"\\(.)", r"\1", quoted) if quoted else plain)
    return {form for password in found for form in (password, unquote(password)) if form}


def derived_forms(value: str) -> set[str]:
    """Every form of ``value`` the kit masks (see the module docstring)."""
    bases = {value} | _dsn_passwords(value)
    bases |= {line.strip() for line in value.splitlines() if len(line.strip()) >= MIN_FRAGMENT_LENGTH}
    forms: set[str] = set()
    for base in bases:
        json_ascii, json_utf8 = json.dumps(base)[1:-1], json.dumps(base, ensure_ascii=False)[1:-1]
        escaped = {html.escape(base), html.escape(base, quote=False)}
        escaped |= {text.replace("&#x27;", "&#39;") for text in escaped}
        escaped.add(html.escape(base, quote=False).replace('"', "&quot;"))
        forms |= {base, json_ascii, json_utf8, repr(base)[1:-1], repr(base.encode())[2:-1]}
        forms |= escaped | {html.escape(json_ascii), html.escape(json_ascii, quote=False)}
        forms |= {quote(base, safe=""), quote(base), quote_plus(base), quote(base, safe="/:@")}
        forms |= _base64_forms(base.encode())
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def register_secret(value: str) -> None:
    """Remember a secret value (and its derived forms) so that it is masked wherever it appears later."""
    global _pattern
    if not value or len(value) < MIN_SECRET_LENGTH:
        return
    new = derived_forms(value) - _known_forms
    if new:
        _known_forms.update(new)
        _pattern = None


def _secrets_pattern() -> re.Pattern[str] | None:
    global _pattern
    if _pattern is None and _known_forms:
        _pattern = re.compile("|".join(re.escape(form) for form in sorted(_known_forms, key=len, reverse=True)))
    return _pattern


def redact_text(text: str) -> str:
    pattern = _secrets_pattern()
    if pattern is not None:
        text = pattern.sub(MASK, text)
    for shape, replacement in _PATTERNS:
        text = shape.sub(replacement, text)
    return text


def redact_json(value: Any) -> Any:
    """Redact every string inside a JSON-like structure (keys included); other objects become redacted text."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact_text(str(k)): redact_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_json(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", errors="replace"))
    return redact_text(str(value))


def redact_outcome(outcome: Outcome) -> Outcome:
    """The outcome with its summary and evidence redacted: what every display and every file is made from."""
    from recsys_audit.findings import Outcome

    return Outcome(outcome.status, redact_text(outcome.summary), redact_json(outcome.evidence))


def describe_exception(exc: BaseException) -> str:
    """One redacted line for an unexpected exception; a library's own text is withheld (it may quote a secret)."""
    name = type(exc).__name__
    library = type(exc).__module__.partition(".")[0]
    if library in _QUOTING_LIBRARIES:
        return f"{library} {name} (the library's message is not shown: it may quote credentials)"
    first = (str(exc).strip().splitlines() or [""])[0]
    return redact_text(f"{name}: {first}" if first else name)[:300]
