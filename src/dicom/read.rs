//! Reading attributes: one set of readers for every stage. Each answers `None` when the attribute
//! is absent or cannot be read as asked.

use dicom_core::Tag;
use dicom_object::InMemDicomObject;

/// Trim the padding that UIDs and strings carry (trailing NUL and space).
pub fn trim_padding(s: &str) -> &str {
    s.trim_end_matches(['\0', ' '])
}

/// A string attribute without its padding and surrounding white space; `None` when it is empty.
pub fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = obj.get(tag)?.to_str().ok()?;
    let trimmed = trim_padding(value.trim());
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

pub fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    obj.get(tag)?.to_int::<i64>().ok()
}

pub fn float(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    obj.get(tag)?.to_float64().ok()
}

pub fn floats(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    obj.get(tag)?.to_multi_float64().ok()
}

/// The first item of a sequence attribute.
pub fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.get(tag)?.items()?.first()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::tags;

    #[test]
    fn text_drops_padding_and_empty_values() {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3\0"));
        obj.put(DataElement::new(tags::PATIENT_ID, VR::LO, " P1 "));
        obj.put(DataElement::new(tags::STUDY_ID, VR::SH, "  "));
        obj.put(DataElement::new(
            tags::ROWS,
            VR::US,
            dicom_core::dicom_value!(U16, [256]),
        ));
        assert_eq!(text(&obj, tags::SOP_INSTANCE_UID).as_deref(), Some("1.2.3"));
        assert_eq!(text(&obj, tags::PATIENT_ID).as_deref(), Some("P1"));
        assert_eq!(text(&obj, tags::STUDY_ID), None);
        assert_eq!(text(&obj, tags::SERIES_INSTANCE_UID), None);
        assert_eq!(int(&obj, tags::ROWS), Some(256));
    }
}
