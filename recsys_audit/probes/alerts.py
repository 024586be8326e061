"""Alert-rule analysis: load alerting rules, classify what each one measures, and validate them with ``promtool``.

Rules come from the Prometheus rules API (what is really loaded) or from rule files (what is deployed). Each rule is
classified by the series its expression reads — not by its name, which can promise more than the query measures —
and then checked for the traps seen in practice: an "error" alert that counts client mistakes, a ratio whose
denominator is clamped so that quiet hours can never alert, thresholds looser than the environment's policy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recsys_audit.probes import ProbeError

REQUESTS = "recsys_recommendation_requests_total"
LATENCY_BUCKETS = "recsys_recommendation_latency_seconds_bucket"
# Outcomes caused by the caller, not the service (reference: recsys-http-and-config §5).
CLIENT_OUTCOMES = ("invalid_request", "validation_failed", "forbidden")
SERVER_OUTCOMES = ("overload", "artifact_incompatible", "internal_error")

# What an alert set must watch; "upstream" ones ship with recsys-service, the others it lacks.
COVERAGE = {
    "error_rate": "server error ratio of recommendation requests",
    "empty_recs": "share of successful requests that returned no items",
    "p95_latency": "p95 recommendation latency",
    "stale_manifest": "age of the artifact manifest",
    "artifact_failures": "artifact load failures",
    "target_down": "scrape target down or its series absent",
    "readiness": "replicas not ready",
    "backpressure": "backpressure rejections (503 RECSYS_OVERLOADED)",
}
UPSTREAM_COVERAGE = ("error_rate", "empty_recs", "p95_latency", "stale_manifest", "artifact_failures")
ARTIFACT_ONLY = ("stale_manifest", "artifact_failures")


@dataclass
class AlertRule:
    name: str
    expr: str
    for_s: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    group: str = ""
    source: str = ""  # rule file or "Prometheus rules API"
    health: str = ""  # from the rules API: ok | err | unknown
    last_error: str = ""

    @property
    def measures(self) -> set[str]:
        return classify(self)

    def row(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "measures": ", ".join(sorted(self.measures)) or "-",
            "for": f"{self.for_s:g}s",
            "expr": " ".join(self.expr.split())[:160],
        }


# --- loading ---------------------------------------------------------------------------------------------------


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_seconds(text: str | float | int | None) -> float:
    """A Prometheus/Go duration (``10m``, ``1h30m``, ``200ms``) or a number of seconds -> seconds."""
    if text is None or text == "":
        return 0.0
    if isinstance(text, int | float):
        return float(text)
    parts = _DURATION_PART.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def rules_from_api(api_rules: list[dict[str, Any]]) -> list[AlertRule]:
    """Alerting rules from :meth:`PrometheusClient.rules` (recording rules are ignored)."""
    return [
        AlertRule(
            name=rule.get("name", ""),
            expr=rule.get("query", ""),
            for_s=float(rule.get("duration") or 0),
            labels=dict(rule.get("labels") or {}),
            annotations=dict(rule.get("annotations") or {}),
            group=rule.get("group", ""),
            source="Prometheus rules API",
            health=rule.get("health", ""),
            last_error=rule.get("lastError", ""),
        )
        for rule in api_rules
        if rule.get("type") == "alerting"
    ]


def rules_from_file(path: Path) -> list[AlertRule]:
    """Alerting rules of one Prometheus rule file (``groups: [{name, rules: [...]}]``)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ProbeError(f"rule file {path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ProbeError(f"rule file {path}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, list):
        raise ProbeError(f"rule file {path}: no 'groups' list — is this a Prometheus rule file?")
    rules = []
    for group in groups:
        for rule in group.get("rules") or []:
            if "alert" not in rule:
                continue
            try:
                for_s = duration_seconds(rule.get("for"))
            except ValueError as exc:
                raise ProbeError(f"rule file {path}: alert {rule['alert']}: {exc}") from None
            rules.append(
                AlertRule(
                    name=str(rule["alert"]),
                    expr=str(rule.get("expr", "")),
                    for_s=for_s,
                    labels={str(k): str(v) for k, v in (rule.get("labels") or {}).items()},
                    annotations={str(k): str(v) for k, v in (rule.get("annotations") or {}).items()},
                    group=str(group.get("name", "")),
                    source=str(path),
                )
            )
    return rules


# --- classification --------------------------------------------------------------------------------------------


def _matcher(expr: str, label: str) -> list[tuple[str, str]]:
    """Every ``label<op>"value"`` matcher in an expression, as (op, value)."""
    return re.findall(rf'\b{label}\s*(=~|!~|!=|=)\s*"([^"]*)"', expr)


def _counts_errors(expr: str) -> bool:
    if REQUESTS in expr:
        for op, value in _matcher(expr, "outcome"):
            if op in {"!=", "!~"} and "success" in value:
                return True
            if op in {"=", "=~"} and any(o in value for o in SERVER_OUTCOMES + CLIENT_OUTCOMES):
                return True
    if "http_request" in expr:
        if re.search(r'route\s*=~?\s*"[^"]*(readyz|healthz|livez|health)', expr):
            return False  # a failing health route is readiness, not the request error rate
        return any(op in {"=~", "="} and value.startswith(("5", "4")) for op, value in _matcher(expr, "status"))
    return False


def _is_readiness(rule: AlertRule) -> bool:
    expr = rule.expr
    if re.search(r"kube_(pod|deployment|statefulset)\w*(ready|available|unavailable)", expr):
        return True
    if "probe_success" in expr or "probe_http_status_code" in expr:
        return True
    return bool(re.search(r"ready|readyz", rule.name + " " + expr, re.IGNORECASE))


def classify(rule: AlertRule) -> set[str]:
    """What an alert measures, from the series its expression reads."""
    expr = rule.expr
    found: set[str] = set()
    if _counts_errors(expr):
        found.add("error_rate")
    if REQUESTS in expr and any(op in {"=", "=~"} and "true" in v for op, v in _matcher(expr, "empty")):
        found.add("empty_recs")
    if re.search(r"histogram_quantile\s*\(\s*0?\.9[5-9]", expr) and (
        LATENCY_BUCKETS in expr or "http_request_duration_seconds_bucket" in expr
    ):
        found.add("p95_latency")
    if "recsys_artifact_manifest_age_seconds" in expr:
        found.add("stale_manifest")
    if "recsys_artifact_load_failures_total" in expr:
        found.add("artifact_failures")
    if "recsys_backpressure_rejections_total" in expr:
        found.add("backpressure")
    if re.search(r"\bup\b\s*(\{[^}]*\})?\s*(==|<)\s*[01]\b", expr) or re.search(r"\babsent(_over_time)?\s*\(", expr):
        found.add("target_down")
    if _is_readiness(rule):
        found.add("readiness")
    return found


def coverage(rules: list[AlertRule], artifact_mode: bool) -> list[dict[str, Any]]:
    """One row per required measurement: which alerts cover it (empty = missing)."""
    rows = []
    for key, description in COVERAGE.items():
        if key in ARTIFACT_ONLY and not artifact_mode:
            continue
        alerts = sorted(rule.name for rule in rules if key in rule.measures)
        rows.append(
            {
                "measure": key,
                "what": description,
                "ships_upstream": key in UPSTREAM_COVERAGE,
                "alerts": ", ".join(alerts) or "MISSING",
            }
        )
    return rows


# --- what each alert really measures ---------------------------------------------------------------------------

_THRESHOLD = re.compile(r"(>|>=)\s*([0-9.eE+-]+)\s*$")


def threshold(expr: str) -> float | None:
    """The numeric threshold of an ``... > N`` expression, if it ends with one."""
    match = _THRESHOLD.search(expr.strip())
    if not match:
        return None
    try:
        return float(match.group(2))
    except ValueError:
        return None


# What recsys-service exports (reference: recsys-http-and-config §5): a selector naming anything else matches nothing.
EXPORTED = {
    "recsys_recommendation_requests_total": {
        "endpoint": {"recommend", "similar"},
        "outcome": {"success", *CLIENT_OUTCOMES, *SERVER_OUTCOMES},
        "empty": {"true", "false"},
    },
    "recsys_recommendation_latency_seconds": {
        "endpoint": {"recommend", "similar"},
        "outcome": {"success", *CLIENT_OUTCOMES, *SERVER_OUTCOMES},
    },
    "recsys_recommendation_returned_items": {"endpoint": {"recommend", "similar"}},
    "recsys_recommendation_warnings": {"endpoint": {"recommend", "similar"}},
    "recsys_cache_requests_total": {"cache": {"tenant_config", "tenant_rules"}, "result": {"hit", "miss"}},
    "recsys_backpressure_rejections_total": {},
    "recsys_artifact_load_failures_total": {
        "kind": {"manifest", "popularity", "cooc", "implicit", "content_sim", "session_seq", "request"}
    },
    "recsys_artifact_manifest_age_seconds": {},
    "recsys_artifact_manifest_artifacts": {},
}
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_SELECTOR = re.compile(r"\b(recsys_[a-zA-Z0-9_]+)\s*(\{[^}]*\})?")
_LITERAL_ALTERNATIVES = re.compile(r"^[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*$")


@dataclass(frozen=True)
class AlertProblem:
    text: str
    blind: bool  # the alert cannot fire when it should (never fires, or only after the policy is broken)


def _family(name: str) -> str | None:
    """The exported family a series name belongs to, or None when recsys-service exports no such series."""
    if name in EXPORTED:
        return name
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in EXPORTED:
            return name.removesuffix(suffix)
    return None


def unmatched_selectors(expr: str) -> list[str]:
    """Selectors of recsys series that can match nothing: an unknown series or a label value never set."""
    found = []
    for name, braces in _SELECTOR.findall(expr):
        family = _family(name)
        if family is None:
            found.append(f"reads {name}, which recsys-service does not export")
            continue
        for label, op, value in re.findall(r'\b(\w+)\s*(=~|=)\s*"([^"]*)"', braces or ""):
            known = EXPORTED[family].get(label)
            if known is None:
                if label not in {"job", "instance", "le"}:
                    found.append(f'matches {label}="{value}", a label {name} does not have')
                continue
            if op == "=~" and not _LITERAL_ALTERNATIVES.match(value):
                continue  # a real regular expression: not judged
            if not set(value.split("|") if op == "=~" else [value]) & known:
                found.append(f'matches {label}{op}"{value}", a value recsys-service never sets')
    return found


def semantic_problems(
    rule: AlertRule,
    *,
    latency_p95_ms: float,
    manifest_max_age_s: float,
    publish_interval_s: float | None,
) -> list[AlertProblem]:
    """Ways an alert does not measure what its name promises (empty list = none found). ``blind`` problems keep it
    from firing when it should; the others make it noisy or hide quiet periods."""
    problems = []
    measures = rule.measures
    expr = rule.expr
    for text in unmatched_selectors(expr):
        problems.append(AlertProblem(f"{text}: it can never fire", blind=True))
    if "error_rate" in measures and REQUESTS in expr:
        for op, value in _matcher(expr, "outcome"):
            if op in {"!=", "!~"} and "success" in value:
                problems.append(
                    AlertProblem(
                        "counts every non-success outcome as an error, client mistakes included "
                        f'({", ".join(CLIENT_OUTCOMES)}) — match outcome=~"{"|".join(SERVER_OUTCOMES)}"',
                        blind=False,
                    )
                )
            elif op in {"=", "=~"} and any(o in value for o in CLIENT_OUTCOMES):
                problems.append(AlertProblem(f"its outcome matcher '{value}' includes client outcomes", blind=False))
    if measures & {"error_rate", "empty_recs"} and re.search(r"clamp_min\s*\(", expr):
        problems.append(
            AlertProblem("clamps the ratio's denominator, so low-traffic periods can never alert", blind=False)
        )
    limit = threshold(expr)
    if "p95_latency" in measures and limit is not None:
        limit_ms = limit * 1000 if "seconds" in expr else limit
        if limit_ms > latency_p95_ms:
            problems.append(
                AlertProblem(f"fires above {limit_ms:g} ms, looser than the p95 SLO of {latency_p95_ms:g} ms", True)
            )
    if "stale_manifest" in measures and limit is not None:
        if publish_interval_s and limit < publish_interval_s:
            problems.append(
                AlertProblem(
                    f"fires at {limit:g} s but manifests are published every {publish_interval_s:g} s: it fires by "
                    "design",
                    blind=False,
                )
            )
        if limit > manifest_max_age_s:
            problems.append(
                AlertProblem(
                    f"fires at {limit:g} s, later than the policy's maximum age {manifest_max_age_s:g} s", blind=True
                )
            )
    if rule.health == "err":
        problems.append(AlertProblem(f"Prometheus cannot evaluate it: {rule.last_error}"[:200], blind=True))
    return problems


# --- promtool --------------------------------------------------------------------------------------------------


@dataclass
class PromtoolResult:
    target: str
    ok: bool
    output: str

    def row(self) -> dict[str, Any]:
        return {"rules": self.target, "valid": self.ok, "promtool": self.output[:300]}


def promtool_path() -> str:
    path = shutil.which("promtool")
    if not path:
        raise ProbeError("promtool not found on PATH — install the 'prometheus' package (it ships promtool)")
    return path


def promtool_check(path: Path, timeout_s: float = 30) -> PromtoolResult:
    """``promtool check rules FILE``: syntax, PromQL and template validity."""
    try:
        done = subprocess.run(
            [promtool_path(), "check", "rules", str(path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ProbeError(f"promtool check rules {path}: no answer in {timeout_s:g} s") from None
    output = " ".join((done.stdout + " " + done.stderr).split())
    return PromtoolResult(str(path), done.returncode == 0, output)


def as_rule_file(rules: list[AlertRule]) -> dict[str, Any]:
    """The rule-file form of rules (used to re-validate what the rules API reports as loaded)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for rule in rules:
        entry: dict[str, Any] = {"alert": rule.name, "expr": rule.expr}
        if rule.for_s:
            entry["for"] = f"{int(rule.for_s)}s" if rule.for_s == int(rule.for_s) else f"{rule.for_s}s"
        if rule.labels:
            entry["labels"] = rule.labels
        if rule.annotations:
            entry["annotations"] = rule.annotations
        groups.setdefault(rule.group or "recsys-audit", []).append(entry)
    return {"groups": [{"name": name, "rules": entries} for name, entries in groups.items()]}


def promtool_check_rules(rules: list[AlertRule]) -> PromtoolResult:
    """Validate rules that came from the API by writing them to a temporary rule file."""
    with tempfile.TemporaryDirectory(prefix="recsys-audit-rules-") as folder:
        path = Path(folder) / "loaded-rules.yml"
        path.write_text(yaml.safe_dump(as_rule_file(rules), sort_keys=False), encoding="utf-8")
        result = promtool_check(path)
    return PromtoolResult("rules loaded in Prometheus", result.ok, result.output.replace(str(path), "loaded-rules.yml"))
