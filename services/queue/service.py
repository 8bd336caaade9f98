"""The queue's decisions: which lead an agent gets, and what a call changes.

Every request and every consumed event is one transaction, and the events it
causes are written to the outbox inside it. Leads are chosen by PostgreSQL
(see ``repository._LEASE_SQL``); scheduling rules live in ``scheduling`` and
the law's calling hours and caps in ``shared.compliance``.

The scheduler (``tick``) runs in every copy of the service: it promotes
waiting leads that fell due, re-plans leads whose calling window closed and
reaps expired leases, each with ``FOR UPDATE SKIP LOCKED`` so copies never
handle the same row twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import asyncpg
import phonenumbers

from services.queue import repository
from services.queue.metrics import (
    DUE_NOW,
    LEADS,
    LEASES,
    NEXT_LEAD_SECONDS,
    OUTCOMES,
    REAPED,
    RELEASES,
)
from services.queue.repository import CallRecord, Lead
from services.queue.scheduling import (
    CALLBACK,
    EFFECTS,
    NEVER_CALLED,
    LeadFacts,
    cadence_due,
    plan,
    recent,
    slot_of,
    zones_of,
)
from services.queue.schemas import (
    AgentIn,
    AgentStatus,
    ExternalCallIn,
    OutcomeIn,
    PoolRules,
    Routing,
)
from services.queue.settings import QueueSettings
from shared.clock import Clock
from shared.compliance import (
    FEDERAL_HOURS,
    callable_window,
    cap_free_at,
    rules_for,
)
from shared.db import Connection
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.events import (
    CallLogged,
    DncUpdated,
    Envelope,
    EventData,
    LeadConverted,
    LeadDuplicate,
    LeadExhausted,
    LeadInvalid,
    LeadLeased,
    LeadOptedOut,
    LeadQueued,
    LeadReceived,
    LeadRecycled,
    LeadSnapshot,
    new_event,
)
from shared.outbox import add_events

logger = logging.getLogger(__name__)

#: A phone number's row: as fetched, or as the outcome path's joined read.
PhoneRow = Mapping[str, Any] | asyncpg.Record

EVENT_SOURCE = "redial/queue"
#: A lead held off the queue while its number is on the DNC list waits "forever".
FOREVER = repository.FOREVER
#: How far ahead a callback may be asked for.
CALLBACK_HORIZON = dt.timedelta(days=90)
#: Lease attempts per next-lead when the first choices' numbers are busy.
LEASE_TRIES = 5
#: Queued states: the lead still expects calls.
QUEUED = ("waiting", "ready")


class UnknownPool(NotFound):
    code = "unknown_pool"
    title = "No such pool"


class UnknownAgent(NotFound):
    code = "unknown_agent"
    title = "No such agent"


class UnknownLease(NotFound):
    code = "unknown_lease"
    title = "No such lease"


class UnknownLead(NotFound):
    code = "unknown_lead"
    title = "No such lead in the queue"


class AgentNotAvailable(Conflict):
    code = "agent_not_available"
    title = "The agent is not available"


class LeaseClosed(Conflict):
    code = "lease_closed"
    title = "The lease already ended"


class LeaseExpired(Conflict):
    code = "lease_expired"
    title = "The lease expired"


class LeaseOpen(Conflict):
    code = "lease_open"
    title = "The agent holds an open lease"


class LeadLeasedNow(Conflict):
    code = "lead_leased"
    title = "The lead is on an open lease"


def _invalid(field_name: str, message: str) -> ValidationFailed:
    return ValidationFailed([{"field": field_name, "message": message}])


@dataclass
class NextLead:
    """What the dialer gets with a lease."""

    lease_id: uuid.UUID
    expires_at: dt.datetime
    pool: str
    attempt: int
    call_target: int
    lead: Lead
    reason: dict[str, Any]


@dataclass
class Caused:
    """Events a change causes, and the metrics to count once it commits."""

    events: list[Envelope] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def emit(self, data: EventData, lead_id: uuid.UUID | str, now: dt.datetime) -> None:
        self.events.append(
            new_event(data, source=EVENT_SOURCE, subject=str(lead_id), time=now)
        )


class QueueService:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        settings: QueueSettings,
        clock: Clock,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._clock = clock
        self._on_commit = on_commit
        self._rules: dict[str, PoolRules] = {}
        self._last_tick: dt.datetime | None = None
        self._tick_lock = asyncio.Lock()

    # --- pools ------------------------------------------------------------

    async def load_rules(self) -> None:
        async with self._pool.acquire() as connection:
            rows = await repository.pools(connection)
        self._rules = {
            row["name"]: PoolRules.model_validate(row["rules"]) for row in rows
        }

    async def _pool_rules(self, connection: Connection, name: str) -> PoolRules:
        rules = self._rules.get(name)
        if rules is None:
            row = await repository.pool(connection, name)
            if row is None:
                raise UnknownPool(f"pool {name!r} does not exist")
            rules = self._rules[name] = PoolRules.model_validate(row["rules"])
        return rules

    async def put_pool(
        self, name: str, rules: PoolRules
    ) -> tuple[dict[str, Any], bool]:
        now = self._clock.now()
        async with self._pool.acquire() as connection, connection.transaction():
            targets = [pool for pool in (rules.recycle_to, rules.exhausted_to) if pool]
            missing = [
                pool
                for pool in await repository.missing_pools(connection, targets)
                if pool != name
            ]
            if missing:
                field_name = (
                    "recycle_to" if rules.recycle_to in missing else "exhausted_to"
                )
                raise _invalid(field_name, f"pool {missing[0]!r} does not exist")
            _check_hours_are_legal(rules)
            await self._check_no_cycle(connection, name, rules)
            before = await repository.pool(connection, name)
            row = await repository.save_pool(
                connection, name, rules.model_dump(mode="json"), now
            )
        self._rules[name] = rules
        if before is not None and _plans_change(
            PoolRules.model_validate(before["rules"]), rules
        ):
            await self._mark_for_replanning(name, rules.call_target, now)
        return _pool_out(row), bool(row["created"])

    async def _check_no_cycle(
        self, connection: Connection, name: str, rules: PoolRules
    ) -> None:
        """exhausted_to must not lead back here: a lead would be called forever."""
        seen, current = {name}, rules.exhausted_to
        while current is not None:
            if current in seen:
                raise _invalid(
                    "exhausted_to",
                    f"exhausted leads would come back to {current!r}: the chain "
                    "of exhausted_to pools must end",
                )
            seen.add(current)
            row = await repository.pool(connection, current)
            current = (
                PoolRules.model_validate(row["rules"]).exhausted_to if row else None
            )

    async def _mark_for_replanning(
        self, name: str, call_target: int, changed_at: dt.datetime
    ) -> None:
        """The pool's queued leads are re-planned under its new rules, in short
        statements so next-lead keeps serving the pool meanwhile."""
        batch = self._settings.replan_batch * 10
        marked = 0
        async with self._pool.acquire() as connection:
            while True:
                count = await repository.mark_pool_for_replanning(
                    connection, name, call_target, changed_at, batch
                )
                marked += count
                if count < batch:
                    break
                await asyncio.sleep(0)
            # Leads locked a moment ago (a next-lead's candidate, a call being
            # recorded) were skipped: wait for them, so none keeps old rules.
            for _ in range(3):
                try:
                    marked += await repository.mark_pool_for_replanning(
                        connection,
                        name,
                        call_target,
                        changed_at,
                        batch,
                        skip_locked=False,
                    )
                    break
                except asyncpg.DeadlockDetectedError:
                    continue  # an outcome locking siblings won; go again
        logger.info("pool.updated pool=%s replanning=%d", name, marked)

    async def get_pool(self, name: str) -> dict[str, Any]:
        async with self._pool.acquire() as connection:
            row = await repository.pool(connection, name)
        if row is None:
            raise UnknownPool(f"pool {name!r} does not exist")
        return _pool_out(row)

    async def pool_stats(self, name: str) -> dict[str, Any]:
        now = self._clock.now()
        async with self._pool.acquire() as connection:
            if await repository.pool(connection, name) is None:
                raise UnknownPool(f"pool {name!r} does not exist")
            rows = await repository.pool_stats(connection, name, now)
        by_state = {state: 0 for state in repository.STATES}
        by_source: dict[str, dict[str, int]] = {}
        for row in rows:
            by_state[row["state"]] += row["leads"]
            by_source.setdefault(row["source"], {})[row["state"]] = row["leads"]
        depth = _depth(
            queued=by_state["waiting"] + by_state["ready"],
            due_now=sum(row["due_now"] for row in rows),
            leased=by_state["leased"],
        )
        return {
            "pool": name,
            **depth,
            "by_state": by_state,
            "by_source": by_source,
            "at": now,
        }

    async def floor(self) -> dict[str, Any]:
        """The call floor at a glance: agents by status, and every pool's
        queued, due-now and leased leads (as ``pool_stats`` counts them) with
        the agents drawing from it. One snapshot, so the figures add up."""
        now = self._clock.now()
        async with (
            self._pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            pools = await repository.pools(connection)
            depth = await repository.live_depth_by_pool(connection, now)
            agents = await repository.agents_by_status(connection)
        live = {
            row["pool"]: _depth(
                queued=row["queued"], due_now=row["due_now"], leased=row["leased"]
            )
            for row in depth
        }
        by_pool: dict[str | None, dict[str, int]] = {}
        for row in agents:
            statuses = by_pool.setdefault(row["pool"], dict.fromkeys(AGENT_STATUSES, 0))
            statuses[row["status"]] = row["agents"]
        nobody = dict.fromkeys(AGENT_STATUSES, 0)
        # Every lead's pool is a row of pools (a foreign key), so this lists all.
        floor_pools = [
            {
                "pool": row["name"],
                **live.get(row["name"], _depth(queued=0, due_now=0, leased=0)),
                "agents": by_pool.get(row["name"], nobody),
            }
            for row in pools
        ]
        return {
            "agents": by_pool.get(None, nobody),
            **_depth(
                queued=sum(entry["queued"] for entry in floor_pools),
                due_now=sum(entry["due_now"] for entry in floor_pools),
                leased=sum(entry["leased"] for entry in floor_pools),
            ),
            "pools": floor_pools,
            "at": now,
        }

    # --- routing ----------------------------------------------------------

    async def put_routing(self, routing: Routing) -> dict[str, Any]:
        async with self._pool.acquire() as connection, connection.transaction():
            wanted = [routing.default_pool, *(route.pool for route in routing.routes)]
            missing = set(await repository.missing_pools(connection, wanted))
            errors = []
            if routing.default_pool in missing:
                errors.append(
                    {
                        "field": "default_pool",
                        "message": f"pool {routing.default_pool!r} does not exist",
                    }
                )
            seen: set[tuple[str, str]] = set()
            for index, route in enumerate(routing.routes):
                key = (route.source, route.campaign or "")
                if route.pool in missing:
                    errors.append(
                        {
                            "field": f"routes[{index}].pool",
                            "message": f"pool {route.pool!r} does not exist",
                        }
                    )
                if key in seen:
                    errors.append(
                        {
                            "field": f"routes[{index}]",
                            "message": "a route for this source and campaign "
                            "is already listed",
                        }
                    )
                seen.add(key)
            if errors:
                raise ValidationFailed(errors)
            await repository.replace_routing(
                connection,
                routing.default_pool,
                [(r.source, r.campaign or "", r.pool) for r in routing.routes],
            )
        return await self.get_routing()

    async def get_routing(self) -> dict[str, Any]:
        async with self._pool.acquire() as connection:
            default, routes = await repository.routing(connection)
        return {
            "default_pool": default,
            "routes": [
                {
                    "source": row["source"],
                    "campaign": row["campaign"] or None,
                    "pool": row["pool"],
                }
                for row in routes
            ],
        }

    # --- agents -----------------------------------------------------------

    async def put_agent(
        self, agent_id: str, agent: AgentIn
    ) -> tuple[dict[str, Any], bool]:
        now = self._clock.now()
        async with self._pool.acquire() as connection, connection.transaction():
            missing = await repository.missing_pools(connection, agent.pools)
            if missing:
                index = agent.pools.index(missing[0])
                raise _invalid(f"pools[{index}]", f"pool {missing[0]!r} does not exist")
            created = await repository.save_agent(
                connection, agent_id, agent.pools, agent.team, now
            )
            row = await repository.agent(connection, agent_id)
        assert row is not None
        return dict(row), created

    async def get_agent(self, agent_id: str) -> dict[str, Any]:
        async with self._pool.acquire() as connection:
            row = await repository.agent(connection, agent_id)
        if row is None:
            raise UnknownAgent(f"agent {agent_id!r} does not exist")
        return dict(row)

    async def set_status(self, agent_id: str, status: str) -> dict[str, Any]:
        now = self._clock.now()
        async with self._pool.acquire() as connection, connection.transaction():
            if await repository.lock_agent(connection, agent_id) is None:
                raise UnknownAgent(f"agent {agent_id!r} does not exist")
            # Read again under the lock: a next-lead that held it may have
            # leased a lead since this transaction's first snapshot.
            row = await repository.agent(connection, agent_id)
            assert row is not None
            if row["open_lease"] is not None and status != "busy":
                raise LeaseOpen(
                    f"agent {agent_id!r} holds lease {row['open_lease']}; record its "
                    "outcome or release it first",
                    lease_id=str(row["open_lease"]),
                )
            await repository.set_agent_status(connection, agent_id, status, now)
            row = await repository.agent(connection, agent_id)
        assert row is not None
        return dict(row)

    # --- next lead --------------------------------------------------------

    async def next_lead(self, agent_id: str) -> NextLead | None:
        """Leases the best lead for the agent, or None when nothing is due."""
        started = time.perf_counter()
        if self._settings.scheduler_inline:
            await self.maybe_tick()
        now = self._clock.now()
        caused = Caused()
        async with self._pool.acquire() as connection, connection.transaction():
            leased = await self._lease(connection, agent_id, now)
            if leased is not None:
                lead, team = leased
                reason = _why_chosen(lead, now)
                caused.emit(
                    LeadLeased(
                        lead_id=lead.lead_id,
                        lease_id=_required(lead.lease_id),
                        pool=lead.pool,
                        agent_id=agent_id,
                        team=team,
                        attempt=lead.attempts + 1,
                        leased_at=now,
                        expires_at=_required(lead.lease_expires_at),
                    ),
                    lead.lead_id,
                    now,
                )
                await repository.record_lease(
                    connection,
                    lead,
                    reason=reason["code"],
                    now=now,
                    events=caused.events,
                )
        if leased is None:
            NEXT_LEAD_SECONDS.labels("empty").observe(time.perf_counter() - started)
            return None
        self._on_commit()
        LEASES.labels(lead.pool).inc()
        NEXT_LEAD_SECONDS.labels("leased").observe(time.perf_counter() - started)
        return NextLead(
            lease_id=_required(lead.lease_id),
            expires_at=_required(lead.lease_expires_at),
            pool=lead.pool,
            attempt=lead.attempts + 1,
            call_target=lead.call_target,
            lead=lead,
            reason=reason,
        )

    async def _lease(
        self, connection: Connection, agent_id: str, now: dt.datetime
    ) -> tuple[Lead, str | None] | None:
        lease_seconds = {
            name: float(r.lease_seconds) for name, r in self._rules.items()
        }
        default = float(PoolRules().lease_seconds)
        for _ in range(LEASE_TRIES):
            attempt = await repository.lease_next(
                connection,
                agent_id=agent_id,
                lease_id=uuid.uuid4(),
                now=now,
                lease_seconds=lease_seconds,
                default_lease_seconds=default,
            )
            if not attempt.agent_ok:
                await self._refuse_agent(connection, agent_id)
            if attempt.lead is not None:
                return attempt.lead, attempt.team
            if attempt.chosen is None:
                return None
            await self._hold_for_phone(connection, attempt.chosen, now)
        return None

    async def _refuse_agent(self, connection: Connection, agent_id: str) -> None:
        row = await repository.agent(connection, agent_id)
        if row is None:
            raise UnknownAgent(f"agent {agent_id!r} does not exist")
        detail: dict[str, Any] = {"agent_status": row["status"]}
        if row["open_lease"] is not None:
            detail["lease_id"] = str(row["open_lease"])
        raise AgentNotAvailable(
            f"agent {agent_id!r} is {row['status']}; only available agents get leads",
            **detail,
        )

    async def _hold_for_phone(
        self, connection: Connection, lead_id: uuid.UUID, now: dt.datetime
    ) -> None:
        """The chosen lead's number is on another open lease or capped: the
        lead waits until the number is free (re-planned then)."""
        lead = await repository.lead(connection, lead_id, for_update=True)
        assert lead is not None
        assert lead.phone is not None
        number = await repository.phone(connection, lead.phone)
        assert number is not None
        until = max(
            (t for t in (number["leased_until"], number["blocked_until"]) if t),
            default=now,
        )
        lead.state, lead.wait_reason = "waiting", "phone_busy"
        lead.due_at, lead.closes_at = max(until, now), max(until, now)
        lead.updated_at = now
        await repository.save_lead(connection, lead)

    # --- outcomes ---------------------------------------------------------

    async def outcome(self, lease_id: uuid.UUID, outcome: OutcomeIn) -> dict[str, Any]:
        now = self._clock.now()
        self._check_callback(outcome, now)
        caused = Caused()
        async with self._pool.acquire() as connection, connection.transaction():
            context = await repository.call_context(connection, lease_id)
            if context is None:
                await self._refuse_lease(connection, lease_id)
            assert context is not None
            lead = context.lead
            assert lead.leased_agent is not None
            if _required(lead.lease_expires_at) <= now:
                raise LeaseExpired(
                    f"lease {lease_id} expired at "
                    f"{lead.lease_expires_at:%Y-%m-%dT%H:%M:%SZ}; the lead went back "
                    "to the pool. Log a call made anyway with "
                    f"POST /v1/leads/{lead.lead_id}/calls",
                    lead_id=str(lead.lead_id),
                )
            result = await self._apply_call(
                connection,
                lead,
                caused,
                disposition=outcome.disposition,
                agent_id=lead.leased_agent,
                team=context.team,
                duration=outcome.duration_seconds,
                called_at=now,
                callback_at=outcome.callback_at,
                lease_id=lease_id,
                now=now,
                number=context.phone,
                agent_attempts=context.agent_attempts,
                listed=context.listed,
                note=outcome.note,
            )
        self._committed(caused)
        return result

    async def log_call(
        self, lead_id: uuid.UUID, call: ExternalCallIn
    ) -> dict[str, Any]:
        """A call made outside the queue: counted like any other attempt."""
        now = self._clock.now()
        called_at = call.called_at or now
        if called_at > now:
            raise _invalid("called_at", "a call cannot be logged in the future")
        self._check_callback(call, now)
        caused = Caused()
        async with self._pool.acquire() as connection, connection.transaction():
            lead = await repository.lead(connection, lead_id, for_update=True)
            if lead is None:
                raise UnknownLead(f"lead {lead_id} is not in the queue")
            if lead.state == "leased":
                raise LeadLeasedNow(
                    f"lead {lead_id} is leased to {lead.leased_agent}; record the "
                    f"call as the outcome of lease {lead.lease_id}",
                    lease_id=str(lead.lease_id),
                )
            team = None
            if call.agent_id is not None:
                agent = await repository.agent(connection, call.agent_id)
                if agent is None:
                    raise _invalid(
                        "agent_id", f"agent {call.agent_id!r} does not exist"
                    )
                team = agent["team"]
            result = await self._apply_call(
                connection,
                lead,
                caused,
                disposition=call.disposition,
                agent_id=call.agent_id,
                team=team,
                duration=call.duration_seconds,
                called_at=called_at,
                callback_at=call.callback_at,
                lease_id=None,
                now=now,
                note=call.note,
            )
        self._committed(caused)
        return result

    def _check_callback(self, outcome: OutcomeIn, now: dt.datetime) -> None:
        if outcome.callback_at is None:
            return
        if outcome.callback_at <= now:
            raise _invalid("callback_at", "a callback must be in the future")
        if outcome.callback_at > now + CALLBACK_HORIZON:
            raise _invalid("callback_at", "a callback must be within 90 days")

    async def _refuse_lease(self, connection: Connection, lease_id: uuid.UUID) -> None:
        row = await repository.lease_row(connection, lease_id)
        if row is None:
            raise UnknownLease(f"lease {lease_id} does not exist")
        if row["end_reason"] == "expired":
            raise LeaseExpired(
                f"lease {lease_id} expired and its lead went back to the pool",
                lead_id=str(row["lead_id"]),
            )
        raise LeaseClosed(
            f"lease {lease_id} already ended ({row['end_reason'] or 'lead withdrawn'})",
            end_reason=row["end_reason"],
            disposition=row["disposition"],
        )

    async def _apply_call(
        self,
        connection: Connection,
        lead: Lead,
        caused: Caused,
        *,
        disposition: Any,
        agent_id: str | None,
        team: str | None,
        duration: float,
        called_at: dt.datetime,
        callback_at: dt.datetime | None,
        lease_id: uuid.UUID | None,
        now: dt.datetime,
        number: PhoneRow | None = None,
        agent_attempts: int | None = None,
        listed: bool | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Counts the attempt and applies the disposition. ``number``,
        ``agent_attempts`` and ``listed`` (the number is on the DNC list) are
        read here unless the caller fetched them."""
        rules = await self._pool_rules(connection, lead.pool)
        if number is None and lead.phone:
            number = await repository.phone(connection, lead.phone)
        if listed is None:
            listed = bool(
                lead.phone and await repository.dnc_entry(connection, lead.phone)
            )
        if agent_attempts is None and agent_id is not None:
            agent_attempts = await repository.agent_attempts(
                connection, lead.lead_id, agent_id
            )
        effect = EFFECTS[disposition]
        pool_at_call = lead.pool
        finished = lead.state in repository.TERMINAL_STATES
        if not finished:
            lead.call_target = rules.call_target  # the pool's rule as it is now
        lead.attempts += 1
        attempt = lead.attempts
        lead.last_call_at = max(called_at, lead.last_call_at or called_at)
        lead.recent_calls = recent([*lead.recent_calls, called_at], now)
        _clear_lease(lead)
        lead.callback_at = lead.reserved_agent = lead.reserved_until = None
        lead.updated_at = now
        phone_calls = recent(
            [*(number["recent_calls"] if number else []), called_at], now
        )
        caused.emit(
            CallLogged(
                lead_id=lead.lead_id,
                call_id=(call_id := uuid.uuid4()),
                pool=pool_at_call,
                source=lead.source,
                agent_id=agent_id,
                team=team,
                attempt=lead.attempts,
                call_target=lead.call_target,
                disposition=disposition,
                duration_seconds=duration,
                called_at=called_at,
                via_queue=lease_id is not None,
            ),
            lead.lead_id,
            now,
        )
        exclude_reason, declined_by_all = None, False
        if effect.ends is None and not finished and lead.attempts < lead.call_target:
            exclude_reason, declined_by_all = await self._exclusion(
                connection, lead, rules, effect.exclude_agent, agent_id, agent_attempts
            )
        if finished:
            # A call logged on a finished lead counts and leaves it finished;
            # only an opt-out still has its effect (the number is listed).
            if disposition == "dnc":
                _emit_opted_out(lead, caused, now)
        elif effect.ends is not None:
            self._end(lead, effect.ends, disposition, agent_id, caused, now)
        elif lead.attempts >= lead.call_target:
            await self._exhaust(connection, lead, caused, now)
            if listed and lead.state in QUEUED:
                _hold_for_dnc(lead, now)  # moved on to exhausted_to, not callable
        elif declined_by_all:
            _end_exhausted(lead, caused, now, "declined_by_all")
        else:
            if disposition == "callback":
                assert callback_at is not None
                lead.callback_at = callback_at
                if exclude_reason is None:
                    lead.reserved_agent = agent_id
                    lead.reserved_until = callback_at + dt.timedelta(
                        seconds=rules.callback_hold_seconds
                    )
            if exclude_reason is not None:
                caused.emit(
                    LeadRecycled(
                        lead_id=lead.lead_id,
                        pool=lead.pool,
                        from_agent_id=agent_id,
                        reason=exclude_reason,
                        recycled_at=now,
                    ),
                    lead.lead_id,
                    now,
                )
                if rules.recycle_to and rules.recycle_to != lead.pool:
                    await self._move(connection, lead, rules.recycle_to, caused, now)
            if listed:
                _hold_for_dnc(lead, now)
            else:
                await self._schedule(
                    connection,
                    lead,
                    caused,
                    now,
                    phone_calls=phone_calls,
                    number=_after_call(number),
                )
        blocked = self._phone_blocked_until(lead, rules, phone_calls, number, now)
        await repository.record_call(
            connection,
            lead,
            CallRecord(
                call_id=call_id,
                lease_id=lease_id,
                agent_id=agent_id,
                pool=pool_at_call,
                attempt=attempt,
                disposition=disposition,
                duration_seconds=duration,
                called_at=called_at,
                via_queue=lease_id is not None,
                callback_at=callback_at,
                exclude_reason=exclude_reason,
                phone_recent_calls=phone_calls,
                phone_blocked_until=blocked,
                list_on_dnc=disposition == "dnc",
                note=note,
            ),
            phone_number=lead.phone,
            now=now,
            events=caused.events,
        )
        caused.after_commit.append(
            lambda: OUTCOMES.labels(pool_at_call, disposition).inc()
        )
        return _lead_summary(lead)

    def _phone_blocked_until(
        self,
        lead: Lead,
        rules: PoolRules,
        phone_calls: list[dt.datetime],
        number: PhoneRow | None,
        now: dt.datetime,
    ) -> dt.datetime | None:
        """Until when the law's caps keep every lead with this number from
        being leased. Pool caps are a pool's own: each lead with the number is
        re-planned against its pool's caps and the number's history."""
        if number is None:
            return None
        _, legal_caps, _ = rules_for(lead.country, lead.region)
        zone = (lead.timezones or [rules.timezone])[0]
        free = cap_free_at(now, phone_calls, legal_caps.rolling(), zone)
        return free if free is not None and free > now else None

    async def _exclusion(
        self,
        connection: Connection,
        lead: Lead,
        rules: PoolRules,
        not_interested: bool,
        agent_id: str | None,
        made: int | None,
    ) -> tuple[str | None, bool]:
        """Whether the calling agent stops getting the lead (and why), and
        whether every agent of the pool has now heard "not interested"."""
        reason = _recycle_reason(rules, not_interested, agent_id, made or 0)
        if reason is None or agent_id is None:
            return reason, False
        if await self._others_may_call(connection, lead, rules, agent_id):
            return reason, False
        # Nobody else may take it. Attempt limits give way, so a small team
        # keeps calling on the cadence instead of stranding the lead; "not
        # interested" is kept, and when every agent has heard it the lead ends.
        await repository.lift_exclusions(
            connection, lead.lead_id, reason="agent_attempt_limit"
        )
        if reason == "agent_attempt_limit":
            return None, False
        if await self._others_may_call(connection, lead, rules, agent_id):
            return reason, False
        return reason, True

    async def _others_may_call(
        self, connection: Connection, lead: Lead, rules: PoolRules, agent_id: str
    ) -> bool:
        if rules.recycle_to and rules.recycle_to != lead.pool:
            return True
        return await repository.other_agents_may_call(
            connection, lead.pool, lead.lead_id, agent_id
        )

    def _end(
        self,
        lead: Lead,
        state: str,
        disposition: str,
        agent_id: str | None,
        caused: Caused,
        now: dt.datetime,
    ) -> None:
        lead.state, lead.ended_at, lead.wait_reason = state, now, None
        if state == "converted":
            caused.emit(
                LeadConverted(
                    lead_id=lead.lead_id,
                    pool=lead.pool,
                    agent_id=agent_id,
                    attempt=lead.attempts,
                    disposition=disposition,
                    converted_at=now,
                ),
                lead.lead_id,
                now,
            )
        elif state == "invalid":
            caused.emit(
                LeadInvalid(
                    lead_id=lead.lead_id, reason=disposition, invalidated_at=now
                ),
                lead.lead_id,
                now,
            )
        elif state == "opted_out":
            _emit_opted_out(lead, caused, now)

    async def _exhaust(
        self,
        connection: Connection,
        lead: Lead,
        caused: Caused,
        now: dt.datetime,
        *,
        reason: str | None = None,
    ) -> None:
        """The lead reached its pool's target: it ends, with ``reason`` kept as
        its wait reason, or starts a new round in the pool's exhausted_to."""
        rules = await self._pool_rules(connection, lead.pool)
        if not (rules.exhausted_to and rules.exhausted_to != lead.pool):
            _end_exhausted(lead, caused, now, reason)
            return
        # Another round in another pool: its own target, counted afresh.
        _emit_exhausted(lead, caused, now)
        lead.attempts = 0
        await self._move(connection, lead, rules.exhausted_to, caused, now)
        await self._schedule(connection, lead, caused, now)

    async def _move(
        self,
        connection: Connection,
        lead: Lead,
        pool_name: str,
        caused: Caused,
        now: dt.datetime,
    ) -> None:
        rules = await self._pool_rules(connection, pool_name)
        lead.pool = pool_name
        # The new pool's cadence counts from the move, like a new arrival's.
        lead.queued_at = now
        lead.call_target = rules.call_target
        lead.weight = rules.weight_of(lead.source)
        caused.emit(
            LeadQueued(
                lead_id=lead.lead_id,
                pool=pool_name,
                source=lead.source,
                campaign=lead.campaign,
                call_target=lead.call_target,
                cadence_seconds=list(rules.cadence),
                attempts=lead.attempts,
                nurture_while_calling=rules.nurture_while_calling,
                due_at=now,
                queued_at=now,
            ),
            lead.lead_id,
            now,
        )

    async def _schedule(
        self,
        connection: Connection,
        lead: Lead,
        caused: Caused,
        now: dt.datetime,
        *,
        phone_calls: Sequence[dt.datetime] | None = None,
        number: PhoneRow | None = None,
    ) -> None:
        """Re-plans a queued lead; may exhaust it (lifetime cap reached)."""
        rules = await self._pool_rules(connection, lead.pool)
        lead.call_target = rules.call_target
        if lead.attempts >= lead.call_target:
            # The pool's target is below what this lead has had (lowered, or a
            # recycle into a pool with a smaller target): it is exhausted
            # here, and goes on to the pool's exhausted_to if there is one.
            await self._exhaust(connection, lead, caused, now, reason="call_target")
            return
        if phone_calls is None:
            if number is None and lead.phone:
                number = await repository.phone(connection, lead.phone)
            phone_calls = number["recent_calls"] if number else []
        facts = _facts(lead, phone_calls, number)
        planned = plan(facts, rules, now)
        if planned.state == "exhausted":
            lead.attempts = max(lead.attempts, 0)
            _end_exhausted(lead, caused, now, "lifetime_cap")
            return
        lead.state = planned.state
        lead.due_at, lead.closes_at = planned.due_at, planned.closes_at
        lead.wait_reason = planned.wait_reason
        lead.priority_class = planned.priority_class
        lead.planned_at, lead.planned_slot = planned.planned_at, planned.planned_slot
        lead.weight = rules.weight_of(lead.source)
        if lead.reserved_agent is not None:
            # The hold counts from when the callback can actually be made.
            lead.reserved_until = planned.due_at + dt.timedelta(
                seconds=rules.callback_hold_seconds
            )
        lead.updated_at = now

    # --- releases and expiry ----------------------------------------------

    async def release(self, lease_id: uuid.UUID) -> dict[str, Any]:
        now = self._clock.now()
        caused = Caused()
        async with self._pool.acquire() as connection, connection.transaction():
            lead = await repository.lead_by_lease(connection, lease_id)
            if lead is None:
                await self._refuse_lease(connection, lease_id)
            assert lead is not None
            assert lead.leased_agent is not None
            if _required(lead.lease_expires_at) <= now:
                raise LeaseExpired(
                    f"lease {lease_id} expired; the lead already went back to the pool",
                    lead_id=str(lead.lead_id),
                )
            agent_id = lead.leased_agent
            await self._return_to_pool(
                connection, lead, caused, now, reason="released", agent_id=agent_id
            )
            await repository.count_release(
                connection, agent_id, "releases", "available", now
            )
            await self._write_events(connection, caused, now)
        pool_name = lead.pool
        caused.after_commit.append(lambda: RELEASES.labels(pool_name).inc())
        self._committed(caused)
        return _lead_summary(lead)

    async def _return_to_pool(
        self,
        connection: Connection,
        lead: Lead,
        caused: Caused,
        now: dt.datetime,
        *,
        reason: str,
        agent_id: str,
    ) -> None:
        lease_id = _required(lead.lease_id)
        _clear_lease(lead)
        lead.state = "ready" if lead.closes_at > now else "waiting"
        lead.updated_at = now
        await repository.save_lead(connection, lead)
        await repository.end_lease(
            connection,
            lease_id,
            reason="released" if reason == "released" else "expired",
            now=now,
        )
        caused.emit(
            LeadRecycled(
                lead_id=lead.lead_id,
                pool=lead.pool,
                from_agent_id=agent_id,
                reason=reason,
                recycled_at=now,
            ),
            lead.lead_id,
            now,
        )

    # --- the scheduler ----------------------------------------------------

    async def maybe_tick(self) -> None:
        """Runs a scheduler pass if the last one is older than ``tick_seconds``
        by the clock (so a test that moves the clock sees its effect)."""
        if not self._tick_due():
            if self._tick_lock.locked():
                # A pass for this very moment is running: wait for what it
                # promotes or reaps, rather than lease from before it.
                async with self._tick_lock:
                    pass
            return
        async with self._tick_lock:
            if self._tick_due():
                await self.tick()

    def _tick_due(self) -> bool:
        if self._last_tick is None:
            return True
        elapsed = (self._clock.now() - self._last_tick).total_seconds()
        return elapsed >= self._settings.tick_seconds

    async def tick(self) -> dict[str, int]:
        """Promote due leads, re-plan closed windows, reap expired leases."""
        now = self._clock.now()
        self._last_tick = now
        await self.load_rules()
        batch = self._settings.replan_batch
        counts = {"promoted": 0, "replanned": 0, "reaped": 0}
        async with self._pool.acquire() as connection:
            while True:
                async with connection.transaction():
                    promoted = await repository.promote_due(connection, now, batch)
                counts["promoted"] += promoted
                if promoted < batch:
                    break
                await asyncio.sleep(0)  # let requests in between batches
            while True:
                replanned = await self._replan_closed(connection, now, batch)
                counts["replanned"] += replanned
                if replanned < batch:
                    break
                await asyncio.sleep(0)  # let requests in between batches
            while True:
                reaped = await self._reap(connection, now, batch)
                counts["reaped"] += reaped
                if reaped < batch:
                    break
                await asyncio.sleep(0)  # let requests in between batches
            counts["stale"] = await self._lapse_reservations(connection, now, batch)
        return counts

    async def _lapse_reservations(
        self, connection: Connection, now: dt.datetime, batch: int
    ) -> int:
        """A callback its agent left unworked past the hold goes to everyone
        (``lead.recycled`` with reason ``stale``)."""
        caused = Caused()
        async with connection.transaction():
            lapsed = await repository.lapse_reservations(connection, now, batch)
            for row in lapsed:
                caused.emit(
                    LeadRecycled(
                        lead_id=row["lead_id"],
                        pool=row["pool"],
                        from_agent_id=row["agent_id"],
                        reason="stale",
                        recycled_at=now,
                    ),
                    row["lead_id"],
                    now,
                )
            await self._write_events(connection, caused, now)
        self._committed(caused)
        return len(lapsed)

    async def _replan_closed(
        self, connection: Connection, now: dt.datetime, batch: int
    ) -> int:
        caused = Caused()
        async with connection.transaction():
            leads = await repository.closed_windows(connection, now, batch)
            numbers = {
                row["phone"]: row
                for row in await repository.phones(
                    connection, [lead.phone for lead in leads if lead.phone]
                )
            }
            for lead in leads:
                if lead.wait_reason == "dnc":
                    continue
                try:
                    await self._schedule(
                        connection,
                        lead,
                        caused,
                        now,
                        number=numbers.get(lead.phone) if lead.phone else None,
                        phone_calls=(
                            numbers[lead.phone]["recent_calls"]
                            if lead.phone in numbers
                            else []
                        ),
                    )
                except Exception:  # one bad row must not stop the pass (logged)
                    logger.exception("lead.replan_failed lead_id=%s", lead.lead_id)
                    lead.state, lead.wait_reason = "not_callable", "planning_failed"
                    lead.ended_at = now
            await repository.save_leads(connection, leads)
            await self._write_events(connection, caused, now)
        self._committed(caused)
        return len(leads)

    async def _reap(self, connection: Connection, now: dt.datetime, batch: int) -> int:
        caused = Caused()
        async with connection.transaction():
            leads = await repository.expired_leases(connection, now, batch)
            for lead in leads:
                agent_id = _required(lead.leased_agent)
                pool_name = lead.pool
                await self._return_to_pool(
                    connection,
                    lead,
                    caused,
                    now,
                    reason="lease_expired",
                    agent_id=agent_id,
                )
                # A seat that let its lease run out is probably not there:
                # it gets no more leads until its dialer says it is available.
                await repository.count_release(
                    connection, agent_id, "expired_leases", "away", now
                )
                caused.after_commit.append(
                    lambda pool_name=pool_name: REAPED.labels(pool_name).inc()  # type: ignore[misc]
                )
                logger.info(
                    "lease.expired lead_id=%s agent_id=%s", lead.lead_id, agent_id
                )
            await self._write_events(connection, caused, now)
        self._committed(caused)
        return len(leads)

    async def run_scheduler(self) -> None:
        """The background loop; failures are logged and tried again."""
        while True:
            try:
                await self.maybe_tick()
            except Exception as error:  # noqa: BLE001 - the next pass retries
                logger.warning("scheduler.failed error=%r", error)
            await asyncio.sleep(self._settings.tick_seconds)

    async def refresh_gauges(self) -> None:
        now = self._clock.now()
        async with self._pool.acquire() as connection:
            rows = await repository.depth_by_pool(connection, now)
        counts: dict[tuple[str, str], int] = {}
        due: dict[str, int] = {}
        for row in rows:
            counts[(row["pool"], row["state"])] = row["leads"]
            due[row["pool"]] = due.get(row["pool"], 0) + row["due_now"]
        for name in set(self._rules) | set(due):
            for state in repository.STATES:
                LEADS.labels(name, state).set(counts.get((name, state), 0))
            DUE_NOW.labels(name).set(due.get(name, 0))

    async def run_gauges(self) -> None:
        while True:
            try:
                await self.refresh_gauges()
            except Exception as error:  # noqa: BLE001 - the next round retries
                logger.warning("queue.gauges_failed error=%r", error)
            await asyncio.sleep(self._settings.gauge_seconds)

    # --- do-not-call ------------------------------------------------------

    async def list_dnc(
        self, numbers: Sequence[str], reason: str, *, field_name: str | None = None
    ) -> tuple[int, int]:
        """Puts numbers on the DNC list; returns how many distinct numbers were
        new and how many were listed already (counted after normalizing, so
        two spellings of one number are one). A bad number is named
        ``phones[i]``, or ``field_name`` when one is given."""
        phones = [
            _e164(number, field_name or f"phones[{index}]")
            for index, number in enumerate(numbers)
        ]
        now = self._clock.now()
        caused = Caused()
        async with self._pool.acquire() as connection, connection.transaction():
            added = await repository.list_phones(connection, phones, reason, now)
            await self._hold_listed(connection, added, now)
            for number in added:
                caused.emit(
                    DncUpdated(phone=number, listed=True, updated_at=now), number, now
                )
            await self._write_events(connection, caused, now)
        self._committed(caused)
        return len(added), len(set(phones)) - len(added)

    async def unlist_dnc(self, number: str) -> None:
        phone = _e164(number, "phone")
        now = self._clock.now()
        caused = Caused()
        async with self._pool.acquire() as connection, connection.transaction():
            if not await repository.unlist_phone(connection, phone):
                raise NotFound(f"{phone} is not on the do-not-call list")
            await self._release_listed(connection, phone, caused, now)
            caused.emit(
                DncUpdated(phone=phone, listed=False, updated_at=now), phone, now
            )
            await self._write_events(connection, caused, now)
        self._committed(caused)

    async def dnc_entry(self, number: str) -> dict[str, Any]:
        phone = _e164(number, "phone")
        async with self._pool.acquire() as connection:
            row = await repository.dnc_entry(connection, phone)
        if row is None:
            raise NotFound(f"{phone} is not on the do-not-call list")
        return dict(row)

    async def _hold_listed(
        self, connection: Connection, numbers: Sequence[str], now: dt.datetime
    ) -> None:
        await repository.hold_listed(connection, numbers, now)

    async def _release_listed(
        self, connection: Connection, number: str, caused: Caused, now: dt.datetime
    ) -> None:
        """Leads held while their number was listed are planned again."""
        for lead in await repository.leads_with_phone(connection, number, QUEUED):
            if lead.wait_reason == "dnc":
                lead.wait_reason = None
                await self._schedule(connection, lead, caused, now)
                await repository.save_lead(connection, lead)

    # --- events from other services ---------------------------------------

    async def apply_events(
        self, connection: Connection, envelopes: Sequence[Envelope]
    ) -> None:
        """Consumer handler: runs inside the consumer's transaction."""
        now = self._clock.now()
        caused = Caused()
        for envelope in envelopes:
            data = envelope.data
            if isinstance(data, LeadReceived):
                await self._enqueue(connection, data, caused, now)
            elif isinstance(data, LeadDuplicate) and data.action == "merged":
                await self._merge(connection, data.lead, caused, now)
            elif isinstance(data, LeadOptedOut) and data.channel in ("call", "all"):
                await self._opt_out(connection, data, now)
            elif isinstance(data, DncUpdated) and envelope.source != EVENT_SOURCE:
                if data.listed:
                    added = await repository.list_phones(
                        connection, [data.phone], "dnc.updated", now
                    )
                    await self._hold_listed(connection, added, now)
                elif await repository.unlist_phone(connection, data.phone):
                    await self._release_listed(connection, data.phone, caused, now)
        await self._write_events(connection, caused, now)
        # The consumer commits; the relay picks the events up on its next pass.
        self._on_commit()

    async def _enqueue(
        self,
        connection: Connection,
        snapshot: LeadSnapshot,
        caused: Caused,
        now: dt.datetime,
    ) -> None:
        pool_name = await repository.route_for(
            connection, snapshot.source, snapshot.campaign
        )
        rules = await self._pool_rules(connection, pool_name)
        lead = Lead(
            lead_id=snapshot.lead_id,
            pool=pool_name,
            source=snapshot.source,
            campaign=snapshot.campaign,
            first_name=snapshot.first_name,
            last_name=snapshot.last_name,
            phone=snapshot.phone,
            email=snapshot.email,
            country=snapshot.country,
            region=snapshot.region,
            timezones=list(snapshot.timezones)
            or ([snapshot.timezone] if snapshot.timezone else []),
            received_at=snapshot.received_at,
            queued_at=now,
            state="waiting",
            attempts=0,
            call_target=rules.call_target,
            last_call_at=None,
            recent_calls=[],
            due_at=now,
            closes_at=now,
            wait_reason=None,
            priority_class=NEVER_CALLED,
            planned_at=now,
            planned_slot=slot_of(now),
            weight=rules.weight_of(snapshot.source),
            callback_at=None,
            reserved_agent=None,
            reserved_until=None,
            lease_id=None,
            leased_agent=None,
            lease_expires_at=None,
            ended_at=None,
            updated_at=now,
        )
        reason = _not_callable_reason(snapshot)
        if reason is not None:
            lead.state, lead.wait_reason, lead.ended_at = "not_callable", reason, now
        else:
            if snapshot.dnc and snapshot.phone:
                await repository.list_phones(
                    connection, [snapshot.phone], "intake", now
                )
            # The number may already have calls (another lead, another pool):
            # its caps count them, so the plan reads them from its row.
            await self._schedule(connection, lead, caused, now)
            if lead.phone and await repository.dnc_entry(connection, lead.phone):
                lead.state, lead.wait_reason = "waiting", "dnc"
                lead.due_at = lead.closes_at = FOREVER
        if not await repository.insert_lead(connection, lead):
            return  # known already: a redelivered or replayed event
        if lead.state in QUEUED:
            caused.emit(
                LeadQueued(
                    lead_id=lead.lead_id,
                    pool=pool_name,
                    source=lead.source,
                    campaign=lead.campaign,
                    call_target=lead.call_target,
                    cadence_seconds=list(rules.cadence),
                    nurture_while_calling=rules.nurture_while_calling,
                    due_at=lead.due_at,
                    queued_at=now,
                ),
                lead.lead_id,
                now,
            )
        logger.debug(
            "lead.queued lead_id=%s pool=%s state=%s",
            lead.lead_id,
            pool_name,
            lead.state,
        )

    async def _merge(
        self,
        connection: Connection,
        snapshot: LeadSnapshot,
        caused: Caused,
        now: dt.datetime,
    ) -> None:
        lead = await repository.lead(connection, snapshot.lead_id, for_update=True)
        if lead is None:
            return
        lead.first_name, lead.last_name = snapshot.first_name, snapshot.last_name
        lead.email, lead.country, lead.region = (
            snapshot.email,
            snapshot.country,
            snapshot.region,
        )
        lead.timezones = list(snapshot.timezones) or lead.timezones
        if snapshot.phone and snapshot.phone != lead.phone:
            lead.phone = snapshot.phone
            await connection.execute(
                "INSERT INTO phones (phone) VALUES ($1) ON CONFLICT DO NOTHING",
                snapshot.phone,
            )
        if lead.state in QUEUED and lead.wait_reason != "dnc":
            await self._schedule(connection, lead, caused, now)
        lead.updated_at = now
        await repository.save_lead(connection, lead)

    async def _opt_out(
        self, connection: Connection, data: LeadOptedOut, now: dt.datetime
    ) -> None:
        lead = await repository.lead(connection, data.lead_id, for_update=True)
        if data.phone:
            await repository.list_phones(connection, [data.phone], "opted out", now)
            await self._hold_listed(connection, [data.phone], now)
        if lead is None or lead.state in repository.TERMINAL_STATES:
            return
        if lead.lease_id is not None and lead.leased_agent is not None:
            # The call in progress ends with the lease; the agent is free.
            await repository.end_lease(
                connection, lead.lease_id, reason="withdrawn", now=now
            )
            await repository.set_agent_status(
                connection, lead.leased_agent, "available", now
            )
        _clear_lease(lead)
        lead.state, lead.ended_at, lead.wait_reason = "opted_out", now, None
        lead.updated_at = now
        await repository.save_lead(connection, lead)

    # --- reads ------------------------------------------------------------

    async def lead_view(self, lead_id: uuid.UUID) -> dict[str, Any]:
        async with self._pool.acquire() as connection:
            lead = await repository.lead(connection, lead_id)
            if lead is None:
                raise UnknownLead(f"lead {lead_id} is not in the queue")
            calls, leases = await repository.history(connection, lead_id)
        summary = _lead_summary(lead)
        summary["history"] = {
            "calls": [dict(row) for row in calls],
            "leases": [dict(row) for row in leases],
        }
        return summary

    async def eligibility(self, lead_id: uuid.UUID) -> dict[str, Any]:
        """Why the lead is, or is not, being served right now."""
        now = self._clock.now()
        async with self._pool.acquire() as connection:
            lead = await repository.lead(connection, lead_id)
            if lead is None:
                raise UnknownLead(f"lead {lead_id} is not in the queue")
            rules = await self._pool_rules(connection, lead.pool)
            number = (
                await repository.phone(connection, lead.phone) if lead.phone else None
            )
            listed = (
                await repository.dnc_entry(connection, lead.phone)
                if lead.phone
                else None
            )
            excluded = await repository.excluded_agents(connection, lead_id)
        reasons = _blocking_reasons(lead, rules, number, listed, now)
        return {
            "lead_id": lead.lead_id,
            "pool": lead.pool,
            "state": lead.state,
            "eligible": not reasons,
            "reasons": reasons,
            "excluded_agents": excluded,
            "at": now,
        }

    # --- helpers ----------------------------------------------------------

    async def _write_events(
        self, connection: Connection, caused: Caused, now: dt.datetime
    ) -> None:
        await add_events(connection, caused.events, now_ts=now)

    def _committed(self, caused: Caused) -> None:
        if caused.events:
            self._on_commit()
        for count in caused.after_commit:
            count()


def _required(value: Any) -> Any:
    assert value is not None
    return value


def _emit_exhausted(lead: Lead, caused: Caused, now: dt.datetime) -> None:
    caused.emit(
        LeadExhausted(
            lead_id=lead.lead_id,
            pool=lead.pool,
            attempts=lead.attempts,
            call_target=lead.call_target,
            exhausted_at=now,
        ),
        lead.lead_id,
        now,
    )


def _end_exhausted(
    lead: Lead, caused: Caused, now: dt.datetime, reason: str | None
) -> None:
    """The lead ends exhausted in its pool; ``reason`` is kept as why."""
    _emit_exhausted(lead, caused, now)
    lead.state, lead.ended_at, lead.wait_reason = "exhausted", now, reason


def _emit_opted_out(lead: Lead, caused: Caused, now: dt.datetime) -> None:
    caused.emit(
        LeadOptedOut(
            lead_id=lead.lead_id,
            phone=lead.phone,
            email=lead.email,
            channel="all",
            opted_out_at=now,
        ),
        lead.lead_id,
        now,
    )


def _recycle_reason(
    rules: PoolRules, not_interested: bool, agent_id: str | None, made: int
) -> str | None:
    """Why the calling agent should not get the lead again, if so."""
    if agent_id is None:
        return None
    if not_interested:
        return "not_interested"
    limit = rules.agent_attempt_limit
    if limit is not None and made + 1 >= limit:
        return "agent_attempt_limit"
    return None


def _hold_for_dnc(lead: Lead, now: dt.datetime) -> None:
    lead.state, lead.wait_reason = "waiting", "dnc"
    lead.due_at = lead.closes_at = FOREVER
    lead.updated_at = now


def _after_call(number: PhoneRow | None) -> dict[str, Any] | None:
    """The number's row as it will be once the call just made is recorded."""
    if number is None:
        return None
    return {**dict(number), "lifetime_calls": number["lifetime_calls"] + 1}


#: Rules whose change moves a queued lead's next call.
_PLANNING_RULES = (
    "call_target",
    "cadence",
    "calling_hours",
    "timezone",
    "source_weights",
    "caps",
)


def _plans_change(before: PoolRules, after: PoolRules) -> bool:
    return any(
        getattr(before, name) != getattr(after, name) for name in _PLANNING_RULES
    )


def _check_hours_are_legal(rules: PoolRules) -> None:
    """Pool hours that never meet the federal 08:00-21:00 would end every lead
    as not callable; refuse them instead."""
    legal = FEDERAL_HOURS[0]
    for window in rules.calling_hours.as_calling_hours():
        if window.start < legal.end and window.end > legal.start:
            return
    raise _invalid(
        "calling_hours",
        "calling hours never meet the federal 08:00-21:00 window, so no lead "
        "could ever be called",
    )


def _clear_lease(lead: Lead) -> None:
    lead.lease_id = lead.leased_agent = lead.lease_expires_at = None


def _facts(
    lead: Lead, phone_calls: Sequence[dt.datetime], number: PhoneRow | None
) -> LeadFacts:
    return LeadFacts(
        attempts=lead.attempts,
        queued_at=lead.queued_at,
        last_call_at=lead.last_call_at,
        recent_calls=lead.recent_calls,
        phone_calls=phone_calls,
        phone_lifetime_calls=number["lifetime_calls"] if number else 0,
        timezones=lead.timezones,
        country=lead.country,
        region=lead.region,
        callback_at=lead.callback_at,
    )


def _not_callable_reason(snapshot: LeadSnapshot) -> str | None:
    if not snapshot.phone:
        return "no_phone"
    if not snapshot.consent.call:
        return "no_call_consent"
    return None


def _e164(number: str, field_name: str) -> str:
    try:
        parsed = phonenumbers.parse(number, None if number.startswith("+") else "US")
    except phonenumbers.NumberParseException:
        raise _invalid(field_name, f"{number!r} is not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise _invalid(field_name, f"{number!r} is not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


#: Every status an agent can be in, in the order the floor lists them.
AGENT_STATUSES: tuple[AgentStatus, ...] = get_args(AgentStatus)


def _depth(*, queued: int, due_now: int, leased: int) -> dict[str, int]:
    """A pool's depth as the stats and the floor both report it: queued is
    waiting + ready, due now the ready leads whose calling window is open."""
    return {"queued": queued, "due_now": due_now, "leased": leased}


def _pool_out(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "name": row["name"],
        "rules": PoolRules.model_validate(row["rules"]).model_dump(mode="json"),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _minutes(delta: dt.timedelta) -> int:
    return int(delta.total_seconds() // 60)


def _why_chosen(lead: Lead, now: dt.datetime) -> dict[str, Any]:
    """The explanation shown with a lease (agents trust a queue that says why)."""
    if lead.priority_class == NEVER_CALLED:
        waited = now - lead.queued_at
        return {
            "code": "new_lead",
            "message": "new lead, never called, waiting "
            f"{int(waited.total_seconds())} s",
            "waiting_seconds": waited.total_seconds(),
        }
    if lead.priority_class == CALLBACK and lead.callback_at is not None:
        return {
            "code": "callback_due",
            "message": f"callback asked for {lead.callback_at.isoformat()}",
            "callback_at": lead.callback_at,
        }
    behind = now - lead.planned_at
    if behind >= dt.timedelta(minutes=1):
        return {
            "code": "behind_cadence",
            "message": f"behind cadence by {_minutes(behind)} minutes "
            f"(attempt {lead.attempts + 1} was planned for "
            f"{lead.planned_at.isoformat()})",
            "behind_seconds": behind.total_seconds(),
        }
    return {
        "code": "cadence_due",
        "message": f"attempt {lead.attempts + 1} is due by cadence",
        "behind_seconds": max(behind.total_seconds(), 0.0),
    }


def _lead_summary(lead: Lead) -> dict[str, Any]:
    queued = lead.state in QUEUED
    return {
        "lead_id": lead.lead_id,
        "pool": lead.pool,
        "state": lead.state,
        "source": lead.source,
        "campaign": lead.campaign,
        "attempts": lead.attempts,
        "call_target": lead.call_target,
        "next_due_at": lead.due_at if queued and lead.due_at < FOREVER else None,
        "wait_reason": lead.wait_reason,
        "callback_at": lead.callback_at,
        "lease": (
            {
                "lease_id": lead.lease_id,
                "agent_id": lead.leased_agent,
                "expires_at": lead.lease_expires_at,
            }
            if lead.lease_id
            else None
        ),
        "received_at": lead.received_at,
        "queued_at": lead.queued_at,
        "last_call_at": lead.last_call_at,
        "ended_at": lead.ended_at,
    }


def _blocking_reasons(
    lead: Lead,
    rules: PoolRules,
    number: PhoneRow | None,
    listed: asyncpg.Record | None,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """Every reason the lead cannot be leased now, each with when it ends."""
    if lead.state in repository.TERMINAL_STATES:
        return [
            {
                "code": lead.state,
                "message": f"the lead is {lead.state.replace('_', ' ')}"
                + (f" ({lead.wait_reason})" if lead.wait_reason else ""),
                "until": None,
            }
        ]
    reasons: list[dict[str, Any]] = []
    if listed is not None:
        reasons.append(
            {
                "code": "on_dnc",
                "message": f"{lead.phone} is on the do-not-call list "
                f"({listed['reason']})",
                "until": None,
            }
        )
    if lead.state == "leased":
        reasons.append(
            {
                "code": "leased",
                "message": f"leased to agent {lead.leased_agent}",
                "agent_id": lead.leased_agent,
                "until": lead.lease_expires_at,
            }
        )
        return reasons
    facts = _facts(lead, number["recent_calls"] if number else [], number)
    due = cadence_due(facts, rules)
    if due > now:
        reasons.append(
            {
                "code": "cadence_gap",
                "message": f"attempt {lead.attempts + 1} may not be made before "
                f"{due.isoformat()} (cadence)",
                "until": due,
            }
        )
    if lead.callback_at is not None and lead.callback_at > now:
        reasons.append(
            {
                "code": "callback_scheduled",
                "message": f"callback asked for {lead.callback_at.isoformat()}",
                "until": lead.callback_at,
            }
        )
    if (
        lead.reserved_agent
        and lead.reserved_until
        and lead.reserved_until > now
        and (lead.callback_at is None or lead.callback_at <= now)
    ):
        reasons.append(
            {
                "code": "reserved",
                "message": f"callback reserved for agent {lead.reserved_agent}",
                "agent_id": lead.reserved_agent,
                "until": lead.reserved_until,
            }
        )
    legal_hours, legal_caps, _ = rules_for(lead.country, lead.region)
    caps = rules.caps.as_frequency_caps().stricter(legal_caps)
    zones = zones_of(facts, rules)
    for calls, whose in ((lead.recent_calls, "lead"), (facts.phone_calls, "number")):
        free = cap_free_at(now, calls, caps.rolling(), zones[0])
        if free is not None and free > now:
            reasons.append(
                {
                    "code": "cap_reached",
                    "message": f"the {whose}'s call cap is reached",
                    "until": free,
                }
            )
    if number is not None and number["leased_until"] and number["leased_until"] > now:
        reasons.append(
            {
                "code": "number_on_lease",
                "message": "another lead with this number is on an open lease",
                "until": number["leased_until"],
            }
        )
    window = callable_window(
        now, zones, rules.calling_hours.as_calling_hours(), legal_hours
    )
    if window is None:
        reasons.append(
            {
                "code": "no_calling_window",
                "message": "no calling window opens in every zone "
                f"({', '.join(zones)}) within two weeks",
                "until": None,
            }
        )
    elif window[0] > now:
        reasons.append(
            {
                "code": "outside_calling_hours",
                "message": f"outside calling hours in {', '.join(zones)}",
                "until": window[0],
            }
        )
    if not reasons and lead.state == "waiting":
        reasons.append(
            {
                "code": "scheduler_pending",
                "message": "due; the scheduler's next pass makes it ready",
                "until": lead.due_at,
            }
        )
    return reasons
