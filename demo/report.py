"""The final report: the metrics service's figures beside the demo's tally.

Pure code. :class:`Figures` holds what the metrics API answered, cut down to
the run's pools; :func:`checks` compares its counts with the tally, and
:func:`render` prints both.
"""

from __future__ import annotations

import math
import textwrap
from collections import Counter
from dataclasses import dataclass
from typing import Any

from demo.tally import Tally

#: "Lost had agents stopped at the third call" counts conversions after it.
STOP_AT = 3
WIDTH = 88


@dataclass(frozen=True)
class Figures:
    """The metrics API's answers, for the run's pools only."""

    #: ``GET /v1/penetration?group_by=pool`` groups of the run's pools.
    by_pool: list[dict[str, Any]]
    #: ``GET /v1/penetration?group_by=source&pool=…`` groups, each with its pool.
    by_source: list[dict[str, Any]]
    #: ``GET /v1/attempts-distribution?pool=…`` per pool.
    distributions: dict[str, dict[str, Any]]
    window: str

    def conversions_by_attempt(self) -> Counter[int]:
        return self._per_attempt("converted")

    def first_contacts_by_attempt(self) -> Counter[int]:
        return self._per_attempt("first_contacted")

    def exhausted(self) -> int:
        return sum(self._per_attempt("exhausted").values())

    def _per_attempt(self, field: str) -> Counter[int]:
        counts: Counter[int] = Counter()
        for document in self.distributions.values():
            for row in document["attempts"]:
                if row[field]:
                    counts[row["attempt"]] += row[field]
        return counts

    def as_json(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "by_pool": self.by_pool,
            "by_source": self.by_source,
            "distributions": self.distributions,
        }


@dataclass(frozen=True)
class Check:
    what: str
    metrics: Any
    demo: Any

    @property
    def ok(self) -> bool:
        if isinstance(self.metrics, float) or isinstance(self.demo, float):
            if self.metrics is None or self.demo is None:
                return self.metrics is self.demo
            return math.isclose(self.metrics, self.demo, abs_tol=1e-9)
        return bool(self.metrics == self.demo)

    def as_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "metrics": _jsonable(self.metrics),
            "demo": _jsonable(self.demo),
            "ok": self.ok,
        }


def checks(figures: Figures, tally: Tally, pools: list[str]) -> list[Check]:
    """Every count the metrics API and the tally both have, side by side."""
    found: list[Check] = [
        Check(
            "leads accepted",
            sum(row["leads"] for row in figures.by_pool),
            len(tally.leads),
        ),
        Check(
            "new leads (speed-to-lead base)",
            sum(row["new_leads"] for row in figures.by_pool),
            len(tally.leads),
        ),
        Check("calls", sum(row["attempts"] for row in figures.by_pool), tally.calls),
    ]
    pool_rows = {row["pool"]: row for row in figures.by_pool}
    leads_by_pool = tally.leads_by("pool")
    for pool in pools:
        row = pool_rows.get(pool, {})
        found.append(
            Check(f"calls in {pool}", row.get("attempts", 0), tally.calls_by_pool[pool])
        )
        found.append(
            Check(f"leads in {pool}", row.get("leads", 0), leads_by_pool[pool])
        )
    source_rows = {row["source"]: row for row in figures.by_source}
    leads_by_source = tally.leads_by("source")
    for source in sorted(leads_by_source | tally.calls_by_source):
        row = source_rows.get(source, {})
        found.append(
            Check(
                f"calls from {source}",
                row.get("attempts", 0),
                tally.calls_by_source[source],
            )
        )
        found.append(
            Check(
                f"dispositions of {source}",
                {
                    name: count
                    for name, count in sorted(
                        row.get("attempts_by_disposition", {}).items()
                    )
                    if count
                },
                {
                    name: count
                    for (from_source, name), count in sorted(tally.dispositions.items())
                    if from_source == source
                },
            )
        )
    found += [
        Check(
            "conversions by attempt",
            dict(sorted(figures.conversions_by_attempt().items())),
            dict(sorted(tally.conversions_by_attempt.items())),
        ),
        Check(
            "first contacts by attempt",
            dict(sorted(figures.first_contacts_by_attempt().items())),
            dict(sorted(tally.first_contacts_by_attempt.items())),
        ),
        Check("leads exhausted", figures.exhausted(), tally.exhausted),
    ]
    for pool in pools:
        document = figures.distributions.get(pool, {})
        found.append(
            Check(
                f"conversions after call {STOP_AT} in {pool}",
                document.get("conversions_after_third_attempt", 0),
                tally.conversions_after(STOP_AT, pool),
            )
        )
        found.append(
            Check(
                f"share lost if stopped at {STOP_AT} in {pool}",
                document.get("share_lost_if_stopped_at_three"),
                _share(
                    tally.conversions_after(STOP_AT, pool), tally.conversions_in(pool)
                ),
            )
        )
    return found


def counts_agree(figures: Figures, tally: Tally, pools: list[str]) -> bool:
    return all(check.ok for check in checks(figures, tally, pools))


@dataclass(frozen=True)
class RunFacts:
    """What the report says about the run itself."""

    run_id: str
    seed: int
    arrivals_seconds: float
    total_seconds: float
    agents: int
    call_target: int
    cadence: str
    open_leads: int


def render(
    figures: Figures, tally: Tally, pools: list[str], facts: RunFacts
) -> list[str]:
    lines = [
        "",
        f"=== Redial demo report: run {facts.run_id} (seed {facts.seed}) ===",
        f"{facts.arrivals_seconds:.0f} s of leads, {facts.total_seconds:.0f} s in"
        f" all; {facts.agents} agent{'' if facts.agents == 1 else 's'}; call"
        f" target {facts.call_target}; cadence {facts.cadence}.",
        f"Figures from the metrics API (window {figures.window}); 'demo' columns"
        " are the demo's own tally.",
    ]
    if facts.open_leads:
        lines.append(
            f"{facts.open_leads} leads were still being worked when the run ended."
        )
    lines += ["", "Penetration by pool (GET /v1/penetration?group_by=pool)"]
    lines += _penetration_table("pool", figures.by_pool, tally.calls_by_pool)
    lines += ["", "Penetration by source (GET /v1/penetration?group_by=source)"]
    lines += _penetration_table("source", figures.by_source, tally.calls_by_source)
    lines += ["", "Speed to lead (first call - arrival, from the same answers)"]
    lines += _speed_table(figures, tally)
    lines += ["", "Attempt at which deals closed (GET /v1/attempts-distribution)"]
    lines += _attempts_table(figures, tally, facts.call_target)
    lines += ["", *_lost_at_three(figures, tally, pools)]
    lines += ["", "Checks: the metrics API against the demo's own tally"]
    found = checks(figures, tally, pools)
    width = max(len(check.what) for check in found)
    for check in found:
        mark = "ok" if check.ok else "DIFFERS"
        lines.append(
            f"  {mark:<7} {check.what:<{width}}  metrics {_brief(check.metrics)}"
            f"  demo {_brief(check.demo)}"
        )
    failed = [check for check in found if not check.ok]
    lines.append(
        "All figures agree."
        if not failed
        else f"{len(failed)} figures differ (the metrics service may still be"
        " catching up, or a call was lost)."
    )
    return [piece for line in lines for piece in _wrapped(line)]


def _wrapped(line: str) -> list[str]:
    """Prose wrapped to the width; table rows (indented) are left whole."""
    if len(line) <= WIDTH or line.startswith("  "):
        return [line]
    return textwrap.wrap(line, WIDTH, break_on_hyphens=False)


def _penetration_table(
    key: str, rows: list[dict[str, Any]], demo_calls: Counter[str]
) -> list[str]:
    header = (
        f"  {key:<22} {'leads':>5} {'calls':>6} {'demo':>6} {'due':>5}"
        f" {'penetr.':>8} {'uncapped':>8} {'contact':>8} {'convert':>8}"
    )
    lines = [header]
    for row in rows:
        lines.append(
            f"  {row[key]:<22} {row['leads']:>5} {row['attempts']:>6}"
            f" {demo_calls[row[key]]:>6} {row['attempts_due']:>5}"
            f" {_percent(row['penetration']):>8}"
            f" {_percent(row['uncapped_penetration']):>8}"
            f" {_percent(row['contact_rate']):>8}"
            f" {_percent(row['conversion_rate']):>8}"
        )
    if not rows:
        lines.append("  (no groups yet)")
    return lines


def _speed_table(figures: Figures, tally: Tally) -> list[str]:
    lines = [
        f"  {'group':<22} {'new leads':>9} {'called':>6} {'p50':>8} {'p90':>8}"
        f" {'called within 5 min':>20}"
    ]
    for key, rows in (("pool", figures.by_pool), ("source", figures.by_source)):
        for row in rows:
            speed = row["speed_to_lead_seconds"]
            lines.append(
                f"  {row[key]:<22} {row['new_leads']:>9} {row['new_leads_called']:>6}"
                f" {_seconds(speed['p50']):>8} {_seconds(speed['p90']):>8}"
                f" {_percent(row['share_called_within']):>20}"
            )
    median = tally.speed_to_lead()
    lines.append(
        f"  The demo's agents saw a median of {_seconds(median)} from intake's"
        " answer to the end of the first call."
    )
    return lines


def _attempts_table(figures: Figures, tally: Tally, call_target: int) -> list[str]:
    converted = figures.conversions_by_attempt()
    contacted = figures.first_contacts_by_attempt()
    attempts = sorted(
        set(range(1, call_target + 1))
        | set(converted)
        | set(contacted)
        | set(tally.conversions_by_attempt)
        | set(tally.first_contacts_by_attempt)
    )
    lines = [
        f"  {'attempt':>7} {'converted':>9} {'demo':>5} {'first contact':>13}"
        f" {'demo':>5}"
    ]
    widest = max(converted.values(), default=0)
    for attempt in attempts:
        bar = "#" * round(24 * converted[attempt] / widest) if widest else ""
        lines.append(
            f"  {attempt:>7} {converted[attempt]:>9}"
            f" {tally.conversions_by_attempt[attempt]:>5}"
            f" {contacted[attempt]:>13} {tally.first_contacts_by_attempt[attempt]:>5}"
            f"  {bar}".rstrip()
        )
    return lines


def _lost_at_three(figures: Figures, tally: Tally, pools: list[str]) -> list[str]:
    total = sum(doc["conversions"] for doc in figures.distributions.values())
    late = sum(
        doc["conversions_after_third_attempt"] for doc in figures.distributions.values()
    )
    demo_late = tally.conversions_after(STOP_AT)
    lines = [
        f"Deals closed: {total} (demo {tally.conversions}); after call {STOP_AT}:"
        f" {late} (demo {demo_late}).",
        f"Had agents stopped at the third call, {_percent(_share(late, total))} of"
        f" these deals would have been lost (demo:"
        f" {_percent(_share(demo_late, tally.conversions))}).",
    ]
    for pool in pools:
        document = figures.distributions.get(pool)
        if document is None:
            continue
        demo_share = _share(
            tally.conversions_after(STOP_AT, pool), tally.conversions_in(pool)
        )
        lines.append(
            f"  {pool}: share_lost_if_stopped_at_three ="
            f" {_ratio(document['share_lost_if_stopped_at_three'])}"
            f" (demo {_ratio(demo_share)})"
        )
    return lines


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _brief(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {count}" for key, count in value.items()) + "}"
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): count for key, count in value.items()}
    return value
