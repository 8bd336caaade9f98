-- The queue's tables: pools and their rules, routing, agents, the leads being
-- dialed, their leases and calls, and the do-not-call list.

CREATE TABLE pools (
    name text PRIMARY KEY,
    -- PoolRules as JSON; defaults are filled in by the service, so an old row
    -- gains new rules with their defaults.
    rules jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO pools (name) VALUES ('default');

-- One row: where a lead goes when no route matches it.
CREATE TABLE routing (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    default_pool text NOT NULL REFERENCES pools (name)
);

INSERT INTO routing (default_pool) VALUES ('default');

-- campaign '' matches any campaign of the source; source '*' any source.
CREATE TABLE routes (
    source text NOT NULL,
    campaign text NOT NULL DEFAULT '',
    pool text NOT NULL REFERENCES pools (name),
    PRIMARY KEY (source, campaign)
);

CREATE TABLE agents (
    agent_id text PRIMARY KEY,
    pools text[] NOT NULL,
    team text,
    status text NOT NULL DEFAULT 'offline'
        CHECK (status IN ('available', 'busy', 'away', 'offline')),
    status_at timestamptz NOT NULL,
    leases integer NOT NULL DEFAULT 0,
    releases integer NOT NULL DEFAULT 0,
    expired_leases integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

-- The lead as the queue works it. A lead is in exactly one state:
--   waiting      not callable yet (cadence gap, calling hours, cap, callback)
--   ready        callable now, until closes_at; what next-lead draws from
--   leased       handed to one agent until lease_expires_at
--   converted / exhausted / invalid / opted_out   finished for good
--   not_callable no phone, no call consent, or no calling window ever opens
-- The row is updated in place and often, hence the low fillfactor (room for
-- HOT updates) and eager autovacuum: dead tuples slow every lease.
CREATE TABLE leads (
    lead_id uuid PRIMARY KEY,
    pool text NOT NULL REFERENCES pools (name),
    source text,
    campaign text,
    first_name text,
    last_name text,
    phone text,
    email text,
    country text,
    region text,
    timezones text[] NOT NULL,
    received_at timestamptz NOT NULL,
    queued_at timestamptz NOT NULL,
    state text NOT NULL CHECK (state IN (
        'waiting', 'ready', 'leased', 'converted', 'exhausted', 'invalid',
        'opted_out', 'not_callable'
    )),
    attempts integer NOT NULL DEFAULT 0,
    call_target integer NOT NULL,
    last_call_at timestamptz,
    -- Times of this lead's recent calls, for the per-day and 24-hour caps.
    recent_calls timestamptz[] NOT NULL DEFAULT '{}',
    -- Scheduling. due_at..closes_at is the calling window the lead is planned
    -- into; a ready lead whose window has closed is re-planned by the
    -- scheduler, and next-lead never serves it meanwhile.
    due_at timestamptz NOT NULL,
    closes_at timestamptz NOT NULL,
    wait_reason text,
    -- Priority: class 0 never called, 1 callback due, 2 retry; then the slot
    -- the cadence planned for this attempt (earlier = further behind); then
    -- source weight; then due_at.
    priority_class smallint NOT NULL,
    planned_at timestamptz NOT NULL,
    planned_slot bigint NOT NULL,
    weight real NOT NULL DEFAULT 1,
    callback_at timestamptz,
    reserved_agent text,
    reserved_until timestamptz,
    lease_id uuid,
    leased_agent text,
    lease_expires_at timestamptz,
    ended_at timestamptz,
    updated_at timestamptz NOT NULL
) WITH (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

-- next-lead walks this index in priority order and stops at the first row it
-- can lock; only ready rows are in it, so the walk is short.
CREATE INDEX leads_ready_by_priority ON leads
    (pool, priority_class, planned_slot, weight DESC, due_at, lead_id)
    WHERE state = 'ready';
-- Due callbacks reserved for the agent who took them.
CREATE INDEX leads_ready_reserved ON leads (reserved_agent, due_at)
    WHERE state = 'ready' AND reserved_agent IS NOT NULL;
-- The scheduler: waiting leads falling due, and windows that have closed.
CREATE INDEX leads_waiting_due ON leads (due_at) WHERE state = 'waiting';
CREATE INDEX leads_window_closes ON leads (closes_at)
    WHERE state IN ('waiting', 'ready');
-- Callback reservations whose hold has passed.
CREATE INDEX leads_reserved_until ON leads (reserved_until)
    WHERE reserved_agent IS NOT NULL;
-- The reaper.
CREATE INDEX leads_lease_expiry ON leads (lease_expires_at) WHERE state = 'leased';
CREATE UNIQUE INDEX leads_lease ON leads (lease_id) WHERE lease_id IS NOT NULL;
CREATE INDEX leads_phone ON leads (phone) WHERE phone IS NOT NULL;

-- A phone number's own history, shared by every lead with that number: the
-- per-number caps and "one open lease per number".
CREATE TABLE phones (
    phone text PRIMARY KEY,
    recent_calls timestamptz[] NOT NULL DEFAULT '{}',
    lifetime_calls integer NOT NULL DEFAULT 0,
    -- No new lease for this number before this time (a cap is reached).
    blocked_until timestamptz,
    -- The number is on an open lease until this time.
    leased_until timestamptz
) WITH (fillfactor = 80);

CREATE TABLE dnc (
    phone text PRIMARY KEY,
    listed_at timestamptz NOT NULL,
    reason text NOT NULL
);

-- Every lease ever handed out, and how it ended.
CREATE TABLE leases (
    lease_id uuid PRIMARY KEY,
    lead_id uuid NOT NULL,
    agent_id text NOT NULL,
    pool text NOT NULL,
    attempt integer NOT NULL,
    reason text NOT NULL,
    leased_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    ended_at timestamptz,
    -- withdrawn: the lead opted out (or left the queue) during the lease.
    end_reason text
        CHECK (end_reason IN ('outcome', 'released', 'expired', 'withdrawn')),
    disposition text
);

CREATE INDEX leases_by_lead ON leases (lead_id, leased_at);

-- Every call made to a lead, through a lease or logged from outside.
CREATE TABLE calls (
    call_id uuid PRIMARY KEY,
    lead_id uuid NOT NULL,
    lease_id uuid UNIQUE,
    agent_id text,
    pool text NOT NULL,
    attempt integer NOT NULL,
    disposition text NOT NULL,
    duration_seconds double precision NOT NULL DEFAULT 0,
    called_at timestamptz NOT NULL,
    via_queue boolean NOT NULL,
    callback_at timestamptz,
    logged_at timestamptz NOT NULL,
    -- The agent's own words about the call, kept for the lead's history.
    note text
);

CREATE INDEX calls_by_lead ON calls (lead_id, called_at);

-- Per lead and agent: attempts made, and whether the agent may get the lead
-- again (a lead an agent could not convert is recycled to the others).
CREATE TABLE lead_agents (
    lead_id uuid NOT NULL,
    agent_id text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    excluded_reason text,
    PRIMARY KEY (lead_id, agent_id)
);

-- next-lead's exclusion check probes this per candidate lead; without it the
-- planner may scan every (lead, agent) pair ever recorded.
CREATE INDEX lead_agents_excluded ON lead_agents (agent_id, lead_id)
    WHERE excluded_reason IS NOT NULL;
