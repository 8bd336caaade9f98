-- The nurture service's tables: campaigns and their immutable versions, one
-- row per lead (what nurture knows of it, its enrolment and the steps it has
-- been through), and the addresses that opted out of a channel.

CREATE TABLE campaigns (
    campaign text PRIMARY KEY,
    -- Raised by every PUT; enrolments keep the version they started with.
    version integer NOT NULL,
    -- Empty = every pool / every source.
    pools text[] NOT NULL,
    sources text[] NOT NULL,
    enrolment_age_days integer NOT NULL,
    priority integer NOT NULL,
    active boolean NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE campaign_versions (
    campaign text NOT NULL REFERENCES campaigns,
    version integer NOT NULL,
    -- The whole definition as PUT (steps, pools, sources, age, ...).
    definition jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (campaign, version)
);

CREATE TABLE leads (
    lead_id uuid PRIMARY KEY,
    source text NOT NULL,
    -- The queue pool the lead is in now (from lead.queued); NULL before.
    pool text,
    first_name text,
    last_name text,
    phone text,
    email text,
    country text,
    region text,
    timezones text[] NOT NULL DEFAULT '{}',
    consent_sms boolean NOT NULL,
    consent_email boolean NOT NULL,
    sms_opted_out boolean NOT NULL DEFAULT false,
    email_opted_out boolean NOT NULL DEFAULT false,
    dnc boolean NOT NULL DEFAULT false,
    received_at timestamptz NOT NULL,
    -- 'open' while the queue calls it, 'exhausted' after its target.
    calling text NOT NULL DEFAULT 'open' CHECK (calling IN ('open', 'exhausted')),
    -- The pool asked for the lead to wait for exhaustion before nurture.
    hold_while_calling boolean NOT NULL DEFAULT false,
    -- When the queue news in calling/pool happened (older news is ignored).
    calling_at timestamptz,
    -- Set once for good: converted, invalid or reinquiry.
    ended_reason text,
    -- The campaign chosen for the lead (while waiting, kept current with the
    -- lead's pool and the campaigns; fixed once enrolled).
    campaign text,
    campaign_version integer,
    enrolled_at timestamptz,
    finished_at timestamptz,
    finish_reason text,
    -- Index of the next step of the campaign version to go out.
    next_step integer NOT NULL DEFAULT 0,
    -- When the scheduler must look at the lead next: its enrolment time while
    -- waiting, its next step's due time while enrolled. NULL = nothing due.
    next_at timestamptz,
    -- One object per step dealt with: {step, outcome, reason, at, job_id}.
    history jsonb NOT NULL DEFAULT '[]',
    updated_at timestamptz NOT NULL,
    CHECK (ended_reason IN ('converted', 'invalid', 'reinquiry'))
);

-- The scheduler's only way in: the earliest due leads, claimed with
-- FOR UPDATE SKIP LOCKED. Partial, so finished leads cost the index nothing.
CREATE INDEX leads_next_at ON leads (next_at) WHERE next_at IS NOT NULL;
-- Re-inquiries, opt-outs and DNC listings find every lead of one person.
CREATE INDEX leads_phone ON leads (phone) WHERE phone IS NOT NULL;
CREATE INDEX leads_email ON leads (email) WHERE email IS NOT NULL;
-- Campaign changes re-plan the leads not enrolled yet.
CREATE INDEX leads_waiting ON leads (lead_id)
    WHERE enrolled_at IS NULL AND ended_reason IS NULL;

-- Every enrolled lead is rewritten once per step: vacuum early, keep room.
ALTER TABLE leads SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02);

-- Addresses that opted out of a channel, whichever lead they came with: a
-- later lead of the same person starts opted out.
CREATE TABLE opt_outs (
    channel text NOT NULL CHECK (channel IN ('sms', 'email')),
    address text NOT NULL,
    lead_id uuid NOT NULL,
    opted_out_at timestamptz NOT NULL,
    PRIMARY KEY (channel, address)
);

-- Numbers on the do-not-call list as dnc.updated events reported them: a
-- lead that arrives later with a listed number is not nurtured.
CREATE TABLE dnc_phones (
    phone text PRIMARY KEY,
    listed_at timestamptz NOT NULL
);
