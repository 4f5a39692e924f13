-- Priors asked of PACS: what a job's query found, and which series it had moved to us. A moved
-- series is judged like any other but starts no job of its own: it is a prior.

-- NULL: PACS was not asked (yet); otherwise what asking found, for the job record.
ALTER TABLE jobs ADD COLUMN prior_query TEXT;

CREATE TABLE prior_retrievals (
    series_instance_uid TEXT PRIMARY KEY,
    job                 INTEGER NOT NULL REFERENCES jobs (id),
    peer                TEXT NOT NULL,
    requested_at        TEXT NOT NULL
);
