-- The index of every stored instance, and an audit trail of associations.
-- Patient identity is Patient ID plus its issuer: the same ID from two issuers is two patients.

CREATE TABLE patients (
    id          INTEGER PRIMARY KEY,
    patient_id  TEXT NOT NULL,
    issuer      TEXT NOT NULL DEFAULT '',
    UNIQUE (patient_id, issuer)
);

CREATE TABLE studies (
    id                  INTEGER PRIMARY KEY,
    study_instance_uid  TEXT NOT NULL UNIQUE,
    patient             INTEGER NOT NULL REFERENCES patients (id),
    study_date          TEXT,
    study_time          TEXT,
    accession_number    TEXT,
    study_description   TEXT
);
CREATE INDEX studies_by_patient ON studies (patient, study_date);

CREATE TABLE series (
    id                      INTEGER PRIMARY KEY,
    series_instance_uid     TEXT NOT NULL UNIQUE,
    study                   INTEGER NOT NULL REFERENCES studies (id),
    modality                TEXT,
    series_number           INTEGER,
    series_description      TEXT,
    frame_of_reference_uid  TEXT,
    -- when the last instance arrived: the stable-series timeout starts from here
    last_received_at        TEXT NOT NULL
);
CREATE INDEX series_by_study ON series (study);

CREATE TABLE associations (
    id                  INTEGER PRIMARY KEY,
    calling_ae          TEXT NOT NULL,
    called_ae           TEXT NOT NULL,
    peer_address        TEXT NOT NULL,
    started_at          TEXT NOT NULL,
    ended_at            TEXT,
    instances_stored    INTEGER NOT NULL DEFAULT 0,
    instances_refused   INTEGER NOT NULL DEFAULT 0,
    -- accepted, rejected: <reason>, released, aborted, timed out, failed: <reason>
    outcome             TEXT NOT NULL
);

CREATE TABLE instances (
    id                   INTEGER PRIMARY KEY,
    sop_instance_uid     TEXT NOT NULL UNIQUE,
    sop_class_uid        TEXT NOT NULL,
    series               INTEGER NOT NULL REFERENCES series (id),
    instance_number      INTEGER,
    transfer_syntax_uid  TEXT NOT NULL,
    -- relative to the data directory
    file_path            TEXT NOT NULL,
    file_size            INTEGER NOT NULL,
    calling_ae           TEXT NOT NULL,
    association          INTEGER REFERENCES associations (id),
    received_at          TEXT NOT NULL
);
CREATE INDEX instances_by_series ON instances (series);
