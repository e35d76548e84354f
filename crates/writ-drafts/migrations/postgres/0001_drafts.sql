-- Drafts (CP-4): one row per draft, keyed by tenant, owner ('' when the API
-- key names none) and the client's draft id.
CREATE TABLE writ_drafts (
    tenant            text        NOT NULL,
    owner             text        NOT NULL,
    draft_id          text        NOT NULL,
    -- Random per creation: a deleted and re-created draft never reuses an
    -- ETag or an idempotency key of its predecessor.
    incarnation       text        NOT NULL,
    version           bigint      NOT NULL CHECK (version >= 1),
    command_type      text        NOT NULL,
    data              jsonb       NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    -- The last submission of this draft (any version).
    submission_id     uuid,
    submitted_version bigint,
    submission_state  text CHECK (submission_state IN ('ACCEPTED', 'APPLIED', 'REJECTED', 'CONFLICT', 'DEAD_LETTERED')),
    canonical_id      text,
    error_code        text,
    error_message     text,
    error_retryable   boolean,
    submitted_at      timestamptz,
    PRIMARY KEY (tenant, owner, draft_id),
    CHECK ((submission_id IS NULL) = (submission_state IS NULL)),
    CHECK ((submission_id IS NULL) = (submitted_version IS NULL)),
    CHECK ((submission_id IS NULL) = (submitted_at IS NULL))
);

-- Status events find their draft by submission id.
CREATE INDEX writ_drafts_submission_id ON writ_drafts (submission_id) WHERE submission_id IS NOT NULL;

-- The purge scans by age.
CREATE INDEX writ_drafts_updated_at ON writ_drafts (updated_at);
