"""The service's log files: the exposure log (``service_v1`` / ``eval_v1``) and the hash-chained file audit log.

Exposure: a directory path gets daily UTC files ``exposure-YYYY-MM-DD.jsonl`` (dir 0700, files 0600, files older than
the retention pruned at rotation); any other path is one appended file. Subject ids are hex HMAC-SHA256 keyed by
``EXPOSURE_HASH_SALT`` (the ``pii-unhashed`` defect writes them raw).

Audit: JSONL 0600; ``hash`` = hex SHA-256 of ``prev_hash`` followed by the compact JSON of the entry without ``hash``
(keys in file order: timestamp, request_id, actor_id, tenant_id, method, path, action, status, prev_hash;
``json.dumps(..., separators=(",", ":"), ensure_ascii=False)``). The chain restarts at "" on every process start.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _append_line(path: Path, line: str, fsync: bool) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(descriptor, (line + "\n").encode())
        if fsync:
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def subject_hash(value: str, salt: str) -> str:
    return hmac.new(salt.encode(), value.encode(), hashlib.sha256).hexdigest()


class ExposureLog:
    def __init__(self, path: str, fmt: str, salt: str, retention_days: int, fsync: bool, hash_subjects: bool) -> None:
        self.path = Path(path)
        self.directory_mode = path.endswith(os.sep) or self.path.is_dir()
        self.format = fmt
        self.salt = salt
        self.retention_days = retention_days
        self.fsync = fsync
        self.hash_subjects = hash_subjects
        self._current_day: date | None = None
        self._lock = threading.Lock()
        if self.directory_mode:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        else:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _subject_value(self, value: str | None) -> str:
        if not value:
            return ""
        return subject_hash(value, self.salt) if self.hash_subjects else value

    def _target(self) -> Path:
        if not self.directory_mode:
            return self.path
        today = datetime.now(UTC).date()
        if today != self._current_day:
            self._current_day = today
            self._prune(today)
        return self.path / f"exposure-{today.isoformat()}.jsonl"

    def _prune(self, today: date) -> None:
        oldest_kept = today - timedelta(days=self.retention_days)
        for file in self.path.glob("exposure-*.jsonl"):
            try:
                day = date.fromisoformat(file.stem.removeprefix("exposure-"))
            except ValueError:
                continue
            if day < oldest_kept:
                file.unlink(missing_ok=True)

    def write(self, event: dict[str, Any]) -> None:
        """``event``: request_id, tenant_id, surface, segment, versions, experiment, user{}, context{}, items[]."""
        user = event.get("user") or {}
        subject = {
            "user_id_hash": self._subject_value(user.get("user_id")),
            "anonymous_id_hash": self._subject_value(user.get("anonymous_id")),
            "session_id_hash": self._subject_value(user.get("session_id")),
        }
        if self.format == "eval_v1":
            first = next((value for value in subject.values() if value), event["request_id"])
            record: dict[str, Any] = {
                "request_id": event["request_id"],
                "user_id": first,
                "ts": utc_timestamp(),
                "items": [{"item_id": item["item_id"], "rank": item["rank"]} for item in event["items"]],
                "context": event.get("context") or {},
            }
        else:
            record = {
                "schema_version": "v1",
                "timestamp": utc_timestamp(),
                "request_id": event["request_id"],
                "tenant_id": event["tenant_id"],
                "surface": event["surface"],
                "segment": event["segment"],
                "algo_version": event["algo_version"],
                "config_version": event.get("config_version") or "",
                "rules_version": event.get("rules_version") or "",
            }
            if event.get("endpoint") != "similar":
                record["experiment"] = event.get("experiment") or {}
                record["subject"] = subject
                record["context"] = event.get("context") or {}
            record["items"] = [
                {"item_id": item["item_id"], "rank": item["rank"], "score": item["score"]} for item in event["items"]
            ]
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            _append_line(self._target(), line, self.fsync)


class AuditFileLog:
    def __init__(self, path: str, fsync: bool) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.fsync = fsync
        self._prev_hash = ""
        self._lock = threading.Lock()

    def write(self, *, request_id: str, actor_id: str, tenant_id: str, method: str, path: str, status: int) -> None:
        with self._lock:
            entry: dict[str, Any] = {
                "timestamp": utc_timestamp(),
                "request_id": request_id,
                "actor_id": actor_id,
                "tenant_id": tenant_id,
                "method": method,
                "path": path,
                "action": f"{method} {path}",
                "status": status,
                "prev_hash": self._prev_hash,
            }
            entry["hash"] = chain_hash(entry)
            self._prev_hash = entry["hash"]
            _append_line(self.path, json.dumps(entry, separators=(",", ":"), ensure_ascii=False), self.fsync)


def chain_hash(entry: dict[str, Any]) -> str:
    """The hash of one audit entry (``entry`` without its ``hash`` key; ``prev_hash`` included)."""
    body = {key: value for key, value in entry.items() if key != "hash"}
    payload = entry.get("prev_hash", "") + json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class RequestLog:
    """``SANDBOX_REQUEST_LOG``: one JSON line per request (no credentials, no roles)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, method: str, path: str, query: str, status: int, ms: float, request_id: str) -> None:
        record = {"ts": utc_timestamp(), "method": method, "path": path, "query": query, "status": status}
        record |= {"ms": round(ms, 2), "request_id": request_id}
        with self._lock:
            _append_line(self.path, json.dumps(record, separators=(",", ":")), False)
