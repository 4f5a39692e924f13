//! DICOM-SEG against the validators other people wrote (dciodvfy, highdicom, dcmqi), on real
//! Lesjak FLAIR imported as DICOM, including an oblique series and one whose column direction is
//! (0, -1, 0).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use msnode::dicom::uid::Uids;
use msnode::lesions::AnalysisKind;
use msnode::outputs::seg::{SegSeries, Segment, write_seg};
use msnode::outputs::{Algorithm, SourceSeries, lesion_classes};
use msnode::volume::{
    self, ImportOptions, LoadOptions, Volume, import_nifti, load_series, read_nifti, write_nifti,
};
use ndarray::Array3;

use common::*;

fn lesjak_flair() -> PathBuf {
    shared_data().join("lesjak-longitudinal/patient01/study2_FLAIR.nii.gz")
}

/// The Lesjak FLAIR with its affine replaced by `affine(spacing)` (LPS), written as a new NIfTI.
fn reoriented_nifti(out: &Path, affine: impl Fn([f64; 3]) -> volume::Affine) -> PathBuf {
    let mut volume = read_nifti(&lesjak_flair()).unwrap().volume(0).unwrap();
    volume.affine = affine(volume.spacing());
    let path = out.join("reoriented.nii.gz");
    write_nifti(&volume, &path).unwrap();
    path
}

/// Oblique: rows along (cos 12, sin 12, 0) tilted 8 degrees about x.
fn oblique(spacing: [f64; 3]) -> volume::Affine {
    let (ax, az) = (8f64.to_radians(), 12f64.to_radians());
    let row = [az.cos(), az.sin(), 0.0];
    let column = [-az.sin() * ax.cos(), az.cos() * ax.cos(), ax.sin()];
    let normal = [az.sin() * ax.sin(), -az.cos() * ax.sin(), ax.cos()];
    let mut a = [[0.0; 4]; 4];
    for r in 0..3 {
        a[r] = [
            row[r] * spacing[0],
            column[r] * spacing[1],
            normal[r] * spacing[2],
            [-110.0, -120.0, -60.0][r],
        ];
    }
    a[3][3] = 1.0;
    a
}

/// Axial, but the column direction is (0, -1, 0): rows run from anterior to posterior upwards.
fn columns_anterior(spacing: [f64; 3]) -> volume::Affine {
    [
        [spacing[0], 0.0, 0.0, -115.0],
        [0.0, -spacing[1], 0.0, 115.0],
        [0.0, 0.0, spacing[2], -60.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// Import a NIfTI as an MR series and load it back: the source the SEG refers to.
fn imported_series(nifti: &Path, dir: &Path) -> (Volume, Vec<PathBuf>) {
    let report = import_nifti(nifti, dir, &ImportOptions::default()).unwrap();
    let volume = load_series(&report.files, &LoadOptions::default()).unwrap();
    (volume, report.files)
}

fn algorithm() -> Algorithm {
    Algorithm {
        name: "msnode-test".into(),
        version: "0.0.1".into(),
    }
}

/// A mask with a 4 x 4 x 2 block at the given (column, row, slice).
fn block_mask(volume: &Volume, at: [usize; 3]) -> Array3<bool> {
    let mut mask = Array3::from_elem(volume.data.dim(), false);
    for k in at[2]..at[2] + 2 {
        for j in at[1]..at[1] + 4 {
            for i in at[0]..at[0] + 4 {
                mask[[k, j, i]] = true;
            }
        }
    }
    mask
}

fn dciodvfy_errors(path: &Path) -> Vec<String> {
    let output = run(Command::new(repo_root().join(".venv/bin/dciodvfy")).arg(path));
    let report = text(&output);
    assert!(
        report.contains("Segmentation") || report.contains("SEG"),
        "dciodvfy did not run:\n{report}"
    );
    report
        .lines()
        .filter(|l| l.starts_with("Error"))
        .map(str::to_string)
        .collect()
}

fn read(path: &Path) -> InMemDicomObject {
    dicom_object::open_file(path).unwrap().into_inner()
}

fn numbers(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Vec<f64> {
    obj.element(tag).unwrap().to_multi_float64().unwrap()
}

fn item(obj: &InMemDicomObject, tag: dicom_core::Tag) -> &InMemDicomObject {
    &obj.element(tag).unwrap().items().unwrap()[0]
}

/// Write a SEG with a new-lesion block and an empty enlarging segment, then check everything a
/// viewer relies on.
fn check_seg_on(nifti: &Path, work: &Path) {
    let (volume, files) = imported_series(nifti, &work.join("series"));
    check_seg(&volume, &files, work);
}

/// As `check_seg_on`, for a loaded source volume and its files.
fn check_seg(volume: &Volume, files: &[PathBuf], work: &Path) {
    let source = SourceSeries::read(&files[0]).unwrap();
    let new_mask = block_mask(volume, [150, 100, 10]);
    let empty = Array3::from_elem(volume.data.dim(), false);
    let seg_path = work.join("seg.dcm");
    let written = write_seg(
        &seg_path,
        &source,
        volume,
        &segments(AnalysisKind::FollowUp, &[&new_mask, &empty]),
        &algorithm(),
        SegSeries {
            number: 900,
            kind: AnalysisKind::FollowUp,
        },
        &mut Uids::Random,
    )
    .unwrap();
    let slices = volume.data.dim().0;
    assert_eq!(
        written.frames,
        2 * slices,
        "one frame per slice and segment, empty ones too"
    );

    let errors = dciodvfy_errors(&seg_path);
    assert!(errors.is_empty(), "dciodvfy: {errors:#?}");

    // Frame i of each segment lies exactly on source slice i, with the source orientation.
    let seg = read(&seg_path);
    let shared = item(&seg, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let seg_orientation = numbers(
        item(shared, tags::PLANE_ORIENTATION_SEQUENCE),
        tags::IMAGE_ORIENTATION_PATIENT,
    );
    let per_frame = seg
        .element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .unwrap()
        .items()
        .unwrap();
    // Where each source slice lies: from its own file for single-frame sources; for a multi-frame
    // source, from the geometry the loader read out of its functional groups.
    let mut planes: std::collections::BTreeMap<String, ([f64; 3], Vec<f64>)> = Default::default();
    for file in files {
        let obj = read(file);
        if let Some(position) = obj
            .element_opt(tags::IMAGE_POSITION_PATIENT)
            .unwrap()
            .map(|e| e.to_multi_float64().unwrap())
        {
            let uid = obj
                .element(tags::SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches('\0')
                .to_string();
            planes.insert(
                uid,
                (
                    [position[0], position[1], position[2]],
                    numbers(&obj, tags::IMAGE_ORIENTATION_PATIENT),
                ),
            );
        }
    }
    let spacing = volume.spacing();
    let loader_orientation: Vec<f64> = (0..2)
        .flat_map(|c| (0..3).map(move |r| (r, c)))
        .map(|(r, c)| volume.affine[r][c] / spacing[c])
        .collect();
    for (k, slice) in volume.slices.iter().enumerate() {
        let (position, orientation) = match slice.frame {
            None => planes[&slice.sop_instance_uid].clone(),
            Some(_) => (
                volume.world([0.0, 0.0, k as f64]),
                loader_orientation.clone(),
            ),
        };
        for (a, b) in orientation.iter().zip(&seg_orientation) {
            assert!(
                (a - b).abs() < 1e-5,
                "orientation {orientation:?} vs {seg_orientation:?}"
            );
        }
        for segment in 0..2 {
            let frame = &per_frame[segment * slices + k];
            let seg_position = numbers(
                item(frame, tags::PLANE_POSITION_SEQUENCE),
                tags::IMAGE_POSITION_PATIENT,
            );
            for a in 0..3 {
                assert!(
                    (seg_position[a] - position[a]).abs() < 1e-4,
                    "frame {k}: {seg_position:?} vs {position:?}"
                );
            }
            let derivation = item(frame, tags::DERIVATION_IMAGE_SEQUENCE);
            let referenced = item(derivation, tags::SOURCE_IMAGE_SEQUENCE);
            let uid = referenced
                .element(tags::REFERENCED_SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap();
            assert_eq!(uid.trim_end_matches('\0'), slice.sop_instance_uid);
            let frame_number = referenced
                .element_opt(tags::REFERENCED_FRAME_NUMBER)
                .unwrap()
                .map(|e| e.to_int::<u32>().unwrap());
            assert_eq!(frame_number, slice.frame, "frame {k}: referenced frame");
        }
    }

    // highdicom reads it.
    let script = format!(
        "import highdicom as hd\nseg = hd.seg.segread({:?})\nprint(seg.number_of_segments, len(seg.get_source_image_uids()))",
        seg_path.display().to_string()
    );
    let output = run(Command::new(python()).args(["-c", &script]));
    assert!(output.status.success(), "highdicom: {}", text(&output));
    let instances: std::collections::BTreeSet<&str> = volume
        .slices
        .iter()
        .map(|s| s.sop_instance_uid.as_str())
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("2 {}", instances.len())
    );

    // dcmqi turns it back into a mask identical to ours, voxel for voxel in world coordinates.
    let dcmqi_out = work.join("dcmqi");
    std::fs::create_dir_all(&dcmqi_out).unwrap();
    let output = run(
        Command::new(repo_root().join(".venv/bin/segimage2itkimage"))
            .arg("--inputDICOM")
            .arg(&seg_path)
            .arg("--outputDirectory")
            .arg(&dcmqi_out)
            .args(["--outputType", "nifti"]),
    );
    assert!(
        output.status.success(),
        "segimage2itkimage: {}",
        text(&output)
    );
    let theirs = read_nifti(&dcmqi_out.join("1.nii.gz"))
        .unwrap()
        .volume(0)
        .unwrap();
    let inverse = volume::invert(&theirs.affine).unwrap();
    let mut compared = 0;
    for ((k, j, i), &ours) in new_mask.indexed_iter() {
        // Every lesion voxel and a sparse grid of the rest.
        if !ours && (i % 16 != 0 || j % 16 != 0) {
            continue;
        }
        let world = volume.world([i as f64, j as f64, k as f64]);
        let p = [0, 1, 2].map(|r| {
            (inverse[r][0] * world[0]
                + inverse[r][1] * world[1]
                + inverse[r][2] * world[2]
                + inverse[r][3])
                .round()
        });
        let there = theirs.world(p);
        let distance: f64 = (0..3)
            .map(|a| (there[a] - world[a]).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            distance < 1e-2,
            "voxel {:?} is {distance} mm off the dcmqi grid",
            (i, j, k)
        );
        let value = theirs.data[[p[2] as usize, p[1] as usize, p[0] as usize]];
        assert_eq!(
            value > 0.5,
            ours,
            "voxel {:?}: dcmqi {value}, ours {ours}",
            (i, j, k)
        );
        compared += 1;
    }
    assert!(compared > 32 * 5, "{compared}");
}

#[test]
fn seg_on_an_axial_series_passes_every_validator() {
    let work = tempfile::tempdir().unwrap();
    check_seg_on(&lesjak_flair(), work.path());
}

#[test]
fn seg_on_an_oblique_series_lies_on_the_source_slices() {
    let work = tempfile::tempdir().unwrap();
    let nifti = reoriented_nifti(work.path(), oblique);
    check_seg_on(&nifti, work.path());
}

#[test]
fn seg_on_a_series_whose_columns_run_anterior_is_not_mirrored() {
    let work = tempfile::tempdir().unwrap();
    let nifti = reoriented_nifti(work.path(), columns_anterior);
    let (volume, _) = imported_series(&nifti, &work.path().join("check"));
    let column_direction = [0, 1, 2].map(|r| volume.affine[r][1] / volume.spacing()[1]);
    assert!(
        (column_direction[1] + 1.0).abs() < 1e-9,
        "the test series should have a column direction of (0, -1, 0), has {column_direction:?}"
    );
    check_seg_on(&nifti, work.path());
}

/// The segments of an analysis of `kind`, one mask per lesion class.
fn segments<'a>(kind: AnalysisKind, masks: &[&'a Array3<bool>]) -> Vec<Segment<'a>> {
    lesion_classes(kind)
        .iter()
        .zip(masks)
        .map(|(class, mask)| Segment {
            label: class.label.into(),
            mask: mask.view(),
            cielab: class.cielab,
        })
        .collect()
}

#[test]
fn the_measurement_report_carries_every_lesion_volume_and_passes_the_validators() {
    let tree = check_report(AnalysisKind::FollowUp);
    assert!(
        tree.contains("enlarging lesion") && tree.contains("new lesion"),
        "{tree}"
    );
    assert!(
        tree.contains("2 new or enlarging lesion(s): 1 new, 1 enlarging"),
        "{tree}"
    );
}

#[test]
fn a_lesion_load_report_without_a_prior_passes_the_validators() {
    let tree = check_report(AnalysisKind::LesionLoad);
    assert!(
        tree.contains("Lesion load (no prior study to compare with): 2 lesion(s)"),
        "{tree}"
    );
    assert!(
        !tree.contains("new lesion") && !tree.contains("enlarging"),
        "{tree}"
    );
}

/// Two lesions (the second hyperintense at the prior visit when there is one) as a SEG and a
/// report of `kind`, checked by dciodvfy, highdicom and dsrdump; returns dsrdump's tree.
fn check_report(kind: AnalysisKind) -> String {
    use msnode::lesions::find_lesions;
    use msnode::outputs::sr::{Evidence, ReportContent, write_report};

    let work = tempfile::tempdir().unwrap();
    let (volume, files) = imported_series(&lesjak_flair(), &work.path().join("series"));
    let source = SourceSeries::read(&files[0]).unwrap();
    let mut probability = Array3::<f32>::zeros(volume.data.dim());
    let mut prior_z = Array3::<f32>::zeros(volume.data.dim());
    for (at, z) in [([150, 100, 10], 0.0), ([60, 200, 20], 3.0)] {
        for (index, v) in block_mask(&volume, at).indexed_iter() {
            if *v {
                probability[index] = 0.9;
                prior_z[index] = z;
            }
        }
    }
    let prior_z_at = |voxel: [usize; 3]| prior_z[voxel];
    let prior_z_at: Option<&dyn Fn([usize; 3]) -> f32> =
        (kind == AnalysisKind::FollowUp).then_some(&prior_z_at);
    let map = find_lesions(probability.view(), &volume.affine, prior_z_at, 0.5, 3.0);
    assert_eq!(map.lesions.len(), 2);
    let masks: Vec<Array3<bool>> = lesion_classes(kind)
        .iter()
        .map(|class| {
            map.labels
                .mapv(|l| l > 0 && map.lesions[l as usize - 1].change == class.change)
        })
        .collect();
    let mask_refs: Vec<&Array3<bool>> = masks.iter().collect();
    let seg_path = work.path().join("seg.dcm");
    let seg = write_seg(
        &seg_path,
        &source,
        &volume,
        &segments(kind, &mask_refs),
        &algorithm(),
        SegSeries { number: 900, kind },
        &mut Uids::Random,
    )
    .unwrap();
    let errors = dciodvfy_errors(&seg_path);
    assert!(errors.is_empty(), "dciodvfy: {errors:#?}");
    let current = Evidence {
        study_instance_uid: source.study_instance_uid.clone(),
        series_instance_uid: source.series_instance_uid.clone(),
        sop_class_uid: source.sop_class_uid.clone(),
        sop_instance_uids: volume
            .slices
            .iter()
            .map(|s| s.sop_instance_uid.clone())
            .collect(),
    };
    let sr_path = work.path().join("sr.dcm");
    let content = ReportContent {
        kind,
        lesions: &map.lesions,
        seg: &seg,
        notes: vec!["Registration: correlation 0.93 inside the brain".into()],
    };
    write_report(
        &sr_path,
        &source,
        &content,
        &[current],
        &algorithm(),
        901,
        &mut Uids::Random,
    )
    .unwrap();

    let report = text(&run(
        Command::new(repo_root().join(".venv/bin/dciodvfy")).arg(&sr_path)
    ));
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("Error")).collect();
    assert!(errors.is_empty(), "dciodvfy:\n{report}");

    let script = format!(
        "import highdicom as hd\nsr = hd.sr.srread({:?})\nprint(sr.ContentTemplateSequence[0].TemplateIdentifier, len(sr.ContentSequence))",
        sr_path.display().to_string()
    );
    let output = run(Command::new(python()).args(["-c", &script]));
    assert!(output.status.success(), "highdicom: {}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("1500"),
        "{}",
        text(&output)
    );

    let dump = run(Command::new(tool("dsrdump")).arg("+Pl").arg(&sr_path));
    // dsrdump warns that its VR checker does not know UTF-8 (ISO_IR 192) and exits non-zero for
    // that alone; what matters is the tree it prints.
    let tree = text(&dump);
    assert!(
        tree.contains("<CONTAINER:(,,\"Imaging Measurement Report\")=SEPARATE>"),
        "{tree}"
    );
    // Each block is 4 x 4 x 2 voxels of the Lesjak grid: its volume in mm3 must be in the tree.
    for lesion in &map.lesions {
        let volume_text = format!("{:.6}", lesion.volume_mm3);
        let expected = volume_text.trim_end_matches('0').trim_end_matches('.');
        assert!(
            tree.contains(&format!("\"{expected}\" (mm3,UCUM,\"cubic millimeter\")")),
            "{expected} missing:\n{tree}"
        );
    }
    assert!(tree.contains("for review by a radiologist"), "{tree}");
    tree
}

#[test]
fn the_overlay_series_is_valid_and_its_png_shows_the_outline() {
    use msnode::outputs::overlay::{render, write_overlay_series, write_png};

    let work = tempfile::tempdir().unwrap();
    let (volume, files) = imported_series(&lesjak_flair(), &work.path().join("series"));
    let source = SourceSeries::read(&files[0]).unwrap();
    let new_mask = block_mask(&volume, [150, 100, 10]);
    let red = lesion_classes(AnalysisKind::FollowUp)[0].rgb;
    let images = render(&volume, &[(new_mask.view(), red)], "1 NEW LESION, 49.6 MM3");
    assert_eq!(images.len(), volume.data.dim().0);
    let (written, _) = write_overlay_series(
        &work.path().join("overlay"),
        &source,
        &volume,
        &images,
        902,
        &mut Uids::Random,
    )
    .unwrap();
    assert_eq!(written.len(), images.len());
    for file in [&written[0], &written[10]] {
        let report = text(&run(
            Command::new(repo_root().join(".venv/bin/dciodvfy")).arg(file)
        ));
        let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("Error")).collect();
        assert!(errors.is_empty(), "dciodvfy:\n{report}");
    }
    let png_path = work.path().join("slice10.png");
    write_png(&png_path, &images[10]).unwrap();
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buffer).unwrap();
    assert_eq!(
        (info.width as usize, info.height as usize),
        (volume.data.dim().2, volume.data.dim().1)
    );
    // The block's corner voxel (column 150, row 100) is on the outline: red.
    let at = 3 * (100 * info.width as usize + 150);
    assert_eq!(&buffer[at..at + 3], &[255, 40, 40]);
}

#[test]
fn seg_on_an_enhanced_multiframe_source_references_its_frames() {
    let work = tempfile::tempdir().unwrap();
    let (_, classic_files) = imported_series(&lesjak_flair(), &work.path().join("classic"));
    let enhanced_dir = work.path().join("enhanced");
    std::fs::create_dir_all(&enhanced_dir).unwrap();
    let enhanced = enhanced_dir.join("enhanced.dcm");
    let output = run(Command::new(python())
        .arg(repo_root().join("tests/tools/volume_convert.py"))
        .arg("enhanced")
        .arg(&enhanced)
        .args(&classic_files));
    assert!(output.status.success(), "{}", text(&output));
    let volume = load_series(std::slice::from_ref(&enhanced), &LoadOptions::default()).unwrap();
    assert!(
        volume.slices.iter().all(|s| s.frame.is_some()),
        "the source should be multi-frame"
    );
    check_seg(&volume, &[enhanced], work.path());
}
