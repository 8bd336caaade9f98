"""The report's checks: the metrics API's counts against the demo's tally."""

from __future__ import annotations

from typing import Any

from demo.report import Figures, RunFacts, checks, render
from demo.tally import Tally

POOLS = ["demo-r1-web", "demo-r1-social"]


def _tally() -> Tally:
    tally = Tally()
    tally.accepted("a", 1, "demo-hubspot", POOLS[0], at=0.0)
    tally.accepted("b", 2, "demo-facebook", POOLS[1], at=0.0)
    for attempt in (1, 2, 3, 4):
        converted = attempt == 4
        tally.called(
            "a",
            attempt=attempt,
            call_target=4,
            disposition="converted" if converted else "no_answer",
            contacted=converted,
            converted=converted,
            at=1.0,
        )
    for attempt in (1, 2, 3, 4):
        tally.called(
            "b",
            attempt=attempt,
            call_target=4,
            disposition="contacted" if attempt == 2 else "voicemail",
            contacted=attempt == 2,
            converted=False,
            at=0.5,
        )
    return tally


def _group(key: str, name: str, **figures: Any) -> dict[str, Any]:
    return {
        key: name,
        "leads": 1,
        "attempts": 4,
        "attempts_due": 4,
        "penetration": 1.0,
        "uncapped_penetration": 1.0,
        "contact_rate": 1.0,
        "conversion_rate": 0.0,
        "new_leads": 1,
        "new_leads_called": 1,
        "speed_to_lead_seconds": {"p50": 0.4, "p90": 0.4},
        "share_called_within": 1.0,
        "attempts_by_disposition": {},
    } | figures


def _distribution(converted_at: int | None, contacted_at: int) -> dict[str, Any]:
    rows = [
        {
            "attempt": attempt,
            "first_contacted": int(attempt == contacted_at),
            "converted": int(attempt == converted_at),
            "exhausted": int(attempt == 4 and converted_at is None),
            "abandoned": 0,
        }
        for attempt in (1, 2, 3, 4)
    ]
    late = int(converted_at is not None and converted_at > 3)
    conversions = int(converted_at is not None)
    return {
        "attempts": rows,
        "conversions": conversions,
        "conversions_after_third_attempt": late,
        "share_lost_if_stopped_at_three": late / conversions if conversions else None,
    }


def _figures() -> Figures:
    return Figures(
        by_pool=[_group("pool", POOLS[0]), _group("pool", POOLS[1])],
        by_source=[
            _group(
                "source",
                "demo-hubspot",
                pool=POOLS[0],
                attempts_by_disposition={"no_answer": 3, "converted": 1, "busy": 0},
            ),
            _group(
                "source",
                "demo-facebook",
                pool=POOLS[1],
                attempts_by_disposition={"voicemail": 3, "contacted": 1},
            ),
        ],
        distributions={
            POOLS[0]: _distribution(converted_at=4, contacted_at=4),
            POOLS[1]: _distribution(converted_at=None, contacted_at=2),
        },
        window="2026-07-01..2026-07-03",
    )


def test_figures_that_match_the_tally_pass_every_check() -> None:
    found = checks(_figures(), _tally(), POOLS)

    assert [check.what for check in found if not check.ok] == []
    assert len(found) == 18


def test_one_call_the_metrics_missed_fails_the_checks_that_count_it() -> None:
    tally = _tally()
    tally.accepted("c", 3, "demo-hubspot", POOLS[0], at=0.0)
    tally.called(
        "c",
        attempt=1,
        call_target=4,
        disposition="busy",
        contacted=False,
        converted=False,
        at=1.0,
    )

    failed = [check.what for check in checks(_figures(), tally, POOLS) if not check.ok]

    assert failed == [
        "leads accepted",
        "new leads (speed-to-lead base)",
        "calls",
        f"calls in {POOLS[0]}",
        f"leads in {POOLS[0]}",
        "calls from demo-hubspot",
        "dispositions of demo-hubspot",
    ]


def test_the_report_shows_the_share_lost_at_three_and_the_checks() -> None:
    facts = RunFacts("r1", 7, 10, 30, 2, 4, "0s 1s", open_leads=0)
    lines = render(_figures(), _tally(), POOLS, facts)
    text = " ".join(" ".join(lines).split())

    assert "Deals closed: 1 (demo 1); after call 3: 1 (demo 1)." in text
    assert "100.0 % of these deals would have been lost (demo: 100.0 %)" in text
    assert f"{POOLS[0]}: share_lost_if_stopped_at_three = 1.000 (demo 1.000)" in text
    assert "All figures agree." in text
