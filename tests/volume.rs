//! Series to volume and back, against real data and real tools: dcm_qa_nih with dcm2niix's
//! reference output, the Lesjak FLAIR imported as DICOM (validated by dciodvfy), the same series
//! recompressed by DCMTK and OpenJPEG, an Enhanced MR object, and broken series.
//!
//! Geometry is compared without regard to storage order: dcm2niix writes RAS and flips rows, we keep
//! DICOM order. Two volumes agree when every voxel centre of one maps (through both affines) onto
//! an integer voxel of the other within 1e-3 mm, the sizes match, and those voxels hold the same
//! value.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{python, repo_root, run, shared_data, site_packages, text, tool};
use msnode::volume::{
    self, ImportOptions, LoadOptions, Volume, VolumeError, dicom_files, import_nifti, load_series,
    read_nifti,
};

const MM: f64 = 1e-3;

fn load(source: &Path, temporal_index: Option<usize>) -> Result<Volume, VolumeError> {
    let files = dicom_files(source)?;
    load_series(&files, &LoadOptions { temporal_index })
}

fn reference(path: &Path, t: usize) -> Volume {
    read_nifti(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .volume(t)
        .unwrap()
}

/// The voxel of `b` at the same world point as voxel `index` of `a`, or a panic that says how far
/// off it is.
fn map_index(a: &Volume, b: &Volume, inverse_b: &volume::Affine, index: [usize; 3]) -> [usize; 3] {
    let world = a.world(index.map(|v| v as f64));
    let p = [0, 1, 2].map(|r| {
        inverse_b[r][0] * world[0]
            + inverse_b[r][1] * world[1]
            + inverse_b[r][2] * world[2]
            + inverse_b[r][3]
    });
    let rounded = p.map(f64::round);
    let there = b.world(rounded);
    let distance = (0..3)
        .map(|c| (there[c] - world[c]).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(
        distance < MM,
        "voxel {index:?} at {world:?} is {distance} mm from the nearest reference voxel {rounded:?}"
    );
    let dims = b.dims();
    for c in 0..3 {
        assert!(
            rounded[c] >= 0.0 && (rounded[c] as usize) < dims[c],
            "voxel {index:?} maps outside the reference ({rounded:?} in {dims:?})"
        );
    }
    rounded.map(|v| v as usize)
}

fn assert_same_image(ours: &Volume, theirs: &Volume, what: &str) {
    let mut sorted_ours = ours.dims();
    let mut sorted_theirs = theirs.dims();
    sorted_ours.sort();
    sorted_theirs.sort();
    assert_eq!(sorted_ours, sorted_theirs, "{what}: dimensions");
    let inverse = volume::invert(&theirs.affine).unwrap();
    let [nx, ny, nz] = ours.dims();
    // Corners first: together they pin the whole affine (spacing, orientation, origin).
    for corner in [
        [0, 0, 0],
        [nx - 1, 0, 0],
        [0, ny - 1, 0],
        [0, 0, nz - 1],
        [nx - 1, ny - 1, nz - 1],
    ] {
        map_index(ours, theirs, &inverse, corner);
    }
    let (o, x) = (
        map_index(ours, theirs, &inverse, [0, 0, 0]),
        [
            map_index(ours, theirs, &inverse, [1.min(nx - 1), 0, 0]),
            map_index(ours, theirs, &inverse, [0, 1.min(ny - 1), 0]),
            map_index(ours, theirs, &inverse, [0, 0, 1.min(nz - 1)]),
        ],
    );
    // Index steps along each of our axes, in their index space (a signed permutation).
    let step = x.map(|p| [0, 1, 2].map(|c| p[c] as i64 - o[c] as i64));
    let mut differing = 0usize;
    let mut first = None;
    for ((k, j, i), value) in ours.data.indexed_iter() {
        let t = [0, 1, 2].map(|c| {
            (o[c] as i64 + step[0][c] * i as i64 + step[1][c] * j as i64 + step[2][c] * k as i64)
                as usize
        });
        let expected = theirs.data[[t[2], t[1], t[0]]];
        if (value - expected).abs() > 1e-3 * expected.abs().max(1.0) {
            differing += 1;
            first.get_or_insert(((i, j, k), *value, expected));
        }
    }
    assert_eq!(
        differing, 0,
        "{what}: {differing} voxels differ, first (i, j, k, ours, theirs): {first:?}"
    );
}

fn dcm_qa_nih() -> PathBuf {
    shared_data().join("dicom/dcm_qa_nih")
}

/// GE series of 15 slice positions x 10 volumes (EPI): refused as several volumes, and every
/// volume, picked by temporal index, equals dcm2niix's 4D output at that index.
#[test]
fn ge_epi_series_match_dcm2niix_volume_by_volume() {
    for n in 4..=7 {
        let dir = dcm_qa_nih().join(format!("In/20180918GE/mr_000{n}"));
        let e = load(&dir, None).unwrap_err();
        assert!(
            matches!(
                e,
                VolumeError::SeveralVolumes {
                    volumes: 10,
                    positions: 15
                }
            ),
            "{e}"
        );
        let reference_path = dcm_qa_nih().join(format!("Ref/DCM2NIIX_regression_test_{n}.nii"));
        assert_eq!(read_nifti(&reference_path).unwrap().volumes(), 10);
        for t in [0, 4, 9] {
            let ours = load(&dir, Some(t)).unwrap();
            assert_eq!(ours.dims(), [64, 64, 15]);
            let spacing = ours.spacing();
            assert!(
                (spacing[0] - 3.75).abs() < MM && (spacing[2] - 5.0).abs() < MM,
                "{spacing:?}"
            );
            assert_same_image(
                &ours,
                &reference(&reference_path, t),
                &format!("GE mr_000{n} volume {t}"),
            );
        }
        assert!(matches!(
            load(&dir, Some(10)).unwrap_err(),
            VolumeError::NoSuchVolume {
                index: 10,
                volumes: 10
            }
        ));
    }
}

/// Siemens mosaics: each file holds one volume of 5 slices; the series holds 2.
#[test]
fn siemens_mosaic_series_match_dcm2niix() {
    for (n, name) in [(3, "AP"), (4, "PA"), (5, "RL"), (6, "LR")] {
        let dir = dcm_qa_nih().join(format!("In/20180918Si/mr_000{n}"));
        let e = load(&dir, None).unwrap_err();
        assert!(
            matches!(
                e,
                VolumeError::SeveralVolumes {
                    volumes: 2,
                    positions: 5
                }
            ),
            "{e}"
        );
        let reference_path = dcm_qa_nih().join(format!("Ref/EPI_PE={name}_{n}.nii"));
        for t in 0..2 {
            let ours = load(&dir, Some(t)).unwrap();
            assert_eq!(ours.dims(), [72, 72, 5]);
            assert!(ours.slices.iter().all(|s| s.frame.is_none()));
            assert_same_image(
                &ours,
                &reference(&reference_path, t),
                &format!("Siemens mr_000{n} volume {t}"),
            );
        }
    }
}

fn lesjak(patient: &str, study: u8) -> PathBuf {
    shared_data().join(format!(
        "lesjak-longitudinal/{patient}/study{study}_FLAIR.nii.gz"
    ))
}

fn import(nifti: &Path, out: &Path) -> Vec<PathBuf> {
    import_nifti(nifti, out, &ImportOptions::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .files
}

fn dciodvfy_errors(files: &[PathBuf]) -> Vec<String> {
    let dciodvfy = repo_root().join(".venv/bin/dciodvfy");
    assert!(
        dciodvfy.is_file(),
        "dciodvfy is missing: `make setup` installs dicom3tools"
    );
    let mut errors = Vec::new();
    for file in files {
        let output = run(Command::new(&dciodvfy).arg(file));
        let report = text(&output);
        errors.extend(
            report
                .lines()
                .filter(|l| l.starts_with("Error"))
                .map(|l| format!("{}: {l}", file.display())),
        );
        // It must have judged the file as an MR Image, not given up on it.
        assert!(report.contains("MRImage"), "{}: {report}", file.display());
    }
    errors
}

/// import-nifti writes a valid MR series that loads back to the same voxels and affine, and that
/// dcm2niix (another reader) converts to the same image.
#[test]
fn lesjak_flair_round_trips_through_dicom() {
    let dir = tempfile::tempdir().unwrap();
    for (patient, study) in [("patient01", 1), ("patient03", 2)] {
        let nifti = lesjak(patient, study);
        let original = reference(&nifti, 0);
        let out = dir.path().join(format!("{patient}-{study}"));
        let files = import(&nifti, &out);
        assert_eq!(files.len(), original.dims()[2]);
        let errors = dciodvfy_errors(&files);
        assert!(errors.is_empty(), "dciodvfy:\n{}", errors.join("\n"));
        let loaded = load(&out, None).unwrap();
        assert_same_image(&loaded, &original, &format!("{patient} study {study}"));
        for r in 0..3 {
            for c in 0..4 {
                let (a, b) = (loaded.affine[r][c], original.affine[r][c]);
                assert!((a - b).abs() < MM || r < 3 && c == 2 && (a + b).abs() < MM);
            }
        }

        let converted = dir.path().join(format!("dcm2niix-{patient}"));
        std::fs::create_dir_all(&converted).unwrap();
        let output = run(Command::new(tool("dcm2niix"))
            .args(["-z", "n", "-f", "x", "-o"])
            .arg(&converted)
            .arg(&out));
        assert!(output.status.success(), "{}", text(&output));
        assert_same_image(
            &loaded,
            &reference(&converted.join("x.nii"), 0),
            "dcm2niix of our series",
        );

        let exported = dir.path().join(format!("{patient}.nii.gz"));
        let output = run(Command::new(env!("CARGO_BIN_EXE_msnode"))
            .arg("export-nifti")
            .arg(&out)
            .arg(&exported));
        assert!(output.status.success(), "{}", text(&output));
        assert_same_image(&reference(&exported, 0), &original, "export-nifti");
    }
}

/// Two visits of one patient: same patient, same study UID when asked, distinct series.
#[test]
fn import_nifti_cli_sets_patient_and_study() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("visit2");
    let output = run(Command::new(env!("CARGO_BIN_EXE_msnode"))
        .arg("import-nifti")
        .arg(lesjak("patient01", 2))
        .arg(&out)
        .args([
            "--patient-id",
            "MS0001",
            "--patient-name",
            "Doe^Jane",
            "--study-uid",
            "1.2.3.4.5",
            "--study-date",
            "20240131",
            "--series-description",
            "FLAIR visit 2",
        ]));
    assert!(output.status.success(), "{}", text(&output));
    let first = out.join("IM0001.dcm");
    let dump = text(&run(Command::new(tool("dcmdump")).arg(&first)));
    for expected in [
        "[MS0001]",
        "[Doe^Jane]",
        "[1.2.3.4.5]",
        "[20240131]",
        "[FLAIR visit 2]",
        "=MRImageStorage",
    ] {
        assert!(dump.contains(expected), "{expected} not in:\n{dump}");
    }
    let bad = run(Command::new(env!("CARGO_BIN_EXE_msnode"))
        .arg("import-nifti")
        .arg(lesjak("patient01", 2))
        .arg(dir.path().join("bad"))
        .args(["--study-date", "31.01.2024"]));
    assert!(!bad.status.success());
    assert!(text(&bad).contains("is not YYYYMMDD"), "{}", text(&bad));
}

fn recompress(program: &str, args: &[&str], files: &[PathBuf], out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    for file in files {
        let target = out.join(file.file_name().unwrap());
        let output = run(Command::new(tool(program))
            .args(args)
            .arg(file)
            .arg(&target));
        assert!(output.status.success(), "{program}: {}", text(&output));
    }
}

fn transfer_syntax(file: &Path) -> String {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(file)
        .unwrap();
    obj.meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string()
}

/// The same series in every lossless syntax the receiver accepts decodes to identical voxels.
#[test]
fn recompressed_series_load_identically() {
    let dir = tempfile::tempdir().unwrap();
    let plain_dir = dir.path().join("plain");
    let files = import(&lesjak("patient01", 1), &plain_dir);
    let plain = load(&plain_dir, None).unwrap();
    let cases: [(&str, &str, &[&str]); 3] = [
        ("jpeg-lossless", "dcmcjpeg", &[]),
        ("rle", "dcmcrle", &[]),
        ("jpeg-ls", "dcmcjpls", &[]),
    ];
    for (name, program, args) in cases {
        recompress(program, args, &files, &dir.path().join(name));
    }
    let output = run(Command::new(python())
        .arg(repo_root().join("tests/tools/volume_convert.py"))
        .arg("j2k")
        .arg(dir.path().join("j2k"))
        .args(&files));
    assert!(output.status.success(), "{}", text(&output));
    for (name, syntax) in [
        ("jpeg-lossless", "1.2.840.10008.1.2.4.70"),
        ("rle", "1.2.840.10008.1.2.5"),
        ("jpeg-ls", "1.2.840.10008.1.2.4.80"),
        ("j2k", "1.2.840.10008.1.2.4.90"),
    ] {
        let folder = dir.path().join(name);
        assert_eq!(
            transfer_syntax(&folder.join("IM0001.dcm")),
            syntax,
            "{name}"
        );
        let loaded = load(&folder, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(loaded.affine, plain.affine, "{name}");
        assert!(loaded.data == plain.data, "{name}: voxels differ");
    }
}

/// An Enhanced (legacy converted) MR object with per-frame and shared functional groups loads to
/// the geometry and voxels of the classic series it was made from, and to dcm2niix's reading of it.
#[test]
fn enhanced_multiframe_loads_with_its_geometry() {
    let dir = tempfile::tempdir().unwrap();
    let classic_dir = dir.path().join("classic");
    let files = import(&lesjak("patient03", 1), &classic_dir);
    let classic = load(&classic_dir, None).unwrap();
    let enhanced_dir = dir.path().join("enhanced");
    std::fs::create_dir_all(&enhanced_dir).unwrap();
    let enhanced = enhanced_dir.join("enhanced.dcm");
    let output = run(Command::new(python())
        .arg(repo_root().join("tests/tools/volume_convert.py"))
        .arg("enhanced")
        .arg(&enhanced)
        .args(&files));
    assert!(output.status.success(), "{}", text(&output));
    let loaded = load(&enhanced, None).unwrap();
    assert_same_image(&loaded, &classic, "enhanced vs classic");
    assert_eq!(loaded.slices.len(), files.len());
    assert!(loaded.slices.iter().all(|s| s.frame.is_some()));
    let mut frames: Vec<u32> = loaded.slices.iter().filter_map(|s| s.frame).collect();
    frames.sort();
    assert_eq!(frames, (1..=files.len() as u32).collect::<Vec<_>>());

    let output = run(Command::new(tool("dcm2niix"))
        .args(["-z", "n", "-s", "y", "-f", "x", "-o"])
        .arg(dir.path())
        .arg(&enhanced));
    assert!(output.status.success(), "{}", text(&output));
    assert_same_image(
        &loaded,
        &reference(&dir.path().join("x.nii"), 0),
        "dcm2niix of the enhanced object",
    );

    // pydicom-data's enhanced MR has had its functional groups stripped: no geometry to load.
    let stripped = site_packages().join("data_store/data/emri_small.dcm");
    let e = load(&stripped, None).unwrap_err();
    assert!(
        e.to_string()
            .contains("10 frames but no Per-frame Functional Groups Sequence"),
        "{e}"
    );
}

fn copy_series(files: &[PathBuf], out: &Path, skip: Option<usize>) -> Vec<PathBuf> {
    std::fs::create_dir_all(out).unwrap();
    files
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != skip)
        .map(|(_, f)| {
            let target = out.join(f.file_name().unwrap());
            std::fs::copy(f, &target).unwrap();
            target
        })
        .collect()
}

fn dcmodify(file: &Path, assignment: &str) {
    let output = run(Command::new(tool("dcmodify"))
        .args(["-nb", "-m", assignment])
        .arg(file));
    assert!(output.status.success(), "{}", text(&output));
}

/// Broken series fail with their own error, naming what is wrong and where.
#[test]
fn broken_series_fail_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good_dir = dir.path().join("good");
    let files = import(&lesjak("patient01", 1), &good_dir);
    let good = load(&good_dir, None).unwrap();
    let middle = files.len() / 2;
    let gap_dir = dir.path().join("gap");
    copy_series(&files, &gap_dir, Some(middle));
    let e = load(&gap_dir, None).unwrap_err();
    let message = e.to_string();
    assert!(matches!(e, VolumeError::MissingSlices(_)), "{message}");
    let (below, above) = {
        let mut z: Vec<f64> = files.iter().map(|f| along_of(f)).collect();
        let removed = z[middle];
        z.sort_by(f64::total_cmp);
        let k = z.iter().position(|v| *v == removed).unwrap();
        (z[k - 1], z[k + 1])
    };
    let expected = format!("1 slice(s) missing between z = {below:.2} mm and z = {above:.2} mm");
    assert!(
        message.contains(&expected),
        "{message}\nexpected: {expected}"
    );

    let mixed_dir = dir.path().join("mixed");
    let mixed = copy_series(&files, &mixed_dir, None);
    dcmodify(&mixed[3], "(0020,0037)=0\\1\\0\\0\\0\\-1");
    let e = load(&mixed_dir, None).unwrap_err();
    assert!(matches!(e, VolumeError::MixedOrientations(_)), "{e}");
    assert!(
        e.to_string()
            .contains("0.000\\1.000\\0.000\\0.000\\0.000\\-1.000 (1 image(s): IM0004.dcm)"),
        "{e}"
    );

    let sizes_dir = dir.path().join("sizes");
    copy_series(&files, &sizes_dir, None);
    let stray = sizes_dir.join("stray.dcm");
    std::fs::copy(
        dcm_qa_nih().join("In/20180918GE/mr_0004/axial_epi_fmri_interleaved_i_to_s-00001.dcm"),
        &stray,
    )
    .unwrap();
    let series_uid = {
        let obj = dicom_object::open_file(&files[0]).unwrap();
        obj.element(dicom_dictionary_std::tags::SERIES_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string()
    };
    dcmodify(&stray, &format!("(0020,000e)={series_uid}"));
    let e = load(&sizes_dir, None).unwrap_err();
    let [x, y, _] = good.dims();
    assert!(
        e.to_string().contains(&format!(
            "differing image size (columns x rows): 64 x 64 (1 image(s): stray.dcm); {x} x {y} ("
        )),
        "{e}"
    );
}

/// Position of one classic instance along its own slice normal.
fn along_of(file: &Path) -> f64 {
    let obj = dicom_object::open_file(file).unwrap();
    let get = |tag| -> Vec<f64> { obj.element(tag).unwrap().to_multi_float64().unwrap() };
    let p = get(dicom_dictionary_std::tags::IMAGE_POSITION_PATIENT);
    let o = get(dicom_dictionary_std::tags::IMAGE_ORIENTATION_PATIENT);
    let n = [
        o[1] * o[5] - o[2] * o[4],
        o[2] * o[3] - o[0] * o[5],
        o[0] * o[4] - o[1] * o[3],
    ];
    p[0] * n[0] + p[1] * n[1] + p[2] * n[2]
}
