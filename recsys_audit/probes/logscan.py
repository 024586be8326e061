"""Secret scanning of log files: bearer tokens, JWTs, API keys, salts and DSN passwords.

The scan reports counts and positions (file, line, column) with a redacted excerpt — never the secret itself. Files
are read line by line up to a byte budget per file, so a huge log costs a bounded read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys_audit.probes import ProbeError
from recsys_audit.redaction import MASK

# name -> pattern; group "secret" is the part to hide.
SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    "bearer_token": re.compile(r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9._~+/=-]{8,})"),
    "jwt": re.compile(r"(?P<secret>\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"),
    "api_key": re.compile(r"(?i)\b(?:x-api-key|api[_-]?key)['\"]?\s*[:=]\s*['\"]?(?P<secret>[A-Za-z0-9._~+/=-]{8,})"),
    "salt_or_hash_secret": re.compile(
        r"(?i)\b(?:EXPOSURE_HASH_SALT|EXPERIMENT_ASSIGNMENT_SALT|API_KEY_HASH_SECRET|[a-z_]*salt)['\"]?\s*[:=]\s*"
        r"['\"]?(?P<secret>[^\s'\",}]{4,})"
    ),
    "dsn_password": re.compile(r"\b[a-z][a-z0-9+.-]*://[^:/@\s]+:(?P<secret>[^@\s/]+)@"),
    "password_field": re.compile(r"(?i)\bpassword['\"]?\s*[:=]\s*['\"]?(?P<secret>[^\s'\",}]{3,})"),
}
# Values that only look like secrets (a token already masked by the service, a placeholder).
_HARMLESS = re.compile(r"^(\*+|x+|redacted|<[^>]*>|\$\{?\w+\}?|null|none|true|false)$", re.IGNORECASE)


@dataclass(frozen=True)
class SecretHit:
    kind: str
    file: str
    line: int
    column: int
    excerpt: str  # the surrounding text with the secret masked

    def row(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": self.file, "line": self.line, "column": self.column, "excerpt": self.excerpt}


@dataclass
class LogScan:
    files: list[str] = field(default_factory=list)
    lines: int = 0
    bytes_read: int = 0
    truncated: list[str] = field(default_factory=list)  # files read only up to the byte budget
    missing: list[str] = field(default_factory=list)  # named paths that do not exist
    hits: list[SecretHit] = field(default_factory=list)  # the first ``max_hits`` positions
    counts: dict[str, int] = field(default_factory=dict)  # every hit, by kind

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _excerpt(line: str, start: int, end: int, width: int = 30) -> str:
    head = line[max(0, start - width) : start]
    tail = line[end : end + width]
    return (head + MASK + tail).replace("\n", " ").strip()


def scan_line(line: str) -> Iterator[tuple[str, int, str]]:
    """(kind, 1-based column, redacted excerpt) for every secret-looking value in one line."""
    seen: set[tuple[int, int]] = set()
    for kind, pattern in SECRET_PATTERNS.items():
        for match in pattern.finditer(line):
            start, end = match.span("secret")
            value = match.group("secret")
            if _HARMLESS.match(value) or MASK in value or any(s <= start < e for s, e in seen):
                continue
            seen.add((start, end))
            yield kind, start + 1, _excerpt(line, start, end)


def log_files(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(files to scan, paths that do not exist): directories expand to their regular files, sorted."""
    found: list[Path] = []
    missing: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        elif path.is_file():
            found.append(path)
        else:
            missing.append(path)
    return found, missing


def scan_logs(paths: list[Path], max_bytes_per_file: int = 20_000_000, max_hits: int = 200) -> LogScan:
    """Scan log files for secrets; positions and counts only."""
    scan = LogScan()
    files, missing = log_files(paths)
    scan.missing = [str(path) for path in missing]
    for path in files:
        scan.files.append(str(path))
        read = 0
        try:
            with path.open("r", encoding="utf-8", errors="replace") as handle:
                for number, line in enumerate(handle, start=1):
                    read += len(line)
                    scan.lines += 1
                    for kind, column, excerpt in scan_line(line):
                        scan.counts[kind] = scan.counts.get(kind, 0) + 1
                        if len(scan.hits) < max_hits:
                            scan.hits.append(SecretHit(kind, path.name, number, column, excerpt))
                    if read >= max_bytes_per_file:
                        scan.truncated.append(str(path))
                        break
        except OSError as exc:
            raise ProbeError(f"log file {path}: cannot read ({exc.strerror or exc})") from None
        scan.bytes_read += read
    return scan
