"""Charts for reviewers, drawn from recorded finding evidence only.

Nothing here queries the target: a chart reads findings (or archive entries) as the run recorded them, so what it
shows is what the report's evidence says. Figures are built with matplotlib's object API on an Agg canvas — no
``pyplot``, no backend switching — so drawing one inside a JupyterLab kernel leaves the user's inline plots alone.

A :class:`Chart` is a PNG with the sentence that says what it shows (its alt text), or, when the data are too few to
draw anything meaningful, only that sentence: no chart has an empty or degenerate axis. In a notebook a chart shows
itself (``_repr_html_``); the report embeds the same HTML.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from recsys_audit.findings import Finding, Severity, Status
from recsys_audit.render.components import ATTENTION, STATUS_COLOURS, STATUS_ORDER, esc

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PX_PER_INCH = 96  # CSS pixels per inch: a chart's width and height attributes
SCALE = 2  # PNG pixels per CSS pixel: sharp on high-density screens and in print
FONT = 8
MAX_ROWS = 30  # rows one chart draws; the sentence says how many more there were
INK, GRID, POLICY = "#1f2328", "#d0d7de", "#57606a"
WITHIN, OVER = STATUS_COLOURS[Status.PASS], STATUS_COLOURS[Status.FAIL]


@dataclass(frozen=True, repr=False)
class Chart:
    """A drawn chart and the sentence that says what it shows; only the sentence when there was too little to draw."""

    text: str
    png: bytes = b""
    width: int = 0  # CSS pixels
    height: int = 0

    @property
    def drawn(self) -> bool:
        return bool(self.png)

    def html(self, css_class: str = "ra-chart") -> str:
        if not self.png:
            return f'<p class="ra-chart-note">{esc(self.text)}</p>'
        data = base64.b64encode(self.png).decode("ascii")
        return (
            f'<figure class="{css_class}" style="margin:6px 0"><img src="data:image/png;base64,{data}" '
            f'width="{self.width}" height="{self.height}" alt="{esc(self.text)}">'
            "</figure>"
        )

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        return f"Chart({self.text!r})"


# --- drawing ---------------------------------------------------------------------------------------------------


def load_matplotlib() -> None:
    """Import what drawing needs (it takes a while: done ahead, in the background, where that helps)."""
    import matplotlib.backends.backend_agg
    import matplotlib.dates
    import matplotlib.figure  # noqa: F401


def _figure(width_px: int, height_px: int) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_px / PX_PER_INCH, height_px / PX_PER_INCH), dpi=PX_PER_INCH, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _chart(figure: Figure, text: str) -> Chart:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PX_PER_INCH * SCALE, metadata={"Software": None})
    width, height = (round(v * PX_PER_INCH) for v in figure.get_size_inches())
    return Chart(text, buffer.getvalue(), width, height)


def _style(axis: Axes, grid_axis: str = "x") -> None:
    axis.spines[["top", "right"]].set_visible(False)
    axis.spines[["left", "bottom"]].set_color(GRID)
    axis.tick_params(labelsize=FONT, length=2, colors=INK)
    axis.grid(axis=grid_axis, color=GRID, linewidth=0.6)
    axis.set_axisbelow(True)


def _num(value: Any) -> float | None:
    """A recorded number (not a bool, not "no data"), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _g(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _more(total: int) -> str:
    return f" (the first {MAX_ROWS} of {total})" if total > MAX_ROWS else ""


# --- status overview (report summary) ---------------------------------------------------------------------------


def _stacked_rows(axis: Axes, labels: list[str], counts: list[dict[Status, int]], statuses: Sequence[Status]) -> None:
    widest = max((sum(c.values()) for c in counts), default=0) or 1
    for status in statuses:
        lefts = [sum(c.get(s, 0) for s in statuses[: statuses.index(status)]) for c in counts]
        values = [c.get(status, 0) for c in counts]
        bars = axis.barh(labels, values, left=lefts, color=STATUS_COLOURS[status], height=0.62, label=str(status))
        for bar, value in zip(bars, values, strict=True):
            if value and value / widest >= 0.05:
                axis.text(
                    bar.get_x() + bar.get_width() / 2,
                    bar.get_y() + bar.get_height() / 2,
                    str(value),
                    ha="center",
                    va="center",
                    color="white",
                    fontsize=FONT - 1,
                    fontweight="bold",
                )
    axis.invert_yaxis()
    axis.set_xlim(0, widest * 1.02)
    _style(axis)


def _counts_text(counts: Mapping[Status, int], statuses: Sequence[Status]) -> str:
    return ", ".join(f"{counts[s]} {s}" for s in statuses if counts.get(s)) or "none"


def status_overview(findings: Sequence[Finding], sections: Sequence[tuple[int, str]]) -> Chart:
    """Checks by section and status, and the findings that need attention by severity (the report's summary)."""
    if not findings:
        return Chart("No findings were recorded.")
    titles = dict(sections)
    numbers = sorted({f.section for f in findings} | set(titles))
    by_section = [{s: sum(f.section == n and f.status == s for f in findings) for s in STATUS_ORDER} for n in numbers]
    section_labels = [_short(f"{n} {titles.get(n, '')}".strip()) for n in numbers]
    attention = (*ATTENTION, Status.MANUAL)
    severities = [v for v in Severity if any(f.severity == v and f.status in attention for f in findings)]
    by_severity = [{s: sum(f.severity == v and f.status == s for f in findings) for s in attention} for v in severities]

    rows = max(len(numbers), len(severities))
    figure = _figure(1000, 56 + 22 * rows)
    panels = figure.subplots(1, 2, width_ratios=[3, 2]) if severities else [figure.subplots()]
    _stacked_rows(panels[0], section_labels, by_section, STATUS_ORDER)
    panels[0].set_title("checks by section", fontsize=FONT + 1, loc="left", color=INK)
    if severities:
        _stacked_rows(panels[1], [str(v) for v in severities], by_severity, attention)
        panels[1].set_title("needing attention, by severity", fontsize=FONT + 1, loc="left", color=INK)
    handles, labels = panels[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=FONT, frameon=False)
    text = "Checks by section and status: " + "; ".join(
        f"{label}: {_counts_text(counts, STATUS_ORDER)}"
        for label, counts in zip(section_labels, by_section, strict=True)
    )
    if severities:
        text += ". Needing attention, by severity: " + "; ".join(
            f"{v}: {_counts_text(c, attention)}" for v, c in zip(severities, by_severity, strict=True)
        )
    return _chart(figure, text + ".")


def _short(label: str, width: int = 30) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


# --- ages against their policy ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgeEvidence:
    """Where a check records ages and the policy they are held to."""

    rows: str  # evidence key of the records
    age: str  # record key of the age
    policy: str  # evidence key of the policy (the largest age allowed)
    seconds: float  # seconds per unit of the recorded age and policy
    what: str  # what has an age, in words
    label: Callable[[Mapping[str, Any]], str]


def _tenant_surface(row: Mapping[str, Any]) -> str:
    return f"{row.get('tenant', '?')}/{row.get('surface', '?')}"


AGE_EVIDENCE = {
    "serving.db-signals-fresh": AgeEvidence(
        "signals", "age_days", "policy_max_age_days", 86400, "newest signal day", _tenant_surface
    ),
    "pipelines.manifest-fresh": AgeEvidence("manifests", "age_s", "slo_s", 1, "manifest", _tenant_surface),
    "privacy.exposure-retention": AgeEvidence(
        "oldest", "age_days", "policy_days", 86400, "oldest kept record", lambda row: str(row.get("source", "?"))
    ),
}
_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))


def _unit(largest_s: float) -> tuple[str, float]:
    return next(((name, size) for name, size in _UNITS if largest_s >= 2 * size), ("s", 1))


def ages_against_policy(finding: Finding) -> Chart:
    """Each recorded age (signal day, manifest, oldest kept record) against the policy line of its check."""
    shape = AGE_EVIDENCE.get(finding.id)
    if shape is None:
        return Chart(f"{finding.id} records no ages to chart.")
    records = [r for r in finding.evidence.get(shape.rows) or [] if isinstance(r, Mapping)]
    aged = [(shape.label(r), _num(r.get(shape.age))) for r in records]
    known = [(label, age * shape.seconds) for label, age in aged if age is not None]
    unknown = [label for label, age in aged if age is None]
    if not known:
        return Chart(f"No {shape.what} age to chart ({finding.status}: {finding.summary}).")
    total, known = len(known), known[:MAX_ROWS]
    policy = _num(finding.evidence.get(shape.policy))
    policy_s = None if policy is None else policy * shape.seconds
    unit, size = _unit(max([age for _, age in known] + [policy_s or 0]))

    figure = _figure(640, 44 + 22 * len(known))
    axis = figure.subplots()
    top = max([age for _, age in known] + [policy_s or 0]) / size or 1
    for row, (_, age) in enumerate(known):
        colour = OVER if policy_s is not None and age > policy_s else WITHIN
        axis.hlines(row, 0, age / size, color=colour, linewidth=2)
        axis.plot(age / size, row, "o", color=colour, markersize=6)
        axis.annotate(f"{_g(age / size)} {unit}", (age / size, row), xytext=(6, 0), textcoords="offset points",
                      va="center", fontsize=FONT, color=INK)  # fmt: skip
    if policy_s is not None:
        axis.axvline(policy_s / size, color=POLICY, linestyle="--", linewidth=1)
        axis.annotate(f"policy {_g(policy_s / size)} {unit}", (policy_s / size, 1), xycoords=("data", "axes fraction"),
                      xytext=(3, -2), textcoords="offset points", va="top", fontsize=FONT, color=POLICY)  # fmt: skip
    axis.set_yticks(range(len(known)), [label for label, _ in known])
    axis.set_ylim(len(known) - 0.5, -0.7)
    axis.set_xlim(0, top * 1.25)
    axis.set_xlabel(f"age of the {shape.what} ({unit})", fontsize=FONT, color=INK)
    _style(axis)

    listed = ", ".join(f"{label} {_g(age / size)} {unit}" for label, age in known)
    if policy_s is None:
        verdict = "no policy was recorded"
    else:
        over = [label for label, age in known if age > policy_s]
        verdict = f"{len(over)} over the policy: {', '.join(over)}" if over else "all within the policy"
    text = (
        f"Age of each {shape.what}{_more(total)} against the policy of "
        f"{_g(policy_s / size) + ' ' + unit if policy_s is not None else '(none)'}: {listed} — {verdict}."
    )
    if unknown:
        text += f" Age unknown: {', '.join(unknown)}."
    return _chart(figure, text)


# --- latency percentiles against the SLO ------------------------------------------------------------------------

PERCENTILES = ("p50", "p95", "p99")


def _golden_signals(evidence: Mapping[str, Any]) -> Mapping[str, Any]:
    return {p: evidence.get(f"latency_{p}_ms") for p in PERCENTILES}


def _latency_ms(evidence: Mapping[str, Any]) -> Mapping[str, Any]:
    value = evidence.get("latency_ms")
    return value if isinstance(value, Mapping) else {}


LATENCY_EVIDENCE: dict[str, tuple[str, Callable[[Mapping[str, Any]], Mapping[str, Any]]]] = {
    "obs.golden-signals": ("live traffic (Prometheus)", _golden_signals),
    "perf.load-report-latency": ("recorded load test", _latency_ms),
    "perf.live-load-test": ("live load test", _latency_ms),
}
_MARKERS = {"p50": ("o", 5, "#8c959f"), "p95": ("o", 8, INK), "p99": ("D", 5, "#8c959f")}


def latency_percentiles(findings: Iterable[Finding]) -> Chart:
    """p50, p95 and p99 latency of every source the run recorded (live traffic, load tests) against the p95 SLO."""
    rows: list[tuple[str, dict[str, float]]] = []
    slo: float | None = None
    for finding in findings:
        if finding.id not in LATENCY_EVIDENCE:
            continue
        label, read = LATENCY_EVIDENCE[finding.id]
        values = {p: v for p in PERCENTILES if (v := _num(read(finding.evidence).get(p))) is not None}
        if values:
            rows.append((label, values))
        slo = slo if slo is not None else _num(finding.evidence.get("slo_p95_ms"))
    if not rows:
        return Chart("No latency percentiles were recorded (no live traffic series, no load test).")
    everything = [v for _, values in rows for v in values.values()] + ([slo] if slo is not None else [])
    positive = [v for v in everything if v > 0]
    log = len(positive) == len(everything) and max(everything) / min(positive) >= 30

    figure = _figure(640, 80 + 26 * len(rows))
    axis = figure.subplots()
    for row, (_, values) in enumerate(rows):
        axis.hlines(row, min(values.values()), max(values.values()), color=GRID, linewidth=2)
        for name, value in values.items():
            marker, size, colour = _MARKERS[name]
            if name == "p95" and slo is not None:
                colour = OVER if value > slo else WITHIN
            axis.plot(value, row, marker, color=colour, markersize=size, label=name if row == 0 else None)
        if "p95" in values:
            axis.annotate(f"p95 {_g(values['p95'])} ms", (values["p95"], row), xytext=(0, 7),
                          textcoords="offset points", ha="center", fontsize=FONT, color=INK)  # fmt: skip
    if slo is not None:
        axis.axvline(slo, color=OVER, linestyle="--", linewidth=1)
        axis.annotate(f"SLO p95 {_g(slo)} ms", (slo, 1), xycoords=("data", "axes fraction"), xytext=(3, -2),
                      textcoords="offset points", va="top", fontsize=FONT, color=OVER)  # fmt: skip
    if log:
        axis.set_xscale("log")
        axis.set_xlim(min(positive) / 2, max(everything) * 2)
    else:
        axis.set_xlim(0, max(everything) * 1.2 or 1)
    axis.set_yticks(range(len(rows)), [label for label, _ in rows])
    axis.set_ylim(len(rows) - 0.5, -0.9)
    axis.set_xlabel(f"latency (ms{', log scale' if log else ''})", fontsize=FONT, color=INK)
    figure.legend(loc="outside lower center", fontsize=FONT - 1, frameon=False, ncols=3)
    _style(axis)

    listed = "; ".join(
        f"{label}: " + ", ".join(f"{name} {_g(value)} ms" for name, value in values.items()) for label, values in rows
    )
    if slo is None:
        verdict = "no SLO was recorded"
    else:
        over = [label for label, values in rows if values.get("p95", 0) > slo]
        verdict = f"p95 over the SLO: {', '.join(over)}" if over else "p95 within the SLO everywhere"
    slo_text = f" against the p95 SLO of {_g(slo)} ms" if slo is not None else ""
    return _chart(figure, f"Latency percentiles{slo_text} — {listed} — {verdict}.")


# --- partitions ---------------------------------------------------------------------------------------------------


def partition_rows(finding: Finding) -> Chart:
    """Estimated rows per event-table partition (statistics), default partitions marked: rows piling up there block
    the monthly partitions."""
    records = [r for r in finding.evidence.get("partitions") or [] if isinstance(r, Mapping)]
    sized = [(str(r.get("partition", "?")), _num(r.get("rows")) or 0.0, r.get("bound") == "DEFAULT") for r in records]
    if not sized:
        return Chart(f"No partitions were recorded ({finding.status}: {finding.summary}).")
    if not any(rows for _, rows, _ in sized):
        return Chart(f"Every one of the {len(sized)} partitions of the event tables is empty by the statistics.")
    total, sized = len(sized), sized[:MAX_ROWS]
    figure = _figure(640, 44 + 20 * len(sized))
    axis = figure.subplots()
    colours = [STATUS_COLOURS[Status.WARN] if default else "#0969da" for _, _, default in sized]
    axis.barh([name for name, _, _ in sized], [rows for _, rows, _ in sized], color=colours, height=0.6)
    for row, (_, rows, _) in enumerate(sized):
        axis.annotate(f"{rows:,.0f}", (rows, row), xytext=(4, 0), textcoords="offset points", va="center",
                      fontsize=FONT, color=INK)  # fmt: skip
    axis.invert_yaxis()
    axis.set_xlim(0, max(rows for _, rows, _ in sized) * 1.2)
    axis.set_xlabel("estimated rows (pg_class.reltuples / n_live_tup); amber: default partition", fontsize=FONT)
    _style(axis)
    listed = ", ".join(f"{name} {rows:,.0f}{' (default)' if default else ''}" for name, rows, default in sized)
    return _chart(figure, f"Estimated rows per partition{_more(total)}: {listed}.")


# --- the archive's trend ------------------------------------------------------------------------------------------

TREND_STATUSES = (Status.FAIL, Status.WARN, Status.ERROR)
_RUN_ID = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d{1,3}))?$")


def run_time(run_id: str) -> dt.datetime | None:
    """When a run started, from its id (``20261126T101500Z``, ``…Z-2`` for a second run in that second)."""
    match = _RUN_ID.match(run_id)
    if not match:
        return None
    moment = dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    return moment + dt.timedelta(milliseconds=int(match.group(2) or 0))


def run_trend(env: str, runs: Sequence[tuple[str, Mapping[str, int]]]) -> Chart:
    """Fail, warn and error findings per run of one environment over time (``runs``: run id and counts by status,
    oldest first)."""
    timed = [(moment, run, counts) for run, counts in runs if (moment := run_time(run)) is not None]

    def counted(counts: Mapping[str, int]) -> str:
        return ", ".join(f"{counts.get(str(s), 0)} {s}" for s in TREND_STATUSES)

    if len(timed) < 2:
        only = "; ".join(f"{run}: {counted(counts)}" for run, counts in runs) or "none"
        return Chart(f"{len(runs)} audit(s) of {env} so far ({only}): a trend needs two.")
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.ticker import MaxNLocator

    figure = _figure(640, 190)
    axis = figure.subplots()
    moments = [moment for moment, _, _ in timed]
    for status in reversed(TREND_STATUSES):  # fail drawn last, on top
        values = [counts.get(str(status), 0) for _, _, counts in timed]
        axis.plot(moments, values, "o-", color=STATUS_COLOURS[status], markersize=4, linewidth=1.4, label=str(status))
    locator = AutoDateLocator(maxticks=8)
    axis.xaxis.set_major_locator(locator)
    axis.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axis.xaxis.get_offset_text().set_fontsize(FONT)
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    highest = max(counts.get(str(s), 0) for _, _, counts in timed for s in TREND_STATUSES)
    axis.set_ylim(0, highest * 1.15 + 0.5)
    axis.set_ylabel("findings", fontsize=FONT)
    handles, labels = axis.get_legend_handles_labels()
    figure.legend(handles[::-1], labels[::-1], loc="outside lower center", fontsize=FONT - 1, frameon=False, ncols=3)
    _style(axis, grid_axis="y")
    shown = timed[-12:]
    listed = "; ".join(f"{run}: {counted(counts)}" for _, run, counts in shown)
    earlier = f" (the last {len(shown)} of {len(timed)})" if len(timed) > len(shown) else ""
    return _chart(figure, f"Fail, warn and error findings per audit of {env}, oldest first{earlier}: {listed}.")
