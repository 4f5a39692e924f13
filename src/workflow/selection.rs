//! FLAIR recognition: which complete series starts a job, by rules a site can read and change
//! (`[selection]`), each verdict naming the rule that took or rejected the series.
//!
//! Rules, in order (the first that decides wins):
//! 1. not MR, or not an MR image storage class (SEG, SR, secondary capture, ...): rejected;
//! 2. Image Type not ORIGINAL, or marked LOCALIZER, MPR, SUBTRACTION, PROJECTION, REFORMATTED,
//!    DERIVED (msnode's own overlays are DERIVED): rejected;
//! 3. an Inversion Time outside the FLAIR range (STIR, T1 IR): rejected, whatever the name says;
//! 4. a name pattern in Series Description, Protocol Name or Sequence Name: taken;
//! 5. an inversion recovery sequence (Scanning Sequence contains IR) with an Inversion Time in
//!    the FLAIR range: taken (vendor-neutral);
//! 6. otherwise rejected.
//!
//! Among several FLAIR series of one study, [`rank`] prefers 3D to 2D, then thinner slices, then
//! more slices, then the later series number.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::dicom::sop_class;

/// Name patterns that mark FLAIR on Siemens (`t2_tirm_tra_dark-fluid`, sequence `*tir2d1_16`,
/// `*spcir_278`), GE (`Ax T2 FLAIR`, `Sag CUBE FLAIR`, `T2FLAIR`), Philips (`3D_Brain_VIEW_FLAIR`)
/// and Canon/Toshiba (`FLAIR_AX`); matched case-insensitively as substrings, `*` matching any run.
pub const DEFAULT_NAME_PATTERNS: [&str; 5] =
    ["flair", "dark-fluid", "darkfluid", "*tir2d*", "*spcir*"];

/// Inversion times (ms) of FLAIR at 1.5 and 3 T: long enough to null CSF.
pub const DEFAULT_INVERSION_TIME_MS: [f64; 2] = [1500.0, 3500.0];

/// How FLAIR series are recognised (the configuration's `[selection]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SelectionRules {
    pub name_patterns: Vec<String>,
    pub inversion_time_ms: [f64; 2],
}

impl Default for SelectionRules {
    fn default() -> Self {
        SelectionRules {
            name_patterns: DEFAULT_NAME_PATTERNS.map(String::from).to_vec(),
            inversion_time_ms: DEFAULT_INVERSION_TIME_MS,
        }
    }
}

/// What selection reads of a series: the header of its first instance and how many it holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesHeader {
    pub series_instance_uid: String,
    pub modality: String,
    pub sop_class_uid: String,
    pub image_type: Vec<String>,
    pub series_description: String,
    pub protocol_name: String,
    pub sequence_name: String,
    pub scanning_sequence: Vec<String>,
    pub inversion_time_ms: Option<f64>,
    /// MR Acquisition Type: "2D" or "3D".
    pub acquisition_type: String,
    pub slice_thickness_mm: Option<f64>,
    pub series_number: Option<i64>,
    pub instances: usize,
}

/// Whether a series starts a job, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub flair: bool,
    /// The rule that decided, as the module documentation numbers and names them.
    pub rule: &'static str,
    pub why: String,
}

fn verdict(flair: bool, rule: &'static str, why: String) -> Verdict {
    Verdict { flair, rule, why }
}

/// Image Type values that mark a series as not an acquisition msnode should analyse.
const REJECTED_IMAGE_TYPES: [&str; 6] = [
    "DERIVED",
    "LOCALIZER",
    "MPR",
    "SUBTRACTION",
    "PROJECTION IMAGE",
    "REFORMATTED",
];

/// Case-insensitive match of `pattern` in `text`: a substring, where `*` matches any run.
fn matches(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.to_lowercase(), text.to_lowercase());
    let mut rest = text.as_str();
    for piece in pattern.split('*').filter(|p| !p.is_empty()) {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

impl SelectionRules {
    /// Which of the named values (field, value) a FLAIR name pattern matches, said as a reason.
    /// Rule 4 alone: what a C-FIND answer about a PACS's series lets us judge.
    pub fn name_match(&self, names: &[(&str, &String)]) -> Option<String> {
        names.iter().find_map(|(field, value)| {
            self.name_patterns
                .iter()
                .find(|p| matches(p, value))
                .map(|p| format!("{field} {value:?} matches {p:?}"))
        })
    }

    /// Judge one series.
    pub fn judge(&self, header: &SeriesHeader) -> Verdict {
        if header.modality != "MR" {
            let why = format!("modality {:?} is not MR", header.modality);
            return verdict(false, "1 modality", why);
        }
        if ![
            sop_class::MR_IMAGE_STORAGE,
            sop_class::ENHANCED_MR_IMAGE_STORAGE,
        ]
        .contains(&header.sop_class_uid.as_str())
        {
            let why = format!("SOP class {} is not an MR image", header.sop_class_uid);
            return verdict(false, "1 modality", why);
        }
        let image_type = header.image_type.join("\\");
        if header.image_type.first().map(String::as_str) != Some("ORIGINAL") {
            let why = format!("image type {image_type:?} is not ORIGINAL");
            return verdict(false, "2 image type", why);
        }
        if let Some(mark) = REJECTED_IMAGE_TYPES
            .iter()
            .find(|mark| header.image_type.iter().any(|v| v == *mark))
        {
            let why = format!("image type {image_type:?} marks it {mark}");
            return verdict(false, "2 image type", why);
        }
        let [low, high] = self.inversion_time_ms;
        let ti_in_range = header
            .inversion_time_ms
            .map(|ti| (low..=high).contains(&ti));
        if let (Some(false), Some(ti)) = (ti_in_range, header.inversion_time_ms) {
            let why = format!("inversion time {ti} ms is outside FLAIR's {low}-{high} ms");
            return verdict(false, "3 inversion time", why);
        }
        let names = [
            ("series description", &header.series_description),
            ("protocol name", &header.protocol_name),
            ("sequence name", &header.sequence_name),
        ];
        if let Some(why) = self.name_match(&names) {
            return verdict(true, "4 name", why);
        }
        if header.scanning_sequence.iter().any(|s| s == "IR") && ti_in_range == Some(true) {
            let why = format!(
                "inversion recovery with inversion time {} ms",
                header.inversion_time_ms.unwrap_or_default()
            );
            return verdict(true, "5 inversion recovery", why);
        }
        let why = format!(
            "no name pattern matches {:?} / {:?} / {:?}, and it is not inversion recovery with a FLAIR inversion time",
            header.series_description, header.protocol_name, header.sequence_name
        );
        verdict(false, "6 no rule", why)
    }
}

/// Order FLAIR candidates best first: 3D before 2D, thinner slices, more slices, later series.
pub fn rank(candidates: &mut [SeriesHeader]) {
    candidates.sort_by(|a, b| {
        let three_d = |h: &SeriesHeader| h.acquisition_type == "3D";
        let thickness = |h: &SeriesHeader| h.slice_thickness_mm.unwrap_or(f64::INFINITY);
        three_d(b)
            .cmp(&three_d(a))
            .then(
                thickness(a)
                    .partial_cmp(&thickness(b))
                    .unwrap_or(Ordering::Equal),
            )
            .then(b.instances.cmp(&a.instances))
            .then(b.series_number.cmp(&a.series_number))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mr(description: &str) -> SeriesHeader {
        SeriesHeader {
            series_instance_uid: "1.2.3".into(),
            modality: "MR".into(),
            sop_class_uid: sop_class::MR_IMAGE_STORAGE.into(),
            image_type: vec!["ORIGINAL".into(), "PRIMARY".into(), "M".into()],
            series_description: description.into(),
            acquisition_type: "2D".into(),
            instances: 40,
            ..Default::default()
        }
    }

    #[test]
    fn vendor_protocol_names_are_taken() {
        let rules = SelectionRules::default();
        for (description, protocol, sequence) in [
            (
                "t2_tirm_tra_dark-fluid",
                "t2_tirm_tra_dark-fluid",
                "*tir2d1_16",
            ),
            ("T2 DarkFluid 3D", "", "*spcir_278"),
            ("", "t2_spc_da-fl_sag_p2_iso", "*spcir_278"),
            ("Ax T2 FLAIR", "Ax T2 FLAIR", "OAx T2 FLAIR"),
            ("Sag CUBE FLAIR", "", ""),
            ("T2FLAIR_AX", "", ""),
            ("3D_Brain_VIEW_FLAIR SENSE", "3D_Brain_VIEW_FLAIR", ""),
            ("FLAIR_AX", "", ""),
        ] {
            let mut header = mr(description);
            header.protocol_name = protocol.into();
            header.sequence_name = sequence.into();
            let v = rules.judge(&header);
            assert!(v.flair, "{description:?}: {v:?}");
            assert_eq!(v.rule, "4 name");
        }
    }

    #[test]
    fn other_series_are_rejected_with_the_rule_that_decided() {
        let rules = SelectionRules::default();
        type Edit = Box<dyn Fn(&mut SeriesHeader)>;
        let cases: [(&str, Edit, &str); 7] = [
            ("T1 MPRAGE", Box::new(|_| {}), "6 no rule"),
            (
                "AX FLAIR",
                Box::new(|h| h.modality = "CT".into()),
                "1 modality",
            ),
            (
                "AX FLAIR",
                Box::new(|h| h.sop_class_uid = sop_class::SEGMENTATION_STORAGE.into()),
                "1 modality",
            ),
            (
                "AX FLAIR",
                Box::new(|h| h.image_type = vec!["DERIVED".into(), "PRIMARY".into()]),
                "2 image type",
            ),
            (
                "AX FLAIR MPR",
                Box::new(|h| h.image_type.push("MPR".into())),
                "2 image type",
            ),
            (
                "STIR *tir2d",
                Box::new(|h| h.inversion_time_ms = Some(160.0)),
                "3 inversion time",
            ),
            (
                "localizer",
                Box::new(|h| h.image_type.push("LOCALIZER".into())),
                "2 image type",
            ),
        ];
        for (description, edit, rule) in cases {
            let mut header = mr(description);
            edit(&mut header);
            let v = rules.judge(&header);
            assert!(!v.flair, "{description:?} taken: {v:?}");
            assert_eq!(v.rule, rule, "{description:?}: {}", v.why);
        }
    }

    #[test]
    fn inversion_recovery_with_a_flair_inversion_time_is_taken_without_a_name() {
        let rules = SelectionRules::default();
        let mut header = mr("AX T2 2MM");
        header.scanning_sequence = vec!["SE".into(), "IR".into()];
        header.inversion_time_ms = Some(2500.0);
        let v = rules.judge(&header);
        assert!(v.flair, "{v:?}");
        assert_eq!(v.rule, "5 inversion recovery");
        header.inversion_time_ms = None;
        assert!(!rules.judge(&header).flair, "IR without an inversion time");
    }

    #[test]
    fn patterns_match_case_insensitively_with_wildcards() {
        assert!(matches("*tir2d*", "*TIR2D1_16"));
        assert!(matches("flair", "Sag CUBE Flair"));
        assert!(matches("t2*flair", "T2 weighted FLAIR"));
        assert!(!matches("t2*flair", "FLAIR T2"));
        assert!(!matches("flair", ""));
    }

    #[test]
    fn ranking_prefers_3d_then_thin_then_many_then_late() {
        let header = |uid: &str, kind: &str, thickness: f64, instances: usize, number: i64| {
            let mut h = mr("FLAIR");
            h.series_instance_uid = uid.into();
            h.acquisition_type = kind.into();
            h.slice_thickness_mm = Some(thickness);
            h.instances = instances;
            h.series_number = Some(number);
            h
        };
        let mut candidates = vec![
            header("2d-thick", "2D", 5.0, 30, 9),
            header("2d-thin-late", "2D", 3.0, 40, 8),
            header("2d-thin-early", "2D", 3.0, 40, 3),
            header("3d", "3D", 1.0, 176, 2),
            header("2d-thin-more", "2D", 3.0, 48, 4),
        ];
        rank(&mut candidates);
        let order: Vec<&str> = candidates
            .iter()
            .map(|c| c.series_instance_uid.as_str())
            .collect();
        assert_eq!(
            order,
            [
                "3d",
                "2d-thin-more",
                "2d-thin-late",
                "2d-thin-early",
                "2d-thick"
            ]
        );
    }
}
