"""Structural redaction: a registered secret is masked in every form an encoder gives it, outcomes are redacted before
anything shows them, and library errors are described without their text."""

from __future__ import annotations

import base64
import html
import json
import secrets
from urllib.parse import quote, quote_plus
from xml.sax.saxutils import escape as xml_escape

import httpx
import psycopg
import pytest

from recsys_audit.findings import Outcome, Status
from recsys_audit.params import Secret
from recsys_audit.probes.database import describe_connection_error
from recsys_audit.redaction import MASK, describe_exception, redact_json, redact_outcome, redact_text, register_secret


def canary(label: str) -> str:
    return f"{label}-'&<>\"%-{secrets.token_hex(10)}"


def encodings(value: str) -> dict[str, str]:
    raw = value.encode()
    return {
        "raw": value,
        "html": html.escape(value),
        "html, no quotes": html.escape(value, quote=False),
        "html &#39;": html.escape(value).replace("&#x27;", "&#39;"),
        "xml": xml_escape(value, {'"': "&quot;"}),
        "json": json.dumps(value)[1:-1],
        "json in html": html.escape(json.dumps(value)[1:-1]),
        "repr": repr(value)[1:-1],
        "bytes repr": repr(raw)[2:-1],
        "percent": quote(value, safe=""),
        "percent, path": quote(value),
        "form": quote_plus(value),
        "base64": base64.b64encode(raw).decode(),
        "base64url, no padding": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "base64 inside Basic auth": base64.b64encode(b"auditor:" + raw).decode(),
        "base64 after one byte": base64.b64encode(b"x" + raw + b"y").decode(),
    }


@pytest.mark.parametrize("form", list(encodings("x")))
def test_every_derived_form_of_a_secret_is_masked(form: str) -> None:
    value = canary("token")
    register_secret(value)
    shown = encodings(value)[form]
    text = redact_text(f"before {shown} after")
    assert value not in text
    core = value.split("-")[-1]  # the random part survives no encoding we know of
    assert core not in text and base64.b64encode(core.encode()).decode()[:8] not in text, text


def test_a_dsn_password_is_masked_alone_as_written_and_decoded() -> None:
    written = f"pa%zz{secrets.token_hex(8)}%41end"
    decoded = written.replace("%41", "A")
    register_secret(f"postgresql://auditor:{written}@127.0.0.1:5432/recsys")
    for text in (f'invalid percent-encoded token: "{written}"', f"password {decoded} rejected", quote(decoded)):
        assert written not in redact_text(text) and decoded not in redact_text(text), redact_text(text)
    register_secret(f"host=127.0.0.1 user=auditor password='{written} x'")
    assert f"{written} x" not in redact_text(f"echo: {written} x")


def test_each_line_of_a_pem_key_is_masked() -> None:
    lines = [secrets.token_urlsafe(48) for _ in range(3)]
    register_secret("-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----")
    assert all(line not in redact_text(f"quoted: {line}") for line in lines)


def test_outcomes_are_redacted_in_summary_evidence_keys_and_odd_values() -> None:
    value = canary("evidence")
    register_secret(value)

    class Echo:
        def __str__(self) -> str:
            return f"object holding {html.escape(value)}"

    outcome = Outcome(
        Status.FAIL,
        f"target said {json.dumps(value)}",
        {value: [{"item": quote(value, safe="")}], "object": Echo(), "bytes": value.encode(), "n": 3, "ok": True},
    )
    redacted = redact_outcome(outcome)
    dumped = json.dumps([redacted.summary, redacted.evidence])
    assert value.split("-")[-1] not in dumped, dumped
    assert redacted.evidence[MASK] == [{"item": MASK}]
    assert (redacted.evidence["n"], redacted.evidence["ok"], redacted.status) == (3, True, Status.FAIL)
    assert redact_json(("a", 1)) == ["a", 1]


def test_library_errors_are_described_without_their_text() -> None:
    value = canary("header")
    error = httpx.LocalProtocolError(f"Illegal header value b'Bearer {value}'")
    assert value not in describe_exception(error)
    assert describe_exception(error).startswith("httpx LocalProtocolError (the library's message is not shown")
    assert describe_exception(ValueError("plain bug")) == "ValueError: plain bug"


def test_a_libpq_error_quoting_the_password_is_summarized(monkeypatch: pytest.MonkeyPatch) -> None:
    password = f"raw%zz{secrets.token_hex(8)}"
    monkeypatch.setenv("RA_TEST_BAD_DSN", f"postgresql://auditor:{password}@127.0.0.1:5432/recsys")
    dsn = Secret("env:RA_TEST_BAD_DSN")
    with pytest.raises(psycopg.Error) as raised:
        psycopg.connect(dsn.reveal(), connect_timeout=2)
    assert password in str(raised.value), "libpq quotes the bad percent-encoding (the reason for this summary)"
    summary = describe_connection_error(raised.value, dsn)
    assert summary == "the DSN could not be parsed (libpq's message is not shown: it may quote the password)"
