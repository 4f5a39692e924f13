-- The workflow: which complete series were judged (and why), the jobs they started, and the
-- outbox of results to deliver. Plain SQL that PostgreSQL runs as well: several nodes may share
-- one database later, so a job is claimed by a single UPDATE ... RETURNING.

-- One verdict per series: recorded when the series went quiet, judged again when an instance
-- arrived after it (judged_received_at no longer equals series.last_received_at).
CREATE TABLE series_verdicts (
    series              INTEGER PRIMARY KEY REFERENCES series (id),
    judged_received_at  TEXT NOT NULL,
    flair               INTEGER NOT NULL,
    chosen              INTEGER NOT NULL,
    rule                TEXT NOT NULL,
    why                 TEXT NOT NULL,
    header              TEXT NOT NULL,
    judged_at           TEXT NOT NULL
);

CREATE TABLE jobs (
    id                  INTEGER PRIMARY KEY,
    current_series      TEXT NOT NULL,
    -- the current series' last_received_at the job analyses: a late instance makes a new job
    input_received_at   TEXT NOT NULL,
    prior_series        TEXT,
    prior_why           TEXT,
    state               TEXT NOT NULL CHECK (state IN
                            ('queued', 'waiting_for_prior', 'running', 'delivering', 'done', 'failed', 'no_prior')),
    reason              TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    -- the analysis summary (JSON) once it ran
    summary             TEXT,
    UNIQUE (current_series, input_received_at)
);
CREATE INDEX jobs_by_state ON jobs (state, id);

-- Every state a job passed through, when, and why.
CREATE TABLE job_events (
    id      INTEGER PRIMARY KEY,
    job     INTEGER NOT NULL REFERENCES jobs (id),
    state   TEXT NOT NULL,
    at      TEXT NOT NULL,
    reason  TEXT
);
CREATE INDEX job_events_by_job ON job_events (job, id);

-- One row per result object and destination: the audit of what was sent where, when, with the
-- peer's status.
CREATE TABLE outbox (
    id                  INTEGER PRIMARY KEY,
    job                 INTEGER NOT NULL REFERENCES jobs (id),
    destination         TEXT NOT NULL,
    -- relative to the data directory
    file_path           TEXT NOT NULL,
    sop_instance_uid    TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    -- unix seconds: when the next attempt may start
    next_attempt_at     INTEGER NOT NULL,
    last_status         INTEGER,
    last_error          TEXT,
    sent_at             TEXT,
    UNIQUE (job, destination, file_path)
);
CREATE INDEX outbox_pending ON outbox (state, next_attempt_at);
