"""The call floor over HTTP: provisioning, the CRMs, the agents and progress.

Everything goes through the services' public APIs and intake's CLI, as a
real integration would: sources through ``services.intake.cli``, pools,
routing and agents through the queue's API, leads through intake's signed
webhook, calls through ``next-lead`` and ``outcome``, and every reported
figure through the metrics API.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from demo.crm import CRMS, SIGNATURE_HEADER, Crm, LeadMaker, body_of, sign
from demo.model import CallModel
from demo.places import POOL_END, POOL_START, Place
from demo.report import Figures, counts_agree
from demo.stack import Stack
from demo.tally import LeadRecord, Tally
from shared.clock import Clock
from shared.launcher.stack import source_command

logger = logging.getLogger(__name__)

#: How long an agent waits before asking again after "nothing is due".
IDLE_POLL_SECONDS = 0.2
#: Webhook posts in flight at once: a CRM does not wait for one to answer
#: before sending the next lead, but does not flood intake either.
POSTS_IN_FLIGHT = 16
#: Polls (50 ms apart) for a leased lead to appear in the tally.
FOREIGN_GRACE_POLLS = 20


@dataclass(frozen=True)
class FloorOptions:
    arrival_seconds: float
    leads_per_second: float
    agents: int
    seed: int
    model: CallModel
    cadence: tuple[float, ...]
    call_target: int
    lease_seconds: int
    drain_seconds: float
    metrics_timeout: float = 30.0


class ProvisioningFailed(RuntimeError):
    """A service refused part of the demo's set-up; the message says what."""


class Floor:
    """One run of the simulated floor against a running stack."""

    def __init__(
        self,
        stack: Stack,
        options: FloorOptions,
        *,
        run_id: str,
        places: tuple[Place, ...],
        clock: Clock,
        progress: Callable[[str], None],
    ) -> None:
        self.stack = stack
        self.options = options
        self.run_id = run_id
        self.clock = clock
        self.tally = Tally()
        self.pools = {kind: f"demo-{run_id}-{kind}" for kind in ("web", "social")}
        self.agent_names = [f"demo-agent-{n:02d}" for n in range(1, options.agents + 1)]
        self._progress = progress
        self._maker = LeadMaker(options.seed, run_id, places)
        self._secrets = {
            crm.source: f"whsec_demo_{secrets.token_urlsafe(18)}" for crm in CRMS
        }
        self._previous_routes: list[dict[str, Any]] | None = None
        self._stopping = asyncio.Event()
        self._all_done = asyncio.Event()
        self._arrivals_over = False
        started = clock.now()
        # Wide enough for any business zone and a run across midnight.
        first = (started - dt.timedelta(days=1)).date()
        last = (started + dt.timedelta(days=2)).date()
        self.window = f"{first.isoformat()}..{last.isoformat()}"
        self._started = clock.monotonic()
        self._live: dict[str, Any] = {}

    # -- the run ---------------------------------------------------------

    async def run(self) -> Figures:
        """Provision, post and dial, then wait for the metrics; returns what
        the metrics API says once it has counted every call (or times out)."""
        timeout = httpx.Timeout(15.0)
        limits = httpx.Limits(max_connections=self.options.agents + POSTS_IN_FLIGHT + 8)
        async with (
            httpx.AsyncClient(
                base_url=self.stack.intake, timeout=timeout, limits=limits
            ) as intake,
            httpx.AsyncClient(
                base_url=self.stack.queue, timeout=timeout, limits=limits
            ) as queue,
            httpx.AsyncClient(base_url=self.stack.metrics, timeout=timeout) as metrics,
        ):
            self._intake, self._queue, self._metrics = intake, queue, metrics
            try:
                await self._provision()
                await self._work()
            finally:
                await self._tidy_up()
            return await self._settled_figures()

    async def _work(self) -> None:
        self._started = self.clock.monotonic()
        agents = [asyncio.create_task(self._agent(name)) for name in self.agent_names]
        progress = asyncio.create_task(self._show_progress())
        try:
            await self._post_leads()
            self._arrivals_over = True
            await self._drain()
        finally:
            self._stopping.set()
            # Agents finish the call they are on, then stop.
            await asyncio.gather(*agents, return_exceptions=True)
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
        self._progress("")

    async def _drain(self) -> None:
        """Keep dialling until every lead is converted or exhausted, or the
        drain time is up."""
        if not self.tally.open_leads:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_done.wait(), self.options.drain_seconds)

    @property
    def elapsed(self) -> float:
        return self.clock.monotonic() - self._started

    # -- provisioning ----------------------------------------------------

    async def _provision(self) -> None:
        await asyncio.gather(*(self._save_source(crm) for crm in CRMS))
        for pool in self.pools.values():
            await self._put(self._queue, f"/v1/pools/{pool}", self._pool_rules())
        await self._route_to_demo_pools()
        for name in self.agent_names:
            await self._put(
                self._queue,
                f"/v1/agents/{name}",
                {"pools": list(self.pools.values()), "team": "demo-floor"},
            )
            await self._put(
                self._queue, f"/v1/agents/{name}/status", {"status": "available"}
            )

    def _pool_rules(self) -> dict[str, Any]:
        hours = {"start": f"{POOL_START:%H:%M}", "end": f"{POOL_END:%H:%M}"}
        # One agent may make three attempts before others get the lead; with
        # too few agents for the target, that would strand leads.
        enough_agents = self.options.agents * 3 >= self.options.call_target
        return {
            "call_target": self.options.call_target,
            "cadence": list(self.options.cadence),
            "calling_hours": {"weekdays": hours, "saturday": hours, "sunday": hours},
            "lease_seconds": self.options.lease_seconds,
            "agent_attempt_limit": 3 if enough_agents else None,
        }

    async def _save_source(self, crm: Crm) -> None:
        """Create or update the CRM's source through intake's operator CLI."""
        command = source_command(
            crm.source,
            mapping=crm.mapping,
            mapping_options=orjson.dumps(crm.mapping_options).decode(),
            webhook_secret=self._secrets[crm.source],
        )
        env = os.environ | {
            "DATABASE_URL": self.stack.database_url,
            "REDIAL_ENVIRONMENT": "development",
        }
        process = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise ProvisioningFailed(
                f"intake's CLI could not save source {crm.source}:\n"
                + output.decode(errors="replace")
            )

    async def _route_to_demo_pools(self) -> None:
        """Add routes for the demo's sources, keeping everyone else's."""
        routing = await self._get(self._queue, "/v1/routing")
        ours = {crm.source for crm in CRMS}
        self._previous_routes = [r for r in routing["routes"] if r["source"] in ours]
        routes = [r for r in routing["routes"] if r["source"] not in ours]
        routes += [
            {"source": crm.source, "campaign": None, "pool": self.pools[crm.pool_kind]}
            for crm in CRMS
        ]
        await self._put(
            self._queue,
            "/v1/routing",
            {"default_pool": routing["default_pool"], "routes": routes},
        )

    async def _tidy_up(self) -> None:
        """Agents offline, routing as it was; the pools keep their history."""
        for name in self.agent_names:
            with contextlib.suppress(httpx.HTTPError, ProvisioningFailed):
                await self._put(
                    self._queue, f"/v1/agents/{name}/status", {"status": "offline"}
                )
        if self._previous_routes is None:
            return
        ours = {crm.source for crm in CRMS}
        with contextlib.suppress(httpx.HTTPError, ProvisioningFailed):
            routing = await self._get(self._queue, "/v1/routing")
            routes = [r for r in routing["routes"] if r["source"] not in ours]
            routes += self._previous_routes
            await self._put(
                self._queue,
                "/v1/routing",
                {"default_pool": routing["default_pool"], "routes": routes},
            )

    # -- the CRMs ----------------------------------------------------------

    async def _post_leads(self) -> None:
        """Post leads at the chosen rate (Poisson arrivals) for the arrival time."""
        arrivals = random.Random(f"redial-demo/{self.options.seed}/arrivals")
        in_flight = asyncio.Semaphore(POSTS_IN_FLIGHT)
        posts: set[asyncio.Task[None]] = set()
        due = 0.0
        number = 0
        while True:
            due += arrivals.expovariate(self.options.leads_per_second)
            if due >= self.options.arrival_seconds:
                break
            await asyncio.sleep(max(0.0, due - self.elapsed))
            number += 1
            await in_flight.acquire()
            post = asyncio.create_task(self._post_lead(number, in_flight))
            posts.add(post)
            post.add_done_callback(posts.discard)
        await asyncio.sleep(max(0.0, self.options.arrival_seconds - self.elapsed))
        if posts:
            await asyncio.gather(*posts)

    async def _post_lead(self, number: int, in_flight: asyncio.Semaphore) -> None:
        try:
            crm, lead = self._maker.make(number, self.clock.now())
            body = body_of(crm.payload(lead))
            signature = sign(
                self._secrets[crm.source], int(self.clock.now().timestamp()), body
            )
            try:
                answer = await self._intake.post(
                    f"/v1/webhooks/{crm.source}",
                    content=body,
                    headers={
                        SIGNATURE_HEADER: signature,
                        "Content-Type": "application/json",
                    },
                )
            except httpx.HTTPError as error:
                self.tally.refused += 1
                logger.warning("crm.post_failed source=%s error=%s", crm.source, error)
                return
            if answer.status_code != 202:
                self.tally.refused += 1
                logger.warning(
                    "crm.refused source=%s status=%s body=%s",
                    crm.source,
                    answer.status_code,
                    answer.text[:300],
                )
                return
            [result] = answer.json()["results"]
            if result["status"] == "duplicate":
                self.tally.duplicates += 1
                return
            self.tally.accepted(
                result["lead_id"],
                number,
                crm.source,
                self.pools[crm.pool_kind],
                self.clock.monotonic(),
            )
        finally:
            in_flight.release()

    # -- the agents --------------------------------------------------------

    async def _agent(self, name: str) -> None:
        """Ask for the next lead, make the call, log its outcome; repeat."""
        while not self._stopping.is_set():
            try:
                answer = await self._queue.post(f"/v1/agents/{name}/next-lead")
            except httpx.HTTPError as error:
                logger.warning("agent.next_lead_failed agent=%s error=%s", name, error)
                await self._idle()
                continue
            if answer.status_code == 204:
                await self._idle()
                continue
            if answer.status_code != 200:
                logger.warning(
                    "agent.next_lead_refused agent=%s status=%s body=%s",
                    name,
                    answer.status_code,
                    answer.text[:300],
                )
                await self._idle()
                continue
            await self._call(name, answer.json())

    async def _call(self, name: str, lease: dict[str, Any]) -> None:
        lead_id = lease["lead"]["lead_id"]
        record = await self._record_of(lead_id)
        if record is None:
            # Not a lead this run posted: give it back without a call, and
            # rest, or every agent would take it straight back, in a loop.
            logger.warning("agent.foreign_lead agent=%s lead_id=%s", name, lead_id)
            with contextlib.suppress(httpx.HTTPError):
                await self._queue.post(f"/v1/leases/{lease['lease_id']}/release")
            await self._idle()
            return
        outcome = self.options.model.outcome(record.number, lease["attempt"])
        await asyncio.sleep(outcome.talk_seconds)
        try:
            answer = await self._queue.post(
                f"/v1/leases/{lease['lease_id']}/outcome",
                json={
                    "disposition": outcome.disposition,
                    "duration_seconds": outcome.talk_seconds,
                },
            )
        except httpx.HTTPError as error:
            self.tally.failed_outcomes += 1
            logger.warning("agent.outcome_failed agent=%s error=%s", name, error)
            return
        if answer.status_code != 200:
            self.tally.failed_outcomes += 1
            logger.warning(
                "agent.outcome_refused agent=%s status=%s body=%s",
                name,
                answer.status_code,
                answer.text[:300],
            )
            return
        self.tally.called(
            lead_id,
            attempt=lease["attempt"],
            call_target=lease["call_target"],
            disposition=outcome.disposition,
            contacted=outcome.contacted,
            converted=outcome.converted,
            at=self.clock.monotonic(),
        )
        if self._arrivals_over and not self.tally.open_leads:
            self._all_done.set()

    async def _record_of(self, lead_id: str) -> LeadRecord | None:
        """The tally's record of the lead; a moment's grace first, since the
        queue may hand a lead out before its webhook post has read intake's
        202 and recorded it."""
        for _ in range(FOREIGN_GRACE_POLLS):
            record = self.tally.leads.get(lead_id)
            if record is not None:
                return record
            await asyncio.sleep(0.05)
        return self.tally.leads.get(lead_id)

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), IDLE_POLL_SECONDS)

    # -- progress ----------------------------------------------------------

    async def _show_progress(self) -> None:
        refresh = asyncio.create_task(self._refresh_live())
        try:
            while True:
                self._progress(self._progress_line())
                await asyncio.sleep(1.0)
        finally:
            refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresh

    async def _refresh_live(self) -> None:
        """Penetration and queue depth from the services, every two seconds."""
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                document = await self._get(
                    self._metrics,
                    "/v1/penetration",
                    params={"group_by": "pool", "window": self.window},
                )
                rows = [
                    g for g in document["groups"] if g["pool"] in self.pools.values()
                ]
                due = sum(row["attempts_due"] for row in rows)
                capped = sum(
                    (row["penetration"] or 0) * row["attempts_due"] for row in rows
                )
                self._live["penetration"] = capped / due if due else None
                stats = [
                    await self._get(self._queue, f"/v1/pools/{pool}/stats")
                    for pool in self.pools.values()
                ]
                self._live["queued"] = sum(s["queued"] for s in stats)
                self._live["due_now"] = sum(s["due_now"] for s in stats)
            await asyncio.sleep(2.0)

    def _progress_line(self) -> str:
        phase = "arriving" if not self._arrivals_over else "finishing"
        penetration = self._live.get("penetration")
        shown = "-" if penetration is None else f"{100 * penetration:.1f}%"
        return (
            f"{self.elapsed:4.0f}s {phase:<9} leads in {len(self.tally.leads):>4}"
            f"  calls {self.tally.calls:>5}  penetration now {shown:>6}"
            f"  waiting {self._live.get('due_now', 0)} due"
            f"/{self._live.get('queued', 0)} queued"
            f"  converted {self.tally.conversions}"
        )

    # -- the report's figures ---------------------------------------------

    async def _settled_figures(self) -> Figures:
        """The metrics API's figures once they count every call the demo made
        (events reach the metrics service through Kafka, a moment later)."""
        deadline = self.clock.monotonic() + self.options.metrics_timeout
        pools = list(self.pools.values())
        while True:
            figures = await self.figures()
            if counts_agree(figures, self.tally, pools):
                return figures
            if self.clock.monotonic() > deadline:
                logger.warning(
                    "report.metrics_behind timeout=%s", self.options.metrics_timeout
                )
                return figures
            await asyncio.sleep(0.5)

    async def figures(self) -> Figures:
        window = {"window": self.window}
        by_pool = await self._get(
            self._metrics, "/v1/penetration", params={"group_by": "pool"} | window
        )
        pools = list(self.pools.values())
        by_source: list[dict[str, Any]] = []
        distributions: dict[str, dict[str, Any]] = {}
        for pool in pools:
            document = await self._get(
                self._metrics,
                "/v1/penetration",
                params={"group_by": "source", "pool": pool} | window,
            )
            by_source += [group | {"pool": pool} for group in document["groups"]]
            distributions[pool] = await self._get(
                self._metrics,
                "/v1/attempts-distribution",
                params={"pool": pool} | window,
            )
        return Figures(
            by_pool=[g for g in by_pool["groups"] if g["pool"] in pools],
            by_source=sorted(by_source, key=lambda group: group["source"]),
            distributions=distributions,
            window=self.window,
        )

    # -- HTTP helpers --------------------------------------------------------

    async def _get(
        self, http: httpx.AsyncClient, path: str, params: dict[str, str] | None = None
    ) -> Any:
        answer = await http.get(path, params=params)
        if answer.status_code != 200:
            raise ProvisioningFailed(
                f"GET {http.base_url}{path}: {answer.status_code} {answer.text}"
            )
        return answer.json()

    async def _put(self, http: httpx.AsyncClient, path: str, body: Any) -> Any:
        answer = await http.put(path, json=body)
        if answer.status_code not in (200, 201):
            raise ProvisioningFailed(
                f"PUT {http.base_url}{path}: {answer.status_code} {answer.text}"
            )
        return answer.json()


def expected_run_seconds(options: FloorOptions) -> float:
    """The longest a run can take: arrivals, the drain, and the metrics wait."""
    return options.arrival_seconds + options.drain_seconds + options.metrics_timeout
