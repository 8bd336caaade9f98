"""The one story every end-to-end test plays, at the size and with the copies
each test chooses, and the exact figures it must end with.

Two CRMs post leads through their webhooks: ``crm-north`` (a JSON form that
records e-mail consent) and ``crm-south`` (HubSpot contacts, which carry no
consent). One pool calls each lead up to three times, at once, ten minutes
later and an hour after that. Every fifth north lead converts on its second
call; every other lead never answers, so it reaches the target and is
exhausted. Thirty days after arrival nurture enrols the exhausted leads: the
north ones get the first e-mail on ``nurture-jobs``, the south ones have it
skipped for want of consent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

from shared.settings import NURTURE_JOBS_TOPIC
from tests.conftest import unique_phone
from tests.e2e.conftest import System, eventually

POOL = "e2e-web"
CAMPAIGN = "e2e-welcome-back"
TARGET = 3
#: Gaps before attempts 1, 2 and 3: at once, 10 minutes, an hour.
CADENCE = [0, 600, 3600]
CONVERTS_AT = 2
#: Agents start dialing this long after the leads arrive.
FIRST_CALL_AFTER = 120
WINDOW = {"window": "1d", "pool": POOL}


@dataclass
class Story:
    system: System
    #: (agent, queue copy it talks to)
    agents: list[tuple[str, int]]
    north: list[str] = field(default_factory=list)
    south: list[str] = field(default_factory=list)
    converting: set[str] = field(default_factory=set)
    arrived: dt.datetime | None = None
    #: lead -> attempts made, as the dialers saw them
    calls: Counter[str] = field(default_factory=Counter)
    #: Whether each event must reach its topic exactly once. Publishing is
    #: at least once: a relay killed between the broker's acknowledgement and
    #: marking the row published sends that row again after a restart, with
    #: the same event id, which consumers skip. Tests that kill relays allow
    #: such repeats, and only such: never two ids for one fact.
    exactly_once_on_topics: bool = True

    @property
    def leads(self) -> list[str]:
        return self.north + self.south

    @property
    def exhausted(self) -> set[str]:
        return set(self.leads) - self.converting

    # -- setting up ----------------------------------------------------------

    async def set_up(self) -> None:
        """Sources, the pool, routing, the nurture campaign and the agents."""
        system = self.system
        system.add_source("crm-north", mapping="generic")
        system.add_source("crm-south", mapping="hubspot")
        await system.call(
            "PUT",
            "queue",
            f"/v1/pools/{POOL}",
            json={
                "call_target": TARGET,
                "cadence": CADENCE,
                "lease_seconds": 300,
                "agent_attempt_limit": TARGET,
            },
        )
        await system.call("PUT", "queue", "/v1/routing", json={"default_pool": POOL})
        await system.call(
            "PUT",
            "nurture",
            f"/v1/campaigns/{CAMPAIGN}",
            json={
                "steps": [
                    {"day": 0, "channel": "email", "template_id": "seven-calls"},
                    {"day": 7, "channel": "email", "template_id": "still-looking"},
                ],
                "pools": [POOL],
            },
        )
        for agent, copy in self.agents:
            await system.call(
                "PUT",
                "queue",
                f"/v1/agents/{agent}",
                copy=copy,
                json={"pools": [POOL], "team": "east"},
            )
            await system.call(
                "PUT",
                "queue",
                f"/v1/agents/{agent}/status",
                copy=copy,
                json={"status": "available"},
            )

    # -- the CRMs ------------------------------------------------------------

    async def crms_post(
        self,
        north: int,
        south: int,
        *,
        per_post: int = 5,
        intake_copies: Sequence[int] | None = None,
    ) -> None:
        """``north`` and ``south`` new leads, ``per_post`` to a webhook call,
        the calls spread over ``intake_copies`` (default: all of them)."""
        copies = itertools.cycle(
            intake_copies or range(len(self.system.fleet.copies["intake"]))
        )
        first_north = len(self.north)
        self.arrived = self.arrived or self.system.clock.now()
        for start in range(0, north, per_post):
            forms = [
                {
                    "phone": unique_phone(),
                    "email": f"north{index}.{uuid.uuid4().hex[:8]}@example.com",
                    "first_name": f"North{index}",
                    "consent": {"call": True, "email": True, "sms": False},
                }
                for index in range(
                    first_north + start, first_north + min(start + per_post, north)
                )
            ]
            ids = await self.system.crm_posts("crm-north", forms, copy=next(copies))
            self.converting |= {
                lead
                for index, lead in enumerate(ids, first_north + start)
                if index % 5 == 0
            }
            self.north += ids
        for start in range(0, south, per_post):
            contacts = [
                {
                    "id": str(5000 + len(self.south) + index),
                    "properties": {
                        "firstname": f"South{index}",
                        "phone": unique_phone(),
                        "email": f"south{index}.{uuid.uuid4().hex[:8]}@example.com",
                    },
                }
                for index in range(start, min(start + per_post, south))
            ]
            self.south += await self.system.crm_posts(
                "crm-south", contacts, copy=next(copies)
            )

    async def routed(self) -> None:
        """Wait until the queue holds every lead."""

        async def all_there() -> bool | None:
            stats = await self.system.call("GET", "queue", f"/v1/pools/{POOL}/stats")
            return True if stats.json()["queued"] == len(self.leads) else None

        await eventually(all_there, what="the queue to route every lead")

    # -- the agents ----------------------------------------------------------

    async def dial_round(self, *, down: Set[int] = frozenset()) -> list[dict[str, Any]]:
        """Every agent draws leads until nothing is due, all at once; an agent
        whose queue copy is in ``down`` uses the first live one (as a load
        balancer would). Fails if a lead is leased while another agent holds
        it. Returns the leases taken."""
        holding: set[str] = set()
        leases: list[dict[str, Any]] = []

        def live(copy: int) -> int:
            if copy not in down:
                return copy
            return next(
                index
                for index in range(len(self.system.fleet.copies["queue"]))
                if index not in down
            )

        async def agent_loop(agent: str, copy: int) -> None:
            while True:
                answer = await self.system.call(
                    "POST",
                    "queue",
                    f"/v1/agents/{agent}/next-lead",
                    copy=live(copy),
                    expect=(200, 204),
                )
                if answer.status_code == 204:
                    return
                lease: dict[str, Any] = answer.json()
                lead = lease["lead"]["lead_id"]
                assert lead not in holding, f"{lead} leased twice at once"
                holding.add(lead)
                leases.append(lease)
                self.calls[lead] += 1
                assert lease["attempt"] == self.calls[lead]
                converts = lead in self.converting and lease["attempt"] == CONVERTS_AT
                await self.system.call(
                    "POST",
                    "queue",
                    f"/v1/leases/{lease['lease_id']}/outcome",
                    copy=live(copy),
                    json={
                        "disposition": "converted" if converts else "no_answer",
                        "duration_seconds": 20,
                    },
                )
                holding.discard(lead)

        await asyncio.gather(*(agent_loop(agent, copy) for agent, copy in self.agents))
        return leases

    # -- what must be true ---------------------------------------------------

    @property
    def total_calls(self) -> int:
        """Every lead three times, but a converting one twice."""
        return TARGET * len(self.leads) - len(self.converting)

    async def pool_figures(self) -> dict[str, Any]:
        answer = await self.system.call(
            "GET", "metrics", "/v1/penetration", params={"group_by": "pool", **WINDOW}
        )
        (group,) = answer.json()["groups"]
        figures: dict[str, Any] = group
        return figures

    async def metrics_counted(self, attempts: int, attempts_due: int) -> None:
        """Wait until metrics shows ``attempts`` of ``attempts_due``."""

        async def there() -> bool | None:
            answer = await self.system.call(
                "GET",
                "metrics",
                "/v1/penetration",
                params={"group_by": "pool", **WINDOW},
            )
            groups = answer.json()["groups"]
            figures = (
                (groups[0]["attempts"], groups[0]["attempts_due"]) if groups else ()
            )
            return True if figures == (attempts, attempts_due) else None

        await eventually(
            there, what=f"metrics to show {attempts} attempts of {attempts_due} due"
        )

    async def check_figures(self) -> None:
        """Exact figures of the story's day, once every call was made."""
        leads, calls = len(self.leads), self.total_calls
        await self.metrics_counted(calls, calls)
        pool = await self.pool_figures()
        assert pool["leads"] == pool["new_leads"] == pool["new_leads_called"] == leads
        assert pool["penetration"] == pool["uncapped_penetration"] == 1.0
        assert pool["attempts_by_disposition"]["converted"] == len(self.converting)
        assert pool["attempts_by_disposition"]["no_answer"] == calls - len(
            self.converting
        )
        assert pool["conversion_rate"] == len(self.converting) / leads
        assert pool["speed_to_lead_seconds"] == {
            "p50": float(FIRST_CALL_AFTER),
            "p90": float(FIRST_CALL_AFTER),
        }
        assert pool["share_called_within"] == 1.0

        by_source = {
            group["source"]: group
            for group in (
                await self.system.call(
                    "GET",
                    "metrics",
                    "/v1/penetration",
                    params={"group_by": "source", **WINDOW},
                )
            ).json()["groups"]
        }
        assert {
            source: (group["leads"], group["attempts"], group["attempts_due"])
            for source, group in by_source.items()
        } == {
            "crm-north": (
                len(self.north),
                TARGET * len(self.north) - len(self.converting),
                TARGET * len(self.north) - len(self.converting),
            ),
            "crm-south": (
                len(self.south),
                TARGET * len(self.south),
                TARGET * len(self.south),
            ),
        }

        distribution = (
            await self.system.call(
                "GET", "metrics", "/v1/attempts-distribution", params=WINDOW
            )
        ).json()
        assert distribution["attempts"] == [
            {
                "attempt": CONVERTS_AT,
                "first_contacted": len(self.converting),
                "converted": len(self.converting),
                "exhausted": 0,
                "abandoned": 0,
            },
            {
                "attempt": TARGET,
                "first_contacted": 0,
                "converted": 0,
                "exhausted": len(self.exhausted),
                "abandoned": 0,
            },
        ]
        assert distribution["share_lost_if_stopped_at_three"] == 0.0

        # The queue agrees, lead by lead.
        for lead_id in self.leads:
            lead = (
                await self.system.call("GET", "queue", f"/v1/leads/{lead_id}")
            ).json()
            expected = "converted" if lead_id in self.converting else "exhausted"
            assert (lead["state"], lead["attempts"]) == (
                expected,
                self.calls[lead_id],
            )
            penetration = (
                await self.system.call(
                    "GET", "metrics", f"/v1/leads/{lead_id}/penetration"
                )
            ).json()
            assert (penetration["attempts"], penetration["attempts_due"]) == (
                self.calls[lead_id],
                self.calls[lead_id],
            )

        # Each call was published once, and each lead exhausted once.
        events = self._once(
            await self.system.events(
                calls + len(self.exhausted), "call.logged.v1", "lead.exhausted.v1"
            )
        )
        kinds = Counter(event["type"] for event in events)
        assert kinds == {
            "call.logged.v1": calls,
            "lead.exhausted.v1": len(self.exhausted),
        }
        logged = {
            (event["subject"], event["data"]["attempt"])
            for event in events
            if event["type"] == "call.logged.v1"
        }
        assert logged == {
            (lead, attempt)
            for lead, made in self.calls.items()
            for attempt in range(1, made + 1)
        }
        assert {
            event["subject"] for event in events if event["type"] == "lead.exhausted.v1"
        } == self.exhausted

    def _once(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``events`` with repeats of one event id removed where the story
        allows them (see ``exactly_once_on_topics``); otherwise unchanged."""
        if self.exactly_once_on_topics:
            return events
        return list({event["id"]: event for event in events}.values())

    async def play_calls(self, *, between_rounds: Any = None) -> None:
        """Three rounds of calls at the cadence's times; ``between_rounds(n)``
        runs after round ``n`` (1 and 2) and may return queue copies that are
        down. Checks the midway penetration exactly."""
        clock, down = self.system.clock, set[int]()
        clock.set(self.arrival + dt.timedelta(seconds=FIRST_CALL_AFTER))
        for round_number, gap in enumerate([*CADENCE[1:], None], 1):
            leases = await self.dial_round(down=down)
            expected = len(self.leads) - (
                len(self.converting) if round_number == 3 else 0
            )
            assert len(leases) == expected, f"round {round_number}"
            assert {lease["attempt"] for lease in leases} == {round_number}
            if between_rounds is not None and round_number < 3:
                down = set(await between_rounds(round_number) or ())
            if gap is not None:
                clock.advance(gap)
            if round_number == 2:
                # The third calls are due and not made yet: 2N of 3N - C.
                leads = len(self.leads)
                await self.metrics_counted(2 * leads, self.total_calls)
                figures = await self.pool_figures()
                assert figures["penetration"] == 2 * leads / self.total_calls
        clock.advance(600)
        assert await self.dial_round(down=down) == [], "a lead beyond its target"

    @property
    def arrival(self) -> dt.datetime:
        assert self.arrived is not None
        return self.arrived

    async def check_nurture(
        self, *, on_moved: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Thirty days after arrival: the first e-mail for every exhausted
        north lead, once; skipped (consent) for the south ones; nothing for
        the converted. ``on_moved`` runs right after the clock moves."""
        self.system.clock.set(self.arrival + dt.timedelta(days=30, hours=1))
        if on_moved is not None:
            await on_moved()
        expected = sorted(set(self.north) - self.converting)
        jobs = self._once(await self.system.nurture_jobs(len(expected)))
        assert sorted(job["subject"] for job in jobs) == expected
        # One job decided per lead, by whichever copy claimed it.
        assert await self.system.outbox_rows("nurture", NURTURE_JOBS_TOPIC) == (
            len(expected),
            len(expected),
        )
        assert {
            (job["data"]["campaign"], job["data"]["step"], job["data"]["template_id"])
            for job in jobs
        } == {(CAMPAIGN, 0, "seven-calls")}
        for lead_id in self.south:
            view = (
                await self.system.call("GET", "nurture", f"/v1/leads/{lead_id}/nurture")
            ).json()
            assert view["status"] == "enrolled"
            assert [(s["state"], s["reason"]) for s in view["steps"]] == [
                ("skipped", "consent"),
                ("pending", None),
            ]
        for lead_id in self.converting:
            view = (
                await self.system.call("GET", "nurture", f"/v1/leads/{lead_id}/nurture")
            ).json()
            assert (view["status"], view["reason"]) == ("excluded", "converted")
