"""Section 2 — Data contracts, logging and privacy.

Exposure evidence comes from a bounded sample: the first lines of the newest exposure log files the params point to
(``privacy.sample_rows`` in all) and the newest rows of the event tables through their ``occurred_at`` index. Evidence
shows counts and masked examples, never the data itself.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys_audit.catalog import Section
from recsys_audit.checklist import EvidenceClass
from recsys_audit.checks.common import (
    accepted,
    awaiting_attestation,
    keyed_hash,
    secret_problem,
    serving_role,
    unkeyed_hashes,
)
from recsys_audit.checks.config_rules import register_config_rules
from recsys_audit.context import AuditContext
from recsys_audit.findings import Outcome, Severity, Status, failed, passed, skipped, warned, worst
from recsys_audit.probes.service import recommend_body

SECTION = Section(2, "Data contracts, logging and privacy", notebook="02_data_privacy")
register_config_rules(SECTION)  # exposure logging on

EXPOSURE_REF = "recsys-http-and-config §7 (exposure logging); recsys-data-and-ops §3.5"
EVENT_TABLES = ("exposure_events", "interaction_events")
PROTECTED_TABLES = ("exposure_events", "interaction_events", "audit_log")
SUBJECT_FIELDS = {"user_id_hash": "user_id", "anonymous_id_hash": "anonymous_id", "session_id_hash": "session_id"}
HEX64 = re.compile(r"^[0-9a-f]{64}$")
FILE_DAY = re.compile(r"(\d{4}-\d{2}-\d{2})")
PII_PATTERNS: dict[str, str] = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "phone": r"(?<![\w.+])(?:\+\d{1,3}[ -]?\(?\d{1,4}\)?(?:[ -]?\d{2,4}){2,4}|\(\d{3}\) ?\d{3}-\d{4}|\d{3}-\d{3}-\d{4})"
    r"(?![\w.])",
    "ipv4": r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\w.])",
}
MAX_EXAMPLES = 3
PROBE_USER = recommend_body("-")["user"]["user_id"]  # the subject every live probe of the kit sends


def mask(value: str) -> str:
    """A masked example: enough to recognise the shape, never the value."""
    text = str(value)
    if len(text) <= 6:
        return "*" * len(text)
    return f"{text[:2]}***{text[-2:]} ({len(text)} chars)"


# --- the bounded exposure sample -------------------------------------------------------------------------------------


@dataclass
class LogFile:
    path: Path
    mode: int
    size: int
    day: dt.date | None

    def row(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "mode": oct(self.mode),
            "bytes": self.size,
            "day": str(self.day) if self.day else None,
        }


@dataclass
class ExposureSample:
    files: list[LogFile] = field(default_factory=list)
    directories: list[tuple[Path, int]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    unparsable: int = 0
    missing: list[str] = field(default_factory=list)


def _log_file(path: Path) -> LogFile:
    info = path.stat()
    match = FILE_DAY.search(path.name)
    day = dt.date.fromisoformat(match.group(1)) if match else None
    return LogFile(path, stat.S_IMODE(info.st_mode), info.st_size, day)


def collect_log_files(ctx: AuditContext, entries: list[str]) -> tuple[list[LogFile], list[tuple[Path, int]], list[str]]:
    files, directories, missing = [], [], []
    for entry in entries:
        path = ctx.params.path(entry)
        if path.is_dir():
            directories.append((path, stat.S_IMODE(path.stat().st_mode)))
            files.extend(_log_file(child) for child in path.iterdir() if child.is_file() and child.suffix == ".jsonl")
        elif path.is_file():
            files.append(_log_file(path))
        else:
            missing.append(str(path))
    return files, directories, missing


def exposure_sample(ctx: AuditContext) -> ExposureSample:
    def read() -> ExposureSample:
        files, directories, missing = collect_log_files(ctx, ctx.params.logs.exposure)
        sample = ExposureSample(files=files, directories=directories, missing=missing)
        budget = ctx.params.privacy.sample_rows
        newest_first = sorted(files, key=lambda f: (f.day or dt.date.min, f.path.name), reverse=True)
        for log in newest_first:
            if budget <= 0:
                break
            try:
                with log.path.open(encoding="utf-8", errors="replace") as handle:
                    for line in handle:
                        if budget <= 0:
                            break
                        if not line.strip():
                            continue
                        budget -= 1
                        sample.lines.append(line)
                        try:
                            record = json.loads(line)
                        except json.JSONDecodeError:
                            sample.unparsable += 1
                            continue
                        if isinstance(record, dict):
                            sample.records.append(record)
            except PermissionError:
                sample.missing.append(f"{log.path} (not readable by the auditor)")
        return sample

    return ctx.memo("s2:exposure-sample", read)


def event_rows(ctx: AuditContext, table: str) -> list[dict[str, Any]]:
    """The newest ``sample_rows`` rows of an event table, read through its (occurred_at, id) primary key."""

    def read() -> list[dict[str, Any]]:
        if not ctx.db.table_exists(table):
            return []
        extra = ", request_id::text AS request_id, request::text AS request_text" if table == "exposure_events" else ""
        sql = (
            f"SELECT user_key, session_id, meta::text AS meta_text{extra} FROM {table} "
            "ORDER BY occurred_at DESC LIMIT %s"
        )
        return ctx.db.query(sql, (ctx.params.privacy.sample_rows,))

    return ctx.memo(f"s2:rows:{table}", read)


def subject_values(record: dict[str, Any]) -> dict[str, str]:
    """identifier kind -> value carried by one exposure record (service_v1 subject, or eval_v1 user_id)."""
    subject = record.get("subject")
    if isinstance(subject, dict):
        return {kind: str(subject[key]) for key, kind in SUBJECT_FIELDS.items() if subject.get(key)}
    if record.get("user_id"):
        return {"user_id": str(record["user_id"])}
    return {}


def key_is_hashed(value: Any) -> bool:
    """A DB subject key (bytea or text) looks like HMAC-SHA256 output: 32 raw bytes or 64 hex characters."""
    if isinstance(value, bytes | memoryview):
        raw = bytes(value)
        return len(raw) == 32 or bool(HEX64.match(raw.decode("latin-1")))
    return bool(HEX64.match(str(value)))


def key_text(value: Any) -> str:
    return bytes(value).decode("utf-8", "replace") if isinstance(value, bytes | memoryview) else str(value)


def nothing_sampled(ctx: AuditContext, what: str) -> Outcome:
    """Nothing to judge: not applicable when exposure logging is visibly off, else a warning — the kit did not look."""
    if exposure_logging_on(ctx) is False:
        return skipped(f"exposure logging is off and no {what} were found")
    return warned(f"no {what} sampled although exposure logging may be on: name the logs in params (logs.exposure)")


# --- identifiers and correlation -------------------------------------------------------------------------------------


@SECTION.check(
    "privacy.identifiers-declared",
    items=("2.allowed-identifiers",),
    evidence=EvidenceClass.DATA,
    title="Exposure records carry only the identifiers the params allow",
    severity=Severity.MEDIUM,
    remediation="Declare privacy.allowed_identifiers in params and stop clients from sending the others (or drop "
    "them before logging).",
    reference=EXPOSURE_REF,
)
def identifiers_declared(ctx: AuditContext) -> Outcome:
    allowed = set(ctx.params.privacy.allowed_identifiers)
    sample = exposure_sample(ctx)
    seen: dict[str, int] = {}
    for record in sample.records:
        for kind in subject_values(record):
            seen[kind] = seen.get(kind, 0) + 1
    db_rows = event_rows(ctx, "exposure_events") if ctx.params.database.dsn else []
    for row in db_rows:
        user = (json.loads(row.get("request_text") or "{}") or {}).get("user") or {}
        for kind in ("user_id", "anonymous_id", "session_id"):
            if isinstance(user, dict) and user.get(kind):
                seen[kind] = seen.get(kind, 0) + 1
    rows = [{"identifier": kind, "records": n, "allowed": kind in allowed} for kind, n in sorted(seen.items())]
    evidence = {
        "allowed": sorted(allowed),
        "sampled_files": len(sample.records),
        "sampled_rows": len(db_rows),
        "identifiers": rows,
    }
    if not allowed:
        return failed("no allowed identifiers declared (privacy.allowed_identifiers)", **evidence)
    if not sample.records and not db_rows:
        return warned("no exposure records to compare with (logs.exposure / exposure_events empty)", **evidence)
    extra = [row["identifier"] for row in rows if not row["allowed"]]
    if extra:
        return failed(f"records carry identifiers not allowed: {', '.join(extra)}", **evidence)
    return passed(f"records carry only {', '.join(sorted(seen)) or 'no subject'} (allowed)", **evidence)


@SECTION.check(
    "privacy.request-id-coverage",
    items=("2.correlation-ids",),
    evidence=EvidenceClass.DATA,
    title="request_id is present in at least 99% of sampled exposure records",
    severity=Severity.MEDIUM,
    remediation="Send X-Request-Id from the caller (or keep the service-generated one) and log it with every "
    "exposure; outcomes must carry the same id to be joined.",
    reference=EXPOSURE_REF,
)
def request_id_coverage(ctx: AuditContext) -> Outcome:
    sample = exposure_sample(ctx)
    rows = []
    if sample.records:
        with_id = sum(1 for r in sample.records if r.get("request_id"))
        rows.append({"source": "exposure log files", "records": len(sample.records), "with_request_id": with_id})
    if ctx.params.database.dsn:
        db_rows = event_rows(ctx, "exposure_events")
        if db_rows:
            with_id = sum(1 for r in db_rows if r.get("request_id"))
            rows.append({"source": "exposure_events", "records": len(db_rows), "with_request_id": with_id})
    if not rows:
        return nothing_sampled(ctx, "exposure records (log files or exposure_events rows)")
    for row in rows:
        row["share"] = round(row["with_request_id"] / row["records"], 4)
    low = [row for row in rows if row["share"] < 0.99]
    evidence = {"threshold": 0.99, "samples": rows}
    if low:
        return failed(
            "request_id missing in " + ", ".join(f"{1 - r['share']:.1%} of {r['source']}" for r in low), **evidence
        )
    return passed("request_id in " + ", ".join(f"{r['share']:.1%} of {r['source']}" for r in rows), **evidence)


# --- salts -----------------------------------------------------------------------------------------------------------


def exposure_logging_on(ctx: AuditContext) -> bool | None:
    """Whether the service writes exposure logs (explicit switch, else on when a path is set); None: not visible."""
    return ctx.config.flag("EXPOSURE_LOG_ENABLED")


@dataclass
class SaltObservation:
    """How the service hashed the audit's own probe user in a live exposure record."""

    verdict: Status  # FAIL: empty salt; PASS: keyed (with the configured salt if visible); WARN: contradiction;
    # SKIP: logged raw, which shows nothing about the salt
    summary: str
    evidence: dict[str, Any]


def observed_subject_hash(ctx: AuditContext, salt: str | None) -> SaltObservation | None:
    """One live recommend as the audit's probe user, then its exposure record, found by request id in the newest
    exposure files: the stored subject hash is compared with HMAC-SHA256 keyed with an empty salt, plain SHA-256
    and (when the config shows it) the configured salt. None when there is no record to look at."""
    from recsys_audit.checks.s7_rollout import find_exposure

    def observe() -> SaltObservation | None:
        files, _, _ = collect_log_files(ctx, ctx.params.logs.exposure)
        if not files:
            return None
        tenant = ctx.params.tenants[0]
        response = accepted(ctx.service.recommend(tenant.id, tenant.surfaces[0], role=serving_role(ctx)))
        meta = (response.json_or_none() or {}).get("meta") or {}
        request_id = meta.get("request_id") or response.headers.get("x-request-id")
        if response.status != 200 or not request_id:
            return None
        newest = sorted((f.path for f in files), key=lambda path: path.stat().st_mtime, reverse=True)
        found = find_exposure(newest, request_id)
        if found is None:
            return None
        path, record = found
        stored = subject_values(record).get("user_id")
        evidence: dict[str, Any] = {"request_id": request_id, "exposure_file": path.name, "subject": PROBE_USER}
        if stored is None:
            return None
        forms = unkeyed_hashes(PROBE_USER)
        matched = next((form for form, digest in forms.items() if digest == stored), None)
        if stored == PROBE_USER:  # not hashed at all: privacy.subject-ids-hashed judges that; says nothing of the salt
            return SaltObservation(Status.SKIP, "the probe user was logged unhashed", {**evidence, "stored_as": "raw"})
        if matched:
            summary = f"the service hashed the probe user as {matched}: EXPOSURE_HASH_SALT is empty where it runs"
            return SaltObservation(Status.FAIL, summary, {**evidence, "stored_as": matched})
        if salt and stored != keyed_hash(salt, PROBE_USER):
            summary = "the service hashes with a different salt than the config sources show: they are not what runs"
            return SaltObservation(Status.WARN, summary, {**evidence, "stored_as": "another salt"})
        keyed = "with the configured salt" if salt else "with a non-empty salt"
        return SaltObservation(Status.PASS, f"observed: subject ids hashed {keyed}", {**evidence, "stored_as": keyed})

    return ctx.memo("s2:observed-subject-hash", observe)


@SECTION.check(
    "privacy.salts",
    items=("2.exposure-hash-salt",),
    evidence=EvidenceClass.DATA,
    title="Exposure and experiment salts are set when their feature is on, real (not empty or examples), and distinct",
    severity=Severity.HIGH,
    remediation="Generate each salt (e.g. 32 random bytes, base64), keep it in a secret store (Helm "
    "api.existingSecret), use a different value per purpose, and rotate it on a schedule; an empty salt leaves "
    "subject hashes dictionary-reversible.",
    reference="recsys-http-and-config §4 (production aborts only on empty salts), §7 (HMAC-SHA256 keyed by the salt)",
)
def salts(ctx: AuditContext) -> Outcome:
    config = ctx.config
    min_length = ctx.params.policies.min_salt_length
    needed = {
        "EXPOSURE_HASH_SALT": exposure_logging_on(ctx),
        "EXPERIMENT_ASSIGNMENT_SALT": config.flag("EXPERIMENT_ASSIGNMENT_ENABLED"),
    }
    rows = []
    verdicts: dict[str, tuple[Status, str]] = {}  # variable (or "observed") -> status and problem
    values: dict[str, str] = {}
    for name, feature_on in needed.items():
        setting = config.get(name)
        effective = setting
        if name == "EXPERIMENT_ASSIGNMENT_SALT" and setting.state == "default":
            effective = config.get("EXPOSURE_HASH_SALT")  # upstream falls back to the exposure salt
        row: dict[str, Any] = {"variable": name, "feature_on": feature_on, "state": effective.state}
        row.update(source=effective.source, length=None, problem=None)
        if feature_on is False:
            row["problem"] = "feature off: not needed"
            status = Status.PASS
        elif effective.value is None:
            row["problem"] = "kept in a secret the kit cannot read" if effective.state == "hidden" else "not visible"
            status = Status.WARN
        else:
            row["length"] = len(effective.value)
            row["problem"] = secret_problem(effective.value, min_length)
            status = Status.FAIL if row["problem"] else Status.PASS
            if effective.value:
                values[name] = effective.value
        verdicts[name] = (status, f"{name} {row['problem']}")
        rows.append(row)
    evidence: dict[str, Any] = {"min_length": min_length, "salts": rows}
    observed = None
    if needed["EXPOSURE_HASH_SALT"] is not False:
        observed = observed_subject_hash(ctx, config.value("EXPOSURE_HASH_SALT"))
        evidence["observed"] = observed.evidence if observed else "no exposure record of a live request to look at"
    if observed is not None and observed.verdict == Status.PASS and verdicts["EXPOSURE_HASH_SALT"][0] == Status.WARN:
        verdicts["EXPOSURE_HASH_SALT"] = (Status.PASS, "")  # the stored hash shows the invisible salt is set
    elif observed is not None and observed.verdict in {Status.FAIL, Status.WARN}:
        verdicts["observed"] = (observed.verdict, observed.summary)
    api_key_secret = config.value("API_KEY_HASH_SECRET")
    if api_key_secret and config.flag("API_KEY_ENABLED"):
        values["API_KEY_HASH_SECRET"] = api_key_secret
    if "EXPERIMENT_ASSIGNMENT_SALT" in values and config.get("EXPERIMENT_ASSIGNMENT_SALT").state == "default":
        values.pop("EXPERIMENT_ASSIGNMENT_SALT")  # the documented fallback, not a second use of one value
    shared = sorted({a for a in values for b in values if a != b and values[a] == values[b]})
    status = worst(*(s for s, _ in verdicts.values()))
    problems = "; ".join(text for s, text in verdicts.values() if s in {Status.FAIL, Status.WARN})
    if status == Status.FAIL:
        return failed(problems, **evidence)
    if status == Status.WARN:
        return warned(problems, **evidence)
    if shared:
        return warned(f"the same value serves several purposes ({', '.join(shared)})", **evidence)
    how = "observed in a live exposure record" if observed and observed.verdict == Status.PASS else "config"
    return passed(f"every needed salt is set, non-example, long enough and distinct ({how})", **evidence)


@SECTION.check(
    "privacy.salt-rotation-attested",
    items=("2.exposure-hash-salt",),
    evidence=EvidenceClass.ATTESTED,
    cannot_fail="manual by design: the service keeps no record of when a salt changed; only an attestation dates the "
    "last rotation",
    title="Salt rotation is scheduled and its last date attested",
    severity=Severity.LOW,
    remediation="Record the salt rotation procedure and the last rotation date; attest it in params "
    "(attestations: privacy.salt-rotation-attested, with a link and date).",
    reference=EXPOSURE_REF,
)
def salt_rotation_attested(ctx: AuditContext) -> Outcome:
    summary = "a reviewer attests the last rotation date of EXPOSURE_HASH_SALT / EXPERIMENT_ASSIGNMENT_SALT"
    return awaiting_attestation(ctx, "privacy.salt-rotation-attested", summary)


# --- hashing and PII ------------------------------------------------------------------------------------------------


@SECTION.check(
    "privacy.subject-ids-hashed",
    items=("2.exposure-hash-salt", "2.allowed-identifiers"),
    evidence=EvidenceClass.DATA,
    title="Subject ids in exposure logs and event tables look like HMAC-SHA256 hex, not raw ids",
    severity=Severity.CRITICAL,
    remediation="Log only HMAC-SHA256(EXPOSURE_HASH_SALT, id) for user/anonymous/session ids (service_v1 "
    "subject.*_hash); purge or re-hash the files and rows that hold raw ids.",
    reference=EXPOSURE_REF,
)
def subject_ids_hashed(ctx: AuditContext) -> Outcome:
    sample = exposure_sample(ctx)
    rows: list[dict[str, Any]] = []
    examples: list[str] = []
    checked = raw = 0
    for record in sample.records:
        for kind, value in subject_values(record).items():
            checked += 1
            if not HEX64.match(value):
                raw += 1
                if len(examples) < MAX_EXAMPLES:
                    examples.append(f"{kind}: {mask(value)}")
    if sample.records:
        rows.append({"source": "exposure log files", "subject_ids": checked, "not_hashed": raw})
    if ctx.params.database.dsn:
        for table in EVENT_TABLES:
            db_checked = db_raw = 0
            for row in event_rows(ctx, table):
                for column in ("user_key", "session_id"):
                    if row.get(column) is None:
                        continue
                    db_checked += 1
                    if not key_is_hashed(row[column]):
                        db_raw += 1
                        if len(examples) < MAX_EXAMPLES:
                            examples.append(f"{table}.{column}: {mask(key_text(row[column]))}")
            if db_checked:
                rows.append({"source": table, "subject_ids": db_checked, "not_hashed": db_raw})
    evidence = {"samples": rows, "examples": examples}
    if not rows:
        return nothing_sampled(ctx, "subject ids (exposure log files or event rows)")
    unhashed = [r for r in rows if r["not_hashed"]]
    if unhashed:
        listed = ", ".join(f"{r['not_hashed']}/{r['subject_ids']} in {r['source']}" for r in unhashed)
        return failed(f"raw subject ids: {listed}", **evidence)
    return passed(f"all {sum(r['subject_ids'] for r in rows)} sampled subject ids are 64-hex hashes", **evidence)


@SECTION.check(
    "privacy.pii-scan",
    items=("2.pii-stance",),
    evidence=EvidenceClass.DATA,
    title="A bounded sample of exposure logs and event rows holds no emails, phone numbers, IPs or declared PII",
    severity=Severity.HIGH,
    remediation="Keep PII out of request fields that are logged (context, item ids, meta); hash subject ids; purge "
    "the affected files/rows and add the pattern to the clients' validation.",
    reference=EXPOSURE_REF,
)
def pii_scan(ctx: AuditContext) -> Outcome:
    patterns = {name: re.compile(rx) for name, rx in {**PII_PATTERNS, **ctx.params.privacy.pii_patterns}.items()}
    sources: dict[str, list[str]] = {"exposure log files": exposure_sample(ctx).lines}
    if ctx.params.database.dsn:
        for table in EVENT_TABLES:
            texts = []
            for row in event_rows(ctx, table):
                texts.extend(str(row[c]) for c in ("meta_text", "request_text", "session_id") if row.get(c))
            sources[table] = texts
    rows = []
    examples: list[str] = []
    for source, texts in sources.items():
        if not texts:
            continue
        counts = dict.fromkeys(patterns, 0)
        for text in texts:
            for name, pattern in patterns.items():
                for match in pattern.finditer(text):
                    counts[name] += 1
                    if len(examples) < MAX_EXAMPLES:
                        examples.append(f"{name} in {source}: {mask(match.group(0))}")
        rows.append({"source": source, "scanned": len(texts), **counts})
    evidence = {"patterns": sorted(patterns), "samples": rows, "examples": examples}
    if not rows:
        return nothing_sampled(ctx, "exposure log lines or event rows")
    hits = sum(row[name] for row in rows for name in patterns)
    if hits:
        return failed(f"{hits} PII match(es) in the sample", **evidence)
    return passed(f"no PII pattern in {sum(r['scanned'] for r in rows)} sampled records", **evidence)


# --- retention and partitions -------------------------------------------------------------------------------------


@SECTION.check(
    "privacy.exposure-retention",
    items=("2.retention-access",),
    evidence=EvidenceClass.DATA,
    title="Exposure retention is configured within policy and nothing older is kept",
    severity=Severity.MEDIUM,
    remediation="Log to a directory (daily files, pruned) with EXPOSURE_LOG_RETENTION_DAYS ≤ the policy, and drop "
    "or detach event-table partitions older than the policy.",
    reference="recsys-data-and-ops §3.5 (retention in directory mode only), §1.4 (no drop helper)",
)
def exposure_retention(ctx: AuditContext) -> Outcome:
    policy = ctx.params.policies.exposure_retention_days
    today = dt.datetime.now(dt.UTC).date()
    statuses: list[Status] = []
    problems: list[str] = []
    configured = ctx.config.value("EXPOSURE_LOG_RETENTION_DAYS")
    try:
        retention = int(configured) if configured is not None else None
    except ValueError:
        retention = None
    if exposure_logging_on(ctx) is not False:
        if retention is None:
            statuses.append(Status.WARN)
            problems.append(f"EXPOSURE_LOG_RETENTION_DAYS not readable ({configured!r})")
        elif retention <= 0 or retention > policy:
            statuses.append(Status.FAIL)
            problems.append(f"EXPOSURE_LOG_RETENTION_DAYS={retention} exceeds the {policy}-day policy")
    sample = exposure_sample(ctx)
    oldest_rows: list[dict[str, Any]] = []
    days = [f.day for f in sample.files if f.day]
    if days:
        age = (today - min(days)).days
        oldest_rows.append({"source": "exposure log files", "oldest": str(min(days)), "age_days": age})
        if age > policy + 1:
            statuses.append(Status.FAIL)
            problems.append(f"exposure file from {min(days)} is {age} days old")
    if days and max(days) > today + dt.timedelta(days=1):
        statuses.append(Status.WARN)
        problems.append(f"exposure file dated {max(days)}, in the future: file dates cannot be trusted")
    if any(f.day is None for f in sample.files) and not sample.directories:
        statuses.append(Status.WARN)
        problems.append("exposure log is a single file: the service never prunes it")
    if not sample.files and exposure_logging_on(ctx) is not False:
        statuses.append(Status.WARN)
        problems.append("no exposure log files inspected (logs.exposure): what is kept is not known")
    if ctx.params.database.dsn:
        for table in EVENT_TABLES:
            if not ctx.db.table_exists(table):
                continue
            # min(occurred_at) walks the (occurred_at, id) primary-key index of each partition: no scan.
            oldest = ctx.db.scalar(f"SELECT min(occurred_at) FROM {table}")
            if oldest is None:
                continue
            age = (dt.datetime.now(dt.UTC) - oldest).days
            oldest_rows.append({"source": table, "oldest": oldest.isoformat(), "age_days": age})
            if age > policy + 1:
                statuses.append(Status.FAIL)
                problems.append(f"{table} keeps rows {age} days old")
    evidence = {
        "policy_days": policy,
        "config": ctx.config.rows(["EXPOSURE_LOG_PATH", "EXPOSURE_LOG_RETENTION_DAYS"]),
        "oldest": oldest_rows,
    }
    status = worst(*statuses) if statuses else Status.PASS
    if status == Status.FAIL:
        return failed("; ".join(problems), **evidence)
    if status == Status.WARN:
        return warned("; ".join(problems), **evidence)
    configured_text = f"retention {retention} d ≤ policy {policy} d" if retention else f"policy {policy} d"
    return passed(f"{configured_text}; nothing older kept", **evidence)


# --- access control --------------------------------------------------------------------------------------------------

READERS_SQL = """
SELECT c.relname AS table_name, r.rolname AS role, r.rolsuper AS superuser, r.rolcanlogin AS can_login,
       pg_get_userbyid(c.relowner) = r.rolname AS owner
FROM pg_class c CROSS JOIN pg_roles r
WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%s)
  AND r.rolname !~ '^pg_' AND (r.rolsuper OR has_table_privilege(r.oid, c.oid, 'SELECT'))
ORDER BY c.relname, r.rolname
"""
PUBLIC_SQL = """
SELECT c.relname AS table_name FROM pg_class c, aclexplode(c.relacl) a
WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%s) AND a.grantee = 0 AND a.privilege_type = 'SELECT'
"""


@SECTION.check(
    "privacy.event-table-access",
    items=("2.retention-access",),
    evidence=EvidenceClass.DATA,
    title="Only the allowed roles can read exposure, interaction and audit tables",
    severity=Severity.HIGH,
    remediation="REVOKE SELECT on exposure_events, interaction_events and audit_log from every role not listed in "
    "database.allowed_event_readers (and from PUBLIC); grant reads through a dedicated group role.",
    reference="recsys-data-and-ops §1.2, §1.5",
)
def event_table_access(ctx: AuditContext) -> Outcome:
    tables = list(PROTECTED_TABLES)
    readers = ctx.db.query(READERS_SQL, (tables,))
    public = [row["table_name"] for row in ctx.db.query(PUBLIC_SQL, (tables,))]
    allowed = set(ctx.params.database.allowed_event_readers)
    if ctx.params.database.service_role:
        allowed.add(ctx.params.database.service_role)
    auditor = ctx.db.scalar("SELECT current_user")
    superusers = sorted({r["role"] for r in readers if r["superuser"]})
    # The table owner (it cannot be revoked) and this audit's own role are readers by construction.
    table_rows = [
        {
            "table": r["table_name"],
            "role": r["role"],
            "owner": r["owner"],
            "can_login": r["can_login"],
            "allowed": r["role"] in allowed or r["owner"] or r["role"] == auditor,
        }
        for r in readers
        if not r["superuser"]
    ]
    evidence = {
        "allowed": sorted(allowed),
        "auditor": auditor,
        "superusers": superusers,
        "public_select": public,
        "readers": table_rows,
        "sql": " ".join(READERS_SQL.split()),
    }
    if not table_rows and not public:
        return skipped("none of the protected tables exists")
    unexpected = sorted({r["role"] for r in table_rows if not r["allowed"]})
    if public:
        return failed(f"PUBLIC can read {', '.join(public)}", **evidence)
    if unexpected and not ctx.params.database.allowed_event_readers:
        return warned(
            f"no allowed readers declared (database.allowed_event_readers) to judge: {', '.join(unexpected)}",
            **evidence,
        )
    if unexpected:
        return failed(
            f"roles outside the allowed list can read event/audit tables: {', '.join(unexpected)}", **evidence
        )
    readers_text = ", ".join(sorted({r["role"] for r in table_rows})) or "none"
    return passed(
        f"only the owner, the service/allowed roles and superusers can read them ({readers_text})", **evidence
    )


@SECTION.check(
    "privacy.log-file-permissions",
    items=("2.retention-access",),
    evidence=EvidenceClass.DATA,
    title="Exposure and audit log files are private to the service (files 0600, directories 0700)",
    severity=Severity.MEDIUM,
    remediation="chmod 0600 the log files and 0700 their directories (the service creates them so); keep the log "
    "volume out of other containers' mounts.",
    reference="recsys-http-and-config §7-8 (files 0600, dirs 0700)",
)
def log_file_permissions(ctx: AuditContext) -> Outcome:
    entries = [*ctx.params.logs.exposure, *ctx.params.logs.audit]
    if not entries:
        if exposure_logging_on(ctx) is False and ctx.config.flag("AUDIT_LOG_ENABLED") is False:
            return skipped("exposure and audit file logs are off")
        return warned("no log paths in params (logs.exposure, logs.audit): their permissions were not inspected")
    files, directories, missing = collect_log_files(ctx, entries)
    # a log file the service has not written yet (e.g. no admin write so far) is not a finding; a missing folder is
    not_created = [path for path in missing if Path(path).parent.is_dir()]
    missing = [path for path in missing if path not in not_created]
    rows = [
        {"path": str(path), "kind": "directory", "mode": oct(mode), "open_to_others": bool(mode & 0o077)}
        for path, mode in directories
    ]
    rows += [
        {"path": str(f.path), "kind": "file", "mode": oct(f.mode), "open_to_others": bool(f.mode & 0o077)}
        for f in sorted(files, key=lambda f: f.path)
    ]
    evidence = {"paths": rows, "missing": missing, "not_created_yet": not_created}
    if not rows:
        return warned("none of the log paths in params exists here", **evidence)
    open_rows = [r for r in rows if r["open_to_others"]]
    if open_rows:
        return failed(
            f"{len(open_rows)} log path(s) readable by group/others, e.g. {open_rows[0]['path']} "
            f"({open_rows[0]['mode']})",
            **evidence,
        )
    if missing:
        return warned(f"{len(missing)} log path(s) not found", **evidence)
    return passed(f"{len(rows)} log path(s) private to their owner", **evidence)


@SECTION.check(
    "privacy.pii-stance-documented",
    items=("2.pii-stance",),
    evidence=EvidenceClass.ATTESTED,
    cannot_fail="manual by design: which fields count as PII is an organisational decision; the logs themselves are "
    "scanned by privacy.pii-scan",
    title="The PII stance is documented",
    severity=Severity.LOW,
    remediation="Write down which request fields are PII, which may be logged and how (hashed, dropped), link it and "
    "attest it in params (attestations: privacy.pii-stance-documented).",
    reference="production-readiness checklist §2",
)
def pii_stance_documented(ctx: AuditContext) -> Outcome:
    return awaiting_attestation(
        ctx,
        "privacy.pii-stance-documented",
        "a reviewer attests the documented PII stance (link + date)",
        declared_patterns=sorted(ctx.params.privacy.pii_patterns),
    )
