-- The audit trail: who sent us what, and what we sent where. One row per ended association
-- (accepted or rejected) and one per delivery attempt, written by triggers in the same
-- transaction as the change they record, so no write path can forget it. Append-only: rows can
-- be neither changed nor deleted. UIDs, AE titles and addresses only; no patient data.

CREATE TABLE audit_events (
    id                  INTEGER PRIMARY KEY,
    at                  TEXT NOT NULL,
    -- 'association' (a peer's association to us) or 'delivery' (one C-STORE attempt to a destination)
    kind                TEXT NOT NULL CHECK (kind IN ('association', 'delivery')),
    -- the calling AE of an association, the destination of a delivery
    ae_title            TEXT NOT NULL,
    peer_address        TEXT,
    association         INTEGER,
    job                 INTEGER,
    sop_instance_uid    TEXT,
    instances_stored    INTEGER,
    instances_refused   INTEGER,
    -- the DIMSE status a destination answered
    status              INTEGER,
    -- how an association ended, or why a delivery attempt got no status
    outcome             TEXT
);
CREATE INDEX audit_events_by_time ON audit_events (at);

CREATE TRIGGER audit_association_ended AFTER UPDATE OF ended_at ON associations
WHEN OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL
BEGIN
    INSERT INTO audit_events (at, kind, ae_title, peer_address, association, instances_stored,
                              instances_refused, outcome)
    VALUES (NEW.ended_at, 'association', NEW.calling_ae, NEW.peer_address, NEW.id,
            NEW.instances_stored, NEW.instances_refused, NEW.outcome);
END;

CREATE TRIGGER audit_association_refused AFTER INSERT ON associations
WHEN NEW.ended_at IS NOT NULL
BEGIN
    INSERT INTO audit_events (at, kind, ae_title, peer_address, association, instances_stored,
                              instances_refused, outcome)
    VALUES (NEW.ended_at, 'association', NEW.calling_ae, NEW.peer_address, NEW.id,
            NEW.instances_stored, NEW.instances_refused, NEW.outcome);
END;

CREATE TRIGGER audit_delivery_attempt AFTER UPDATE OF attempts ON outbox
WHEN NEW.attempts > OLD.attempts
BEGIN
    INSERT INTO audit_events (at, kind, ae_title, job, sop_instance_uid, status, outcome)
    VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'delivery', NEW.destination, NEW.job,
            NEW.sop_instance_uid, NEW.last_status, COALESCE(NEW.last_error, NEW.state));
END;

CREATE TRIGGER audit_events_are_not_changed BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;

CREATE TRIGGER audit_events_are_not_deleted BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
