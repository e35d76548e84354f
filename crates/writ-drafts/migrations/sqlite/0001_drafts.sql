-- Drafts (CP-4): one row per draft, keyed by tenant, owner ('' when the API
-- key names none) and the client's draft id. Times are Unix milliseconds,
-- ids hyphenated text, data JSON text.
CREATE TABLE writ_drafts (
    tenant            TEXT    NOT NULL,
    owner             TEXT    NOT NULL,
    draft_id          TEXT    NOT NULL,
    -- Random per creation: a deleted and re-created draft never reuses an
    -- ETag or an idempotency key of its predecessor.
    incarnation       TEXT    NOT NULL,
    version           INTEGER NOT NULL CHECK (version >= 1),
    command_type      TEXT    NOT NULL,
    data              TEXT    NOT NULL CHECK (json_valid(data)),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    -- The last submission of this draft (any version).
    submission_id     TEXT,
    submitted_version INTEGER,
    submission_state  TEXT CHECK (submission_state IN ('ACCEPTED', 'APPLIED', 'REJECTED', 'CONFLICT', 'DEAD_LETTERED')),
    canonical_id      TEXT,
    error_code        TEXT,
    error_message     TEXT,
    error_retryable   INTEGER,
    submitted_at      INTEGER,
    PRIMARY KEY (tenant, owner, draft_id),
    CHECK ((submission_id IS NULL) = (submission_state IS NULL)),
    CHECK ((submission_id IS NULL) = (submitted_version IS NULL)),
    CHECK ((submission_id IS NULL) = (submitted_at IS NULL))
) WITHOUT ROWID;

-- Status events find their draft by submission id.
CREATE INDEX writ_drafts_submission_id ON writ_drafts (submission_id) WHERE submission_id IS NOT NULL;

-- The purge scans by age.
CREATE INDEX writ_drafts_updated_at ON writ_drafts (updated_at);
