"""Connectivity before the notebooks start: can the audit reach the target, its Prometheus and its database at all?

When an endpoint is down, every check that needs it ends as an ``error`` finding with its own copy of the same
cause; the preflight names that cause once ("target unreachable: connection refused at …"), for the console and
for findings.json (``connectivity``). It changes no judgement: the notebooks still run, every check still records
its own finding, and the run is incomplete (exit 3) exactly when checks could not be evaluated.

Each probe is one harmless read, bounded by the target's timeout: ``GET /livez`` of the service (through the same
client, TLS settings and audit marks as every service probe), ``GET /-/ready`` of Prometheus, and ``SELECT 1`` in a
read-only database session. Any HTTP answer, whatever its status, means the endpoint is reachable.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from recsys_audit.params import Params
from recsys_audit.probes import ProbeError, http

LIVENESS_PATH = "/livez"
PROMETHEUS_READY_PATH = "/-/ready"
SMALL_ANSWER = http.Cap("answer", 64 * http.KiB)


@dataclass(frozen=True)
class Reachability:
    endpoint: str  # target | prometheus | database
    where: str  # the URL, or the database as host and port (never the DSN)
    problem: str | None = None  # why it cannot be reached; None when it answered

    @property
    def text(self) -> str:
        return f"{self.endpoint} unreachable: {self.problem}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reachable": self.problem is None}


def _http_reason(exc: ProbeError, where: str) -> str:
    """The cause of a failed request in a few words: ``connection refused at URL``."""
    reason = str(exc).split(": ", 1)[-1]
    if reason.startswith("connection failed (") and reason.endswith(")"):
        reason = reason[len("connection failed (") : -1]
    return f"{reason} at {where}"


def _target(params: Params) -> Reachability:
    from recsys_audit.probes.service import ServiceClient

    where = params.target.base_url.rstrip("/")
    client = ServiceClient(params)
    try:
        client.get(LIVENESS_PATH)
    except ProbeError as exc:
        return Reachability("target", where, _http_reason(exc, where))
    finally:
        client.close()
    return Reachability("target", where)


def _prometheus(params: Params) -> Reachability | None:
    if not params.prometheus.url:
        return None
    where = params.prometheus.url.rstrip("/")
    timeout_s = params.target.timeout_s
    client = http.client(timeout_s=timeout_s)
    try:
        http.fetch(client, "GET", where + PROMETHEUS_READY_PATH, cap=SMALL_ANSWER, deadline_s=timeout_s)
    except ProbeError as exc:
        return Reachability("prometheus", where, _http_reason(exc, where))
    finally:
        client.close()
    return Reachability("prometheus", where)


def _database(params: Params) -> Reachability | None:
    from recsys_audit.probes.database import ReadOnlyDatabase

    if params.database.dsn is None:
        return None
    timeout_s = max(1, round(params.target.timeout_s))
    database = ReadOnlyDatabase(params.database.dsn, params.database.statement_timeout_ms, connect_timeout_s=timeout_s)
    try:
        database.scalar("SELECT 1")
    except ProbeError as exc:
        return Reachability("database", "database", str(exc).removeprefix("database connection failed: "))
    finally:
        database.close()
    return Reachability("database", "database")


PROBES: tuple[Callable[[Params], Reachability | None], ...] = (_target, _prometheus, _database)


def check_all(params_list: list[Params]) -> list[list[Reachability]]:
    """The reachability of each environment's endpoints, probed all at once (at most one timeout in all)."""
    jobs = [(index, probe) for index in range(len(params_list)) for probe in PROBES]
    results: list[list[Reachability]] = [[] for _ in params_list]
    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        answers = pool.map(lambda job: job[1](params_list[job[0]]), jobs)
        for (index, _), answer in zip(jobs, answers, strict=True):
            if answer is not None:
                results[index].append(answer)
    return results


def root_cause(reachability: list[dict[str, Any]], not_evaluated: int) -> str:
    """One line naming what could not be reached and what that cost, e.g. "target unreachable: connection refused
    at http://…; 48 checks not evaluated"; empty when everything answered."""
    down = [Reachability(r["endpoint"], r["where"], r["problem"]) for r in reachability if r.get("problem")]
    if not down:
        return ""
    return "; ".join([*(r.text for r in down), f"{not_evaluated} checks not evaluated"])
