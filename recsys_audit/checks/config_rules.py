"""Config rules as data: the "variable must / must not be X" checks of ``config_rules.yaml``, run by one evaluator.

Modelled on kube-bench's rule files: each rule names its audit source, its tests (variable, compare op, value),
severity, remediation, checklist items and an optional production-only guard. Each section module calls
:func:`register_config_rules` so the rules are ordinary catalog checks of their section.

The evaluator fails closed: a value the kit cannot see (kept in a secret it cannot read, interpolated at deploy
time, or behind an ``existingSecret``) is never a pass, and config sources of different kinds that disagree on a
variable are shown as contradictory — a pass needs every source to satisfy the test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys_audit.checklist import EvidenceClass, load_yaml
from recsys_audit.findings import Outcome, Severity, Status, failed, passed, skipped, warned, worst
from recsys_audit.probes.config import DEFAULTS, ConfigValue, ConfigView, is_secret_name, parse_duration

if TYPE_CHECKING:
    from recsys_audit.catalog import Section
    from recsys_audit.context import AuditContext

RULES_FILE = Path(__file__).with_name("config_rules.yaml")
_TRUE = {"1", "t", "true"}
_FALSE = {"0", "f", "false"}


class RuleError(ValueError):
    """A malformed rule in config_rules.yaml (names the rule and the field)."""


# --- compare operations ------------------------------------------------------------------------------------------
# Each takes the effective text of the variable and the rule's value; it returns None when the test holds, else
# what is wrong. A value the service itself cannot parse is wrong too: the service refuses to start with it.


def _bool(name: str, text: str) -> bool | str:
    lowered = text.strip().lower()
    if not lowered and DEFAULTS.get(name) is not None:  # an empty variable takes the upstream default
        lowered = DEFAULTS[name]
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return "is not a boolean: the service refuses to start"


def _is(expected: bool) -> Callable[[str, str, Any], str | None]:
    def compare(name: str, text: str, _: Any) -> str | None:
        parsed = _bool(name, text)
        if isinstance(parsed, str):
            return parsed
        return None if parsed is expected else ""

    return compare


def _number(text: str, parse: Callable[[str], float | None], kind: str) -> float | str:
    value = parse(text)
    return f"is not {kind}: the service refuses to start" if value is None else value


def _int(text: str) -> float | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _greater(parse: Callable[[str], float | None], kind: str) -> Callable[[str, str, Any], str | None]:
    def compare(name: str, text: str, limit: Any) -> str | None:
        value = _number(text, parse, kind)
        if isinstance(value, str):
            return value
        return None if value > float(limit) else ""

    return compare


OPS: dict[str, Callable[[str, str, Any], str | None]] = {
    "is_true": _is(True),
    "is_false": _is(False),
    "eq": lambda name, text, value: None if text.strip() == str(value) else "",
    "ne": lambda name, text, value: None if text.strip() != str(value) else "",
    "in": lambda name, text, values: None if text.strip().lower() in {str(v).lower() for v in values} else "",
    "not_in": lambda name, text, values: None if text.strip().lower() not in {str(v).lower() for v in values} else "",
    "nonempty": lambda name, text, _: None if text.strip() else "",
    "int_gt": _greater(_int, "an integer"),
    "duration_gt": _greater(parse_duration, "a Go duration"),
}
OP_WORDS = {
    "is_true": "true",
    "is_false": "false",
    "eq": "= {value}",
    "ne": "≠ {value}",
    "in": "one of {value}",
    "not_in": "none of {value}",
    "nonempty": "set (not empty)",
    "int_gt": "> {value}",
    "duration_gt": "> {value} s",
}


# --- the rules -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleTest:
    variable: str
    op: str
    value: Any = None
    why: str = ""  # what a wrong value does, shown after "NAME=value"
    outside_production: str = "fail"  # a violation outside production: fail, or warn

    @property
    def expected(self) -> str:
        return OP_WORDS[self.op].format(value=self.value)


@dataclass(frozen=True)
class ConfigRule:
    id: str
    section: int
    items: tuple[str, ...]
    title: str
    severity: Severity
    remediation: str
    reference: str
    tests: tuple[RuleTest, ...]
    when: tuple[RuleTest, ...] = ()
    only_if_production: bool = False
    audit: str = "config"
    variables: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        names = [t.variable for t in (*self.when, *self.tests)]
        object.__setattr__(self, "variables", tuple(dict.fromkeys(names)))


def _test(rule_id: str, entry: dict[str, Any]) -> RuleTest:
    unknown = set(entry) - {"variable", "op", "value", "why", "outside_production"}
    if unknown or "variable" not in entry or entry.get("op") not in OPS:
        raise RuleError(f"{RULES_FILE.name}: {rule_id}: a test needs variable and op (one of {', '.join(OPS)})")
    if entry.get("outside_production", "fail") not in {"fail", "warn"}:
        raise RuleError(f"{RULES_FILE.name}: {rule_id}: outside_production is fail or warn")
    return RuleTest(**entry)


@cache
def load_rules() -> tuple[ConfigRule, ...]:
    document = load_yaml(RULES_FILE)
    rules = []
    for entry in document["rules"]:
        rule_id = entry.get("id", "?")
        if entry.get("audit", "config") != "config":
            raise RuleError(f"{RULES_FILE.name}: {rule_id}: audit must be config (the deployment's config sources)")
        try:
            rules.append(
                ConfigRule(
                    id=rule_id,
                    section=int(entry["section"]),
                    items=tuple(entry["items"]),
                    title=entry["title"],
                    severity=Severity(entry["severity"]),
                    remediation=entry["remediation"],
                    reference=entry.get("reference", ""),
                    tests=tuple(_test(rule_id, t) for t in entry["tests"]),
                    when=tuple(_test(rule_id, t) for t in entry.get("when", [])),
                    only_if_production=bool((entry.get("only_if") or {}).get("production", False)),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RuleError(f"{RULES_FILE.name}: {rule_id}: {exc}") from None
    return tuple(rules)


def register_config_rules(section: Section) -> None:
    """Add the rules of ``section`` to it as checks (same ids, metadata and notebook as hand-written checks)."""
    for rule in load_rules():
        if rule.section != section.number:
            continue

        def evaluate(ctx: AuditContext, rule: ConfigRule = rule) -> Outcome:
            return evaluate_rule(rule, ctx.config, production=ctx.params.target.production)

        section.check(
            rule.id,
            items=rule.items,
            evidence=EvidenceClass.CONFIG,
            title=rule.title,
            severity=rule.severity,
            remediation=rule.remediation,
            reference=rule.reference,
        )(evaluate)


# --- the evaluator -------------------------------------------------------------------------------------------------


def shown(setting: ConfigValue) -> str:
    """The value as evidence may show it: secrets by length only, invisible values by their state."""
    if setting.value is None:
        return f"<{setting.state}>"
    if is_secret_name(setting.name):
        return f"<{len(setting.value)} characters>"
    return setting.value if setting.value.strip() else "(empty)"


def _not_visible(setting: ConfigValue) -> str:
    return "kept in a secret the kit cannot read" if setting.state == "hidden" else setting.source


def _violation(test: RuleTest, setting: ConfigValue, wrong: str) -> str:
    if wrong:  # the service cannot parse the value
        return f"{test.variable}={shown(setting)} {wrong}"
    if test.op == "nonempty":
        return f"{test.variable} is empty: {test.why}"
    return f"{test.variable}={shown(setting)} {test.why}"


@dataclass
class Judgement:
    status: Status
    problems: list[str]  # what is wrong, one line each
    invisible: dict[str, str]  # variable -> why its value cannot be seen
    rows: list[dict[str, Any]]


def judge(test: RuleTest, config: ConfigView, production: bool) -> Judgement:
    """One test against every source that gives the variable a value (one, unless they disagree)."""
    conflicting = config.contradictions(test.variable)
    settings = conflicting or [config.get(test.variable)]
    statuses, problems, invisible, rows = [], [], {}, []
    for setting in settings:
        if setting.value is None:
            status = Status.WARN
            invisible[test.variable] = _not_visible(setting)
        else:
            wrong = OPS[test.op](test.variable, setting.value, test.value)
            if wrong is None:
                status = Status.PASS
            else:
                downgraded = not production and test.outside_production == "warn"
                status = Status.WARN if downgraded else Status.FAIL
                problems.append(_violation(test, setting, wrong) + (" (not production)" if downgraded else ""))
        statuses.append(status)
        rows.append(
            {
                "variable": test.variable,
                "expected": test.expected,
                "found": shown(setting),
                "state": setting.state,
                "source": setting.source,
                "verdict": str(status),
            }
        )
    status = worst(*statuses)
    if conflicting:
        sources = ", ".join(f"{s.source} says {shown(s)}" for s in conflicting)
        problems.insert(0, f"config sources disagree on {test.variable}: {sources}")
        status = worst(status, Status.WARN)
    return Judgement(status, list(dict.fromkeys(problems)), invisible, rows)


def evaluate_rule(rule: ConfigRule, config: ConfigView, *, production: bool) -> Outcome:
    production = production or config.production
    evidence: dict[str, Any] = {"config": config.rows(list(rule.variables))}
    if rule.only_if_production and not production:
        return skipped("applies to production only (target.production is false and ENV is not production)", **evidence)
    for guard in rule.when:
        judged = judge(guard, config, production)
        if judged.status == Status.FAIL:  # the guard visibly does not hold; an invisible guard keeps the rule on
            found = judged.rows[-1]["found"]
            return skipped(f"not applicable: {guard.variable}={found} ({guard.why or 'feature off'})", **evidence)
    results = [judge(test, config, production) for test in rule.tests]
    evidence["tests"] = [row for judged in results for row in judged.rows]
    status = worst(*(judged.status for judged in results))
    problems = [problem for judged in results for problem in judged.problems]
    invisible: dict[str, list[str]] = {}  # why -> variables
    for judged in results:
        for name, why in judged.invisible.items():
            invisible.setdefault(why, []).append(name)
    problems += [f"not visible: {', '.join(names)} ({why})" for why, names in invisible.items()]
    if status == Status.FAIL:
        return failed("; ".join(problems), **evidence)
    if status != Status.PASS:
        return warned("; ".join(problems), **evidence)
    found = ", ".join(f"{row['variable']}={row['found']} ({row['source']})" for row in evidence["tests"])
    return passed(found, **evidence)
