-- The metrics service's tables: one row per lead, the cadence's planned
-- attempts ("slots"), and the rolling counters every report reads, kept per
-- (lead, day) and per (day, pool, source, team, agent). No report reads raw
-- events: the consumer folds each event into these rows once.
--
-- Days are calendar days in the business time zone (METRICS_BUSINESS_TIMEZONE).
-- Unknown text keys are stored as '' so they can be part of a primary key.

CREATE TABLE leads (
    lead_id uuid PRIMARY KEY,
    source text,
    campaign text,
    -- NULL until lead.received is seen: events may arrive before it.
    received_at timestamptz,
    -- The pool the lead is in now, and the first pool it entered.
    pool text,
    first_pool text,
    -- The current round: a lead moved on by a pool's exhausted_to starts a
    -- new round with that pool's target and cadence, counted from its move.
    round_started_at timestamptz,
    call_target integer,
    cadence_seconds double precision[] NOT NULL DEFAULT '{}',
    -- Attempts brought into the round (a recycle to another pool keeps
    -- them): its plan starts at attempt round_carried + 1.
    round_carried integer NOT NULL DEFAULT 0,
    round_attempts integer NOT NULL DEFAULT 0,
    -- The sum of the targets of every round so far (lifetime penetration).
    target_total integer NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    first_call_at timestamptz,
    first_call_agent text,
    first_call_team text,
    last_call_at timestamptz,
    first_contact_attempt integer,
    first_contact_at timestamptz,
    converted_attempt integer,
    converted_at timestamptz,
    state text NOT NULL DEFAULT 'open'
        CHECK (state IN ('open', 'exhausted', 'converted', 'invalid', 'opted_out')),
    ended_at timestamptz,
    dnc boolean NOT NULL DEFAULT false,
    duplicates integer NOT NULL DEFAULT 0
);

-- Speed-to-lead and cohort reports select leads by arrival. (No index
-- names the counters updated on every call, so those updates stay HOT.)
CREATE INDEX leads_by_arrival ON leads (received_at);

-- The attempts a lead's cadence plans, each at its planned time: attempt k of
-- a round falls due at round start + the first k gaps. A slot is counted into
-- lead_days.scheduled once its time has passed; a lead that ends (or moves to
-- a new round) cancels the slots after that moment, and a counted slot that
-- is cancelled later (an event processed late) is taken back out.
CREATE TABLE slots (
    lead_id uuid NOT NULL,
    round_started_at timestamptz NOT NULL,
    attempt integer NOT NULL,
    due_at timestamptz NOT NULL,
    day date NOT NULL,
    pool text NOT NULL,
    source text NOT NULL,
    counted boolean NOT NULL DEFAULT false,
    cancelled boolean NOT NULL DEFAULT false,
    PRIMARY KEY (lead_id, round_started_at, attempt)
);

-- The slot counter's walk: only slots still waiting for their time.
CREATE INDEX slots_pending ON slots (due_at) WHERE NOT counted AND NOT cancelled;

CREATE TABLE lead_days (
    lead_id uuid NOT NULL,
    day date NOT NULL,
    pool text NOT NULL,
    source text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    -- Slots that fell due this day (so far, for today).
    scheduled integer NOT NULL DEFAULT 0,
    contacts integer NOT NULL DEFAULT 0,
    conversions integer NOT NULL DEFAULT 0,
    PRIMARY KEY (lead_id, day, pool)
);

-- Group reports and the below-target list read one window of days.
CREATE INDEX lead_days_by_day ON lead_days (day, pool);

-- Which agent called which lead on which day: agent and team penetration
-- are the penetration of the leads the agent (team) worked.
CREATE TABLE lead_agent_days (
    lead_id uuid NOT NULL,
    day date NOT NULL,
    agent text NOT NULL,
    team text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    PRIMARY KEY (lead_id, day, agent)
);

CREATE INDEX lead_agent_days_by_day ON lead_agent_days (day, agent);

-- Attempts by disposition and duplicates per group and day. pool, team and
-- agent are '' for figures that have none (a duplicate belongs to a source).
CREATE TABLE group_days (
    day date NOT NULL,
    pool text NOT NULL,
    source text NOT NULL,
    team text NOT NULL,
    agent text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    contacts integer NOT NULL DEFAULT 0,
    conversions integer NOT NULL DEFAULT 0,
    no_answer integer NOT NULL DEFAULT 0,
    busy integer NOT NULL DEFAULT 0,
    voicemail integer NOT NULL DEFAULT 0,
    contacted integer NOT NULL DEFAULT 0,
    callback integer NOT NULL DEFAULT 0,
    appointment integer NOT NULL DEFAULT 0,
    converted integer NOT NULL DEFAULT 0,
    not_interested integer NOT NULL DEFAULT 0,
    wrong_number integer NOT NULL DEFAULT 0,
    dnc integer NOT NULL DEFAULT 0,
    duplicates integer NOT NULL DEFAULT 0,
    PRIMARY KEY (day, pool, source, team, agent)
);

-- The last call of each agent, for the active-agents gauge.
CREATE TABLE agents (
    agent text PRIMARY KEY,
    team text NOT NULL,
    last_call_at timestamptz NOT NULL
);

-- Hot counters are updated in place all day: leave room for HOT updates and
-- vacuum them early.
ALTER TABLE leads SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE lead_days SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02);
ALTER TABLE group_days SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02);
-- Counting a slot changes its partial index's predicate: such updates are
-- never HOT, but free room on the page still keeps them off other pages.
ALTER TABLE slots SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02);
