//! The modules every new object msnode writes shares (as highdicom's `SOPClass` base writes them):
//! Patient and General Study (given as elements: copied from a source or made up by an import),
//! General Series, Frame of Reference, equipment, SOP Common and the content date and time. Each
//! object adds only its own modules.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

/// DICOM date (DA) and time (TM), UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateTime {
    pub date: String,
    pub time: String,
}

impl DateTime {
    pub fn now() -> DateTime {
        let now = time::OffsetDateTime::now_utc();
        DateTime {
            date: format!(
                "{:04}{:02}{:02}",
                now.year(),
                u8::from(now.month()),
                now.day()
            ),
            time: format!("{:02}{:02}{:02}", now.hour(), now.minute(), now.second()),
        }
    }
}

/// Who made the object.
#[derive(Debug, Clone, Copy)]
pub enum Equipment<'a> {
    /// General Equipment: Manufacturer only.
    General,
    /// Enhanced General Equipment (SEG and other enhanced objects): also the model name, a device
    /// serial number and the software version.
    Enhanced { model_name: &'a str },
}

const MANUFACTURER: &str = "msnode";

/// A new series: what all its instances share.
#[derive(Debug, Clone)]
pub struct NewSeries<'a> {
    /// Patient and General Study attributes and the Specific Character Set, as they are written.
    pub patient_study: &'a [DataElement<InMemDicomObject>],
    pub modality: &'a str,
    pub series_instance_uid: &'a str,
    pub series_number: i32,
    pub series_description: &'a str,
    /// `None` for objects without a Frame of Reference (an SR without spatial coordinates).
    pub frame_of_reference_uid: Option<&'a str>,
    pub equipment: Equipment<'a>,
    /// Series date and time, and the content date and time of every instance.
    pub created: &'a DateTime,
}

impl NewSeries<'_> {
    /// One instance of the series: the shared modules and its SOP Common identity.
    pub fn instance(
        &self,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        instance_number: usize,
    ) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        for element in self.patient_study {
            obj.put(element.clone());
        }
        put(&mut obj, tags::SOP_CLASS_UID, VR::UI, sop_class_uid);
        put(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid);
        put(
            &mut obj,
            tags::INSTANCE_NUMBER,
            VR::IS,
            instance_number.to_string(),
        );
        put(&mut obj, tags::MODALITY, VR::CS, self.modality);
        put(
            &mut obj,
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            self.series_instance_uid,
        );
        put(
            &mut obj,
            tags::SERIES_NUMBER,
            VR::IS,
            self.series_number.to_string(),
        );
        put(
            &mut obj,
            tags::SERIES_DESCRIPTION,
            VR::LO,
            self.series_description,
        );
        put(
            &mut obj,
            tags::SERIES_DATE,
            VR::DA,
            self.created.date.as_str(),
        );
        put(
            &mut obj,
            tags::SERIES_TIME,
            VR::TM,
            self.created.time.as_str(),
        );
        put(
            &mut obj,
            tags::CONTENT_DATE,
            VR::DA,
            self.created.date.as_str(),
        );
        put(
            &mut obj,
            tags::CONTENT_TIME,
            VR::TM,
            self.created.time.as_str(),
        );
        if let Some(uid) = self.frame_of_reference_uid {
            put(&mut obj, tags::FRAME_OF_REFERENCE_UID, VR::UI, uid);
            put(&mut obj, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
        }
        put(&mut obj, tags::MANUFACTURER, VR::LO, MANUFACTURER);
        if let Equipment::Enhanced { model_name } = self.equipment {
            put(&mut obj, tags::MANUFACTURER_MODEL_NAME, VR::LO, model_name);
            put(&mut obj, tags::DEVICE_SERIAL_NUMBER, VR::LO, "0");
            put(
                &mut obj,
                tags::SOFTWARE_VERSIONS,
                VR::LO,
                env!("CARGO_PKG_VERSION"),
            );
        }
        obj
    }
}

pub fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) {
    obj.put(DataElement::new(tag, vr, value.into()));
}

pub fn put_sequence(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(
        tag,
        VR::SQ,
        dicom_core::value::DataSetSequence::from(items),
    ));
}
