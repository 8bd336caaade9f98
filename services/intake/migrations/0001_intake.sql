-- Intake owns sources (who may send leads), leads, and what it needs to
-- answer retries and duplicates.

CREATE TABLE sources (
    name text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    -- SHA-256 of the API key: keys are 256-bit random tokens, so a fast hash
    -- is enough to make a stolen table useless.
    api_key_hash bytea UNIQUE,
    -- HMAC needs the shared secret itself; protect the database accordingly.
    webhook_secret text,
    mapping text NOT NULL DEFAULT 'generic',
    mapping_options jsonb NOT NULL DEFAULT '{}',
    duplicate_policy text NOT NULL DEFAULT 'ignore'
        CHECK (duplicate_policy IN ('ignore', 'merge_fill', 'merge_overwrite')),
    created_at timestamptz NOT NULL
);

CREATE TABLE leads (
    id uuid PRIMARY KEY,
    source text NOT NULL REFERENCES sources (name),
    external_id text,
    campaign text,
    first_name text,
    last_name text,
    phone text,
    email text,
    postal_code text,
    country text,
    region text,
    timezone text,
    timezones text[] NOT NULL DEFAULT '{}',
    consent_call boolean NOT NULL,
    consent_sms boolean NOT NULL,
    consent_email boolean NOT NULL,
    attributes jsonb NOT NULL DEFAULT '{}',
    dnc boolean NOT NULL DEFAULT false,
    received_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CHECK (phone IS NOT NULL OR email IS NOT NULL)
);

-- A CRM re-sending its own record gets the same lead back.
CREATE UNIQUE INDEX leads_source_external_id ON leads (source, external_id)
    WHERE external_id IS NOT NULL;
-- Duplicate detection: same phone or e-mail within the window.
CREATE INDEX leads_phone_received ON leads (phone, received_at)
    WHERE phone IS NOT NULL;
CREATE INDEX leads_email_received ON leads (email, received_at)
    WHERE email IS NOT NULL;

-- Every duplicate that arrived, for per-source counts and audits.
CREATE TABLE duplicates (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lead_id uuid NOT NULL REFERENCES leads (id),
    source text NOT NULL,
    matched_on text NOT NULL,
    action text NOT NULL,
    received_at timestamptz NOT NULL
);
CREATE INDEX duplicates_source_received ON duplicates (source, received_at);

-- First responses by Idempotency-Key, replayed to retries.
CREATE TABLE idempotency_keys (
    source text NOT NULL,
    key text NOT NULL,
    request_hash bytea NOT NULL,
    response jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Intake's copy of the do-not-call list, learned from queue events.
CREATE TABLE dnc_phones (
    phone text PRIMARY KEY,
    listed_at timestamptz NOT NULL
);
