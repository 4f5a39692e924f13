-- Recording an arrival as one INSERT into this view: the trigger upserts the patient, study,
-- series and instance in that single statement, so the node commits (and fsyncs) once per
-- instance with one round trip to the database, and no partial arrival is ever visible.

CREATE VIEW instance_arrivals AS SELECT
    NULL AS patient_id, NULL AS issuer,
    NULL AS study_instance_uid, NULL AS study_date, NULL AS study_time, NULL AS accession_number,
    NULL AS study_description,
    NULL AS series_instance_uid, NULL AS modality, NULL AS series_number, NULL AS series_description,
    NULL AS frame_of_reference_uid,
    NULL AS sop_instance_uid, NULL AS sop_class_uid, NULL AS instance_number, NULL AS transfer_syntax_uid,
    NULL AS file_path, NULL AS file_size, NULL AS calling_ae, NULL AS association, NULL AS received_at;

CREATE TRIGGER record_arrival INSTEAD OF INSERT ON instance_arrivals BEGIN
    INSERT INTO patients (patient_id, issuer) VALUES (NEW.patient_id, NEW.issuer)
        ON CONFLICT (patient_id, issuer) DO NOTHING;
    INSERT INTO studies (study_instance_uid, patient, study_date, study_time, accession_number, study_description)
        VALUES (NEW.study_instance_uid,
                (SELECT id FROM patients WHERE patient_id = NEW.patient_id AND issuer = NEW.issuer),
                NEW.study_date, NEW.study_time, NEW.accession_number, NEW.study_description)
        ON CONFLICT (study_instance_uid) DO UPDATE SET
            patient = excluded.patient,
            study_date = COALESCE(excluded.study_date, study_date),
            study_time = COALESCE(excluded.study_time, study_time),
            accession_number = COALESCE(excluded.accession_number, accession_number),
            study_description = COALESCE(excluded.study_description, study_description);
    INSERT INTO series (series_instance_uid, study, modality, series_number, series_description,
                        frame_of_reference_uid, last_received_at)
        VALUES (NEW.series_instance_uid,
                (SELECT id FROM studies WHERE study_instance_uid = NEW.study_instance_uid),
                NEW.modality, NEW.series_number, NEW.series_description, NEW.frame_of_reference_uid,
                NEW.received_at)
        ON CONFLICT (series_instance_uid) DO UPDATE SET
            study = excluded.study,
            modality = COALESCE(excluded.modality, modality),
            series_number = COALESCE(excluded.series_number, series_number),
            series_description = COALESCE(excluded.series_description, series_description),
            frame_of_reference_uid = COALESCE(excluded.frame_of_reference_uid, frame_of_reference_uid),
            last_received_at = excluded.last_received_at;
    INSERT INTO instances (sop_instance_uid, sop_class_uid, series, instance_number, transfer_syntax_uid,
                           file_path, file_size, calling_ae, association, received_at)
        VALUES (NEW.sop_instance_uid, NEW.sop_class_uid,
                (SELECT id FROM series WHERE series_instance_uid = NEW.series_instance_uid),
                NEW.instance_number, NEW.transfer_syntax_uid, NEW.file_path, NEW.file_size,
                NEW.calling_ae, NEW.association, NEW.received_at)
        ON CONFLICT (sop_instance_uid) DO UPDATE SET
            sop_class_uid = excluded.sop_class_uid,
            series = excluded.series,
            instance_number = excluded.instance_number,
            transfer_syntax_uid = excluded.transfer_syntax_uid,
            file_path = excluded.file_path,
            file_size = excluded.file_size,
            calling_ae = excluded.calling_ae,
            association = excluded.association,
            received_at = excluded.received_at;
END;
