"""Nurture's decisions: who is enrolled, and when each step goes out.

Three things change nurture's state, each in its own transaction:

* The consumer (``apply_events``) records what the other services say about
  leads: arrival and contact data, the pool, exhaustion, conversion, opt-outs,
  invalid numbers, the DNC list; a new lead of a known person (a re-inquiry)
  takes that person's earlier leads out of nurture. Leads not enrolled yet are
  then re-planned: campaign chosen, enrolment time set.
* The scheduler (``schedule_once``, looped by ``run_scheduler`` in every copy)
  claims due leads with ``FOR UPDATE SKIP LOCKED``, enrols them, deals with
  their due steps (``sequencing.advance``) and writes the jobs to the outbox
  in the same transaction, so a step goes out once however many copies run
  and however often the service restarts.
* Requests: campaigns, and opt-outs (also published as ``lead.opted_out`` so
  the queue and metrics learn of them).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from services.nurture import metrics, repository
from services.nurture.repository import Calling, Ended
from services.nurture.schemas import (
    CampaignIn,
    CampaignOut,
    ChannelView,
    NurtureView,
    StepView,
)
from services.nurture.sequencing import (
    Advance,
    Job,
    LeadState,
    Step,
    advance,
    blocked,
    step_due,
)
from services.nurture.settings import NurtureSettings
from shared.clock import Clock
from shared.db import Connection
from shared.errors import NotFound
from shared.events import (
    DncUpdated,
    Envelope,
    LeadConverted,
    LeadDuplicate,
    LeadExhausted,
    LeadInvalid,
    LeadOptedOut,
    LeadQueued,
    LeadReceived,
    LeadSnapshot,
    NurtureJob,
    new_event,
)
from shared.outbox import add_events
from shared.retry import Backoff

logger = logging.getLogger(__name__)

EVENT_SOURCE = "redial/nurture"
#: The events nurture reads; every other type is skipped undecoded.
CONSUMED = {
    model.event_type
    for model in (
        LeadReceived,
        LeadDuplicate,
        LeadQueued,
        LeadExhausted,
        LeadConverted,
        LeadOptedOut,
        LeadInvalid,
        DncUpdated,
    )
}


class NurtureService:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        settings: NurtureSettings,
        clock: Clock,
        on_jobs: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._clock = clock
        #: Called after a commit that wrote jobs or events (wakes the relay).
        self._on_jobs = on_jobs
        #: Campaign versions never change once written, so they are cached.
        self._steps: dict[tuple[str, int], list[Step]] = {}
        #: Counter increments of the consumer's open transaction.
        self._staged: list[Callable[[], None]] = []

    # --- campaigns -----------------------------------------------------------

    async def put_campaign(
        self, name: str, campaign: CampaignIn
    ) -> tuple[dict[str, Any], bool]:
        """Store a new version; leads not enrolled yet are re-planned with it
        in the same transaction. Enrolled leads keep the version they have."""
        now = self._clock.now()
        definition = campaign.model_dump(mode="json")
        async with self._pool.acquire() as connection, connection.transaction():
            row, created = await repository.put_campaign(
                connection, name, definition, now
            )
            await repository.replan_waiting(
                connection, None, now, self._settings.default_timezone
            )
        logger.info(
            "campaign.stored campaign=%s version=%s created=%s",
            name,
            row["version"],
            created,
        )
        body = CampaignOut(
            name=name,
            version=row["version"],
            definition=campaign,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
        return body.model_dump(mode="json"), created

    async def get_campaign(self, name: str) -> dict[str, Any]:
        async with self._pool.acquire() as connection:
            row = await repository.campaign(connection, name)
        if row is None:
            raise NotFound(f"campaign {name!r} does not exist")
        body = CampaignOut(
            name=row["campaign"],
            version=row["version"],
            definition=CampaignIn.model_validate(row["definition"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )
        return body.model_dump(mode="json")

    async def list_campaigns(self) -> dict[str, Any]:
        async with self._pool.acquire() as connection:
            names = await repository.campaign_names(connection)
        return {"campaigns": names}

    # --- events from other services ----------------------------------------

    async def apply_events(
        self, connection: Connection, envelopes: Sequence[Envelope]
    ) -> None:
        """Consumer handler: runs inside the consumer's transaction.

        Arrivals and the queue's pool/exhaustion news are applied in bulk,
        the rarer events one by one after them, in their order. For any one
        lead that keeps what matters: its arrival comes first, conversion,
        invalidity and opt-outs end what the queue news changes, and older
        queue news never overrides newer. Across leads the order can differ
        (a merge that brings a number is applied after another lead's
        arrival with it in the same batch, so that re-inquiry is missed).
        """
        now = self._clock.now()
        # Counts staged by an earlier attempt at this batch were rolled back
        # with it: only this attempt's may reach after_commit.
        self._staged = []
        received: list[LeadSnapshot] = []
        calling: dict[uuid.UUID, Calling] = {}
        others: list[Envelope] = []
        for envelope in envelopes:
            data = envelope.data
            if envelope.source == EVENT_SOURCE:
                continue  # an opt-out made here, applied when it was made
            if isinstance(data, LeadReceived):
                received.append(data)
            elif isinstance(data, LeadQueued):
                _newer(
                    calling,
                    Calling(
                        data.lead_id,
                        data.pool,
                        "open",
                        not data.nurture_while_calling,
                        data.queued_at,
                    ),
                )
            elif isinstance(data, LeadExhausted):
                earlier = calling.get(data.lead_id)
                hold = earlier.hold_while_calling if earlier else None
                _newer(
                    calling,
                    Calling(
                        data.lead_id, data.pool, "exhausted", hold, data.exhausted_at
                    ),
                )
            else:
                others.append(envelope)

        await repository.upsert_received(connection, received, now)
        ended = await repository.end_reinquired(connection, received, now)
        self._stage_ended(ended, "reinquiry")
        await repository.set_calling(connection, list(calling.values()), now)
        replan = [lead.lead_id for lead in received] + list(calling)
        for envelope in others:
            replan += await self._apply_one(connection, envelope, now)
        await repository.replan_waiting(
            connection, replan, now, self._settings.default_timezone
        )

    async def _apply_one(
        self, connection: Connection, envelope: Envelope, now: dt.datetime
    ) -> list[uuid.UUID]:
        """Apply one of the rarer events; returns leads to re-plan."""
        data = envelope.data
        if isinstance(data, LeadConverted):
            self._stage_ended(
                [await repository.end_lead(connection, data.lead_id, "converted", now)],
                "converted",
            )
        elif isinstance(data, LeadInvalid):
            self._stage_ended(
                [await repository.end_lead(connection, data.lead_id, "invalid", now)],
                "invalid",
            )
        elif isinstance(data, LeadOptedOut):
            await self._opt_out(
                connection, data.lead_id, data.channel, data.phone, data.email, now
            )
        elif isinstance(data, LeadDuplicate):
            await repository.update_contact(connection, data.lead, now)
            return [data.lead_id]
        elif isinstance(data, DncUpdated):
            touched, ended = await repository.set_dnc(
                connection, data.phone, data.listed, now
            )
            self._stage_ended(ended, "dnc")
            return touched
        return []

    async def _opt_out(
        self,
        connection: Connection,
        lead_id: uuid.UUID,
        channel: str,
        phone: str | None,
        email: str | None,
        now: dt.datetime,
        staged: list[Callable[[], None]] | None = None,
    ) -> None:
        """Opt out of the nurture channels ``channel`` covers (call-only
        opt-outs are the queue's). The addresses the event names are recorded
        even for a lead nurture has not seen, so its leads start opted out."""
        channels = {"sms": ["sms"], "email": ["email"], "all": ["sms", "email"]}.get(
            channel, []
        )
        if not channels:
            return
        contact = await repository.contact_of(connection, lead_id)
        addresses = {
            "sms": phone or (contact["phone"] if contact else None),
            "email": email or (contact["email"] if contact else None),
        }
        ended = await repository.opt_out(connection, lead_id, channels, addresses, now)
        self._stage_ended(ended, "opted_out", staged)

    def _stage_ended(
        self,
        ended: Sequence[Ended | None],
        reason: str,
        staged: list[Callable[[], None]] | None = None,
    ) -> None:
        """Stage the counts of leads taken out of a sequence, on the
        consumer's list unless the caller keeps its own."""
        into = self._staged if staged is None else staged
        for lead in ended:
            if lead is not None and lead.was_enrolled and lead.campaign:
                into.append(metrics.LEFT.labels(lead.campaign, reason).inc)

    def after_commit(self) -> None:
        """The consumer committed: count what its transaction did."""
        staged, self._staged = self._staged, []
        for increment in staged:
            increment()

    # --- opt-out requests -------------------------------------------------------

    async def opt_out(self, lead_id: uuid.UUID, channel: str) -> dict[str, Any]:
        """Stop ``channel`` (email, sms or all) for the lead and every lead
        with the same address; the queue and metrics hear of it as a
        ``lead.opted_out`` event."""
        now = self._clock.now()
        async with self._pool.acquire() as connection, connection.transaction():
            contact = await repository.contact_of(connection, lead_id)
            if contact is None:
                raise NotFound(
                    f"lead {lead_id} is not known to nurture (yet: its"
                    " lead.received may still be on its way; retry shortly)"
                )
            staged: list[Callable[[], None]] = []
            await self._opt_out(connection, lead_id, channel, None, None, now, staged)
            event = LeadOptedOut(
                lead_id=lead_id,
                phone=contact["phone"] if channel in ("sms", "all") else None,
                email=contact["email"] if channel in ("email", "all") else None,
                channel=channel,
                opted_out_at=now,
            )
            await add_events(
                connection,
                [new_event(event, source=EVENT_SOURCE, subject=str(lead_id), time=now)],
                now_ts=now,
            )
        for increment in staged:
            increment()
        self._on_jobs()
        logger.info("lead.opted_out lead_id=%s channel=%s", lead_id, channel)
        return await self.nurture_view(lead_id)

    # --- the scheduler -----------------------------------------------------------

    async def run_scheduler(self) -> None:
        """Loop until cancelled: claim and advance due leads; when caught up,
        look again every ``tick_seconds``."""
        backoff = Backoff(initial=0.2, maximum=5.0)
        while True:
            try:
                claimed = await self.schedule_once()
                backoff.reset()
                metrics.SCHEDULER_PASSED.set(self._clock.now().timestamp())
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the scheduler lives on
                metrics.SCHEDULER_FAILURES.inc()
                delay = backoff.next_delay()
                logger.warning("scheduler.failed retry_in=%.2fs error=%r", delay, error)
                await asyncio.sleep(delay)
                continue
            if claimed < self._settings.scheduler_batch:
                await asyncio.sleep(self._settings.tick_seconds)

    async def run_due(self) -> int:
        """Advance every lead due at the clock's time; returns how many."""
        total = 0
        while claimed := await self.schedule_once():
            total += claimed
        return total

    async def schedule_once(self) -> int:
        """One transaction: claim up to a batch of due leads and advance them.

        Returns how many leads were claimed.
        """
        now = self._clock.now()
        async with self._pool.acquire() as connection, connection.transaction():
            claimed = await repository.claim_due(
                connection, now, self._settings.scheduler_batch
            )
            if not claimed:
                metrics.SCHEDULER_LAG.set(0)
                return 0
            listed = await repository.catch_up_with_lists(
                connection,
                [lead.state.lead_id for lead in claimed if lead.behind_lists],
                now,
            )
            # A waiting lead whose campaign was switched off after it was
            # planned is planned again (another campaign, or none), not
            # enrolled in a campaign that enrols nobody.
            stale = {
                lead.state.lead_id
                for lead in claimed
                if lead.state.enrolled_at is None and not lead.state.campaign_active
            }
            await repository.replan_waiting(
                connection, list(stale), now, self._settings.default_timezone
            )
            due = [
                lead.state
                for lead in claimed
                if not lead.dnc and lead.state.lead_id not in stale
            ]
            advances = await self._advance(connection, due, now)
            jobs = [
                self._job_event(lead, job, now)
                for result, lead in advances
                for job in result.jobs
            ]
            await repository.save_advances(
                connection,
                [(result, lead.campaign_version) for result, lead in advances],
                jobs,
                now,
            )
        oldest = claimed[0].state.next_at
        metrics.SCHEDULER_LAG.set(max(0.0, (now - oldest).total_seconds()))
        for ended in listed:
            if ended.campaign:
                metrics.LEFT.labels(ended.campaign, "dnc").inc()
        self._count(advances)
        if jobs:
            self._on_jobs()
        return len(claimed)

    async def _advance(
        self, connection: Connection, leads: Sequence[LeadState], now: dt.datetime
    ) -> list[tuple[Advance, LeadState]]:
        """Each lead's steps at ``now``. A lead the rules cannot be applied to
        (a fault in its data) is parked, not retried: it would be claimed
        first again on every pass and hold up every lead behind it."""
        steps = await self._versions(connection, leads)
        advances = []
        for lead in leads:
            try:
                result = advance(
                    lead,
                    steps.get((lead.campaign, lead.campaign_version), []),
                    now,
                    sms_hours=self._settings.sms_hours,
                    default_zone=self._settings.default_timezone,
                )
            except Exception as error:  # noqa: BLE001 - parked, logged, counted
                # Swallowed here, so ERROR: someone has to look at the lead.
                logger.error(
                    "scheduler.lead_parked lead_id=%s error=%r", lead.lead_id, error
                )
                metrics.PARKED.inc()
                result = Advance(
                    lead_id=lead.lead_id,
                    enrolled_at=lead.enrolled_at or now,
                    newly_enrolled=False,
                    next_step=lead.next_step,
                    next_at=None,
                    finish_reason="failed",
                )
            advances.append((result, lead))
        return advances

    async def _versions(
        self, connection: Connection, leads: Sequence[LeadState]
    ) -> dict[tuple[str, int], list[Step]]:
        wanted = {(lead.campaign, lead.campaign_version) for lead in leads}
        missing = wanted - self._steps.keys()
        if missing:
            self._steps.update(await repository.version_steps(connection, missing))
        return self._steps

    def _job_event(self, lead: LeadState, job: Job, now: dt.datetime) -> Envelope:
        data = NurtureJob(
            job_id=job.job_id,
            idempotency_key=job.idempotency_key,
            lead_id=lead.lead_id,
            campaign=lead.campaign,
            step=job.step,
            channel=job.channel,
            template_id=job.template_id,
            content_url=job.content_url,
            to=job.to,
            first_name=lead.first_name,
            last_name=lead.last_name,
            due_at=job.due_at,
            send_before=job.send_before,
        )
        # The envelope id is the job id: a copy that reaches the topic twice
        # (the relay re-sends a batch after a failure) is one event to readers.
        return Envelope(
            id=job.job_id,
            source=EVENT_SOURCE,
            type=data.event_type,
            subject=str(lead.lead_id),
            time=now,
            data=data,
        )

    def _count(self, advances: Sequence[tuple[Advance, LeadState]]) -> None:
        """Count a pass's outcomes: summed per label set first, since a pass
        of a thousand leads would otherwise look up a labelled child per job."""
        enrolled: collections.Counter[str] = collections.Counter()
        jobs: collections.Counter[tuple[str, str]] = collections.Counter()
        suppressed: collections.Counter[tuple[str, str, str]] = collections.Counter()
        left: collections.Counter[tuple[str, str]] = collections.Counter()
        for result, lead in advances:
            campaign = lead.campaign
            if result.newly_enrolled and result.finish_reason != "campaign_stopped":
                enrolled[campaign] += 1
            for job in result.jobs:
                jobs[campaign, job.channel] += 1
            for channel, reason in result.suppressed:
                suppressed[campaign, channel, reason] += 1
            if result.finish_reason is not None:
                left[campaign, result.finish_reason] += 1
            for delay in result.delays:
                metrics.JOB_DELAY.observe(delay)
        for campaign, count in enrolled.items():
            metrics.ENROLMENTS.labels(campaign).inc(count)
        for labels, count in jobs.items():
            metrics.JOBS.labels(*labels).inc(count)
        for triple, count in suppressed.items():
            metrics.SUPPRESSED.labels(*triple).inc(count)
        for pair, count in left.items():
            metrics.LEFT.labels(*pair).inc(count)

    # --- reads ----------------------------------------------------------------------

    async def nurture_view(self, lead_id: uuid.UUID) -> dict[str, Any]:
        async with self._pool.acquire() as connection:
            row = await repository.lead(connection, lead_id)
        if row is None:
            raise NotFound(f"lead {lead_id} is not known to nurture")
        return _view(row, self._settings).model_dump(mode="json")


def _newer(calling: dict[uuid.UUID, Calling], change: Calling) -> None:
    """Keep ``change`` unless the batch already holds later queue news."""
    kept = calling.get(change.lead_id)
    if kept is None or kept.at <= change.at:
        calling[change.lead_id] = change


def _view(row: asyncpg.Record, settings: NurtureSettings) -> NurtureView:
    state = _lead_state(row)
    channels = {
        channel: ChannelView(
            allowed=blocked(state, channel) is None, reason=blocked(state, channel)
        )
        for channel in ("email", "sms")
    }
    status, reason = _status(row)
    steps = (
        _step_views(row, state, settings, excluded=status == "excluded")
        if row["definition"]
        else []
    )
    return NurtureView(
        lead_id=row["lead_id"],
        status=status,
        reason=reason,
        campaign=row["campaign"],
        campaign_version=row["campaign_version"],
        received_at=row["received_at"],
        enrolment_due_at=row["next_at"] if row["enrolled_at"] is None else None,
        enrolled_at=row["enrolled_at"],
        finished_at=row["finished_at"],
        channels=channels,
        steps=steps,
    )


def _status(row: asyncpg.Record) -> tuple[Any, str | None]:
    if row["enrolled_at"] is not None:
        if row["finished_at"] is not None:
            return "finished", row["finish_reason"]
        return "enrolled", None
    if row["ended_reason"] is not None:
        return "excluded", row["ended_reason"]
    if row["dnc"]:
        return "excluded", "dnc"
    if row["sms_opted_out"] and row["email_opted_out"]:
        return "excluded", "opted_out"
    if row["hold_while_calling"] and row["calling"] == "open":
        return "held", "still being called; its pool enrols leads once exhausted"
    if row["campaign"] is None:
        return "waiting", "no active campaign takes the lead's pool and source"
    return "waiting", None


def _lead_state(row: asyncpg.Record) -> LeadState:
    # The view only asks which channels are open: version, activity and the
    # time do not matter to that.
    return repository.lead_state(
        row,
        campaign_version=row["campaign_version"] or 0,
        campaign_active=True,
        next_at=row["next_at"] or row["received_at"],
    )


def _step_views(
    row: asyncpg.Record,
    state: LeadState,
    settings: NurtureSettings,
    *,
    excluded: bool,
) -> list[StepView]:
    """Every step of the lead's campaign version: what happened to the ones
    dealt with, when the others are due (or that they never will be)."""
    history = {entry["step"]: entry for entry in row["history"]}
    zones = list(state.timezones) or [settings.default_timezone]
    enrolled_at = row["enrolled_at"]
    ended = row["finished_at"] is not None or row["ended_reason"] is not None
    ended = ended or excluded
    views = []
    for index, step in enumerate(row["definition"]["steps"]):
        entry = history.get(index)
        view = StepView(
            step=index,
            day=step["day"],
            channel=step["channel"],
            template_id=step["template_id"],
            content_url=step.get("content_url"),
            state="pending",
            at=None,
        )
        if entry is not None:
            view.state = entry["outcome"]
            view.at = dt.datetime.fromisoformat(entry["at"])
            view.reason = entry["reason"]
            view.job_id = uuid.UUID(entry["job_id"]) if entry["job_id"] else None
        elif ended or blocked(state, step["channel"]) == "opted_out":
            view.state = "cancelled"
            view.reason = (
                row["finish_reason"]
                or row["ended_reason"]
                or ("dnc" if row["dnc"] else "opted_out")
            )
        elif enrolled_at is not None:
            due = step_due(enrolled_at, step["day"], ZoneInfo(zones[0]))
            if index == row["next_step"] and row["next_at"] is not None:
                due = max(due, row["next_at"])
            view.at = due
        views.append(view)
    return views
