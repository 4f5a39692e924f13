//! Registration, resampling and masks on the real FLAIRs in ../shared/data (Lesjak et al. 2016,
//! CC-BY): known rigid motions are recovered, the raw longitudinal pairs agree with the
//! dataset's own transforms, resampling keeps images and labels, the brain mask matches the
//! expert one.

mod common;

use std::path::PathBuf;

use ndarray::Array3;

use msnode::prepare::{Normalization, nonzero_mask, normalize};
use msnode::register::itk::read_itk_transform;
use msnode::register::metric::masked_correlation;
use msnode::register::{
    Grid, Interpolation, Model, RegisterOptions, Transform, brain_mask, head_mask, mask_points,
    register, resample,
};
use msnode::volume::{Volume, read_nifti};

fn patient(n: u32) -> PathBuf {
    common::shared_data().join(format!("lesjak-longitudinal/patient{n:02}"))
}

fn load(path: PathBuf) -> Volume {
    read_nifti(&path)
        .and_then(|n| n.volume(0))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A visit's FLAIR with the dataset's common-space -> study transform.
struct Visit {
    flair: Volume,
    from_common: Transform,
}

fn visit(patient_number: u32, study: u32) -> Visit {
    let dir = patient(patient_number);
    Visit {
        flair: load(dir.join(format!("study{study}_FLAIR.nii.gz"))),
        from_common: read_itk_transform(
            &dir.join(format!("study{study}_FLAIR_to_common_space.txt")),
        )
        .unwrap(),
    }
}

/// The expert brain mask (common grid) on a visit's own grid.
fn expert_brain(patient_number: u32, on: &Visit) -> Array3<bool> {
    let common = load(patient(patient_number).join("brainmask_common.nii.gz"));
    let to_common = on.from_common.inverse().unwrap();
    resample(
        &common,
        &to_common,
        &Grid::of(&on.flair),
        Interpolation::Nearest,
    )
    .unwrap()
    .data
    .mapv(|v| v > 0.5)
}

fn dice(a: &Array3<bool>, b: &Array3<bool>) -> f64 {
    let both = a.iter().zip(b.iter()).filter(|(x, y)| **x && **y).count();
    let total = a.iter().filter(|x| **x).count() + b.iter().filter(|x| **x).count();
    2.0 * both as f64 / total as f64
}

#[test]
fn brain_mask_agrees_with_the_expert_mask() {
    for n in [1, 3] {
        let current = visit(n, 2);
        let head = head_mask(&current.flair).unwrap();
        let brain = brain_mask(&current.flair, &head).unwrap();
        let expert = expert_brain(n, &current);
        let d = dice(&brain, &expert);
        let covered = expert
            .iter()
            .zip(head.iter())
            .filter(|(e, h)| **e && **h)
            .count() as f64
            / expert.iter().filter(|e| **e).count() as f64;
        println!("patient {n}: brain Dice {d:.3}, expert brain inside the head mask {covered:.4}");
        assert!(d > 0.85, "patient {n}: Dice {d}");
        assert!(
            covered > 0.995,
            "patient {n}: head mask misses brain ({covered})"
        );
    }
}

#[test]
fn known_rigid_motions_are_recovered() {
    // (patient, visit, rotation about x, y, z in degrees, translation in mm)
    let cases = [
        (1, 2, [15.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
        (1, 2, [-6.0, 8.0, 10.0], [12.0, -20.0, 9.0]),
        (3, 1, [4.0, -10.0, 7.0], [-15.0, 6.0, 20.0]),
    ];
    for (n, study, degrees, shift) in cases {
        let fixed = visit(n, study);
        let expert = expert_brain(n, &fixed);
        let points = mask_points(&fixed.flair, &expert, 7);
        let centre = fixed
            .flair
            .world(fixed.flair.dims().map(|d| d as f64 / 2.0));
        let truth = Transform::rigid(degrees.map(f64::to_radians), shift, centre);
        // The same head, moved in the scanner: its voxels now lie at truth(x).
        let moving = truth.relocate(&fixed.flair);
        let started = std::time::Instant::now();
        let result = register(&fixed.flair, &moving, &RegisterOptions::default()).unwrap();
        let error = result.transform.mean_displacement(&truth, &points);
        println!(
            "patient {n} visit {study} {degrees:?} deg {shift:?} mm: mean error {error:.3} mm, NCC {:.4}, brain r {:.4}, {:.1} s",
            result.quality.metric,
            result.quality.brain_correlation,
            started.elapsed().as_secs_f64()
        );
        assert!(error < 0.5, "mean displacement error {error} mm");
    }
}

#[test]
fn lesjak_pairs_agree_with_the_reference_mapping() {
    for n in [1, 3] {
        let (prior, current) = (visit(n, 1), visit(n, 2));
        // The dataset's own mapping: current -> common space -> prior. Both of its transforms are
        // affine, and so is their composition: the singular values of its matrix are 0.995-1.001
        // (patient 1) and 0.990-1.000 (patient 3), a scaling no rigid transform can follow.
        // Best rigid correlation found by a direct search on this very criterion: 0.9113 and
        // 0.6964, below the reference's 0.9114 and 0.7076; so the comparison is made affine.
        let reference = current
            .from_common
            .inverse()
            .unwrap()
            .then(&prior.from_common);
        let expert = expert_brain(n, &current);
        let points = mask_points(&current.flair, &expert, 7);
        // Both mappings judged alike: the expert brain on the current grid, the prior read with
        // trilinear interpolation, Pearson correlation.
        let correlation = |t: &Transform| {
            masked_correlation(&current.flair, &prior.flair, t, &expert)
                .unwrap()
                .0
        };
        let theirs = correlation(&reference);
        for model in [Model::Rigid, Model::Affine] {
            let options = RegisterOptions {
                model,
                ..RegisterOptions::default()
            };
            let started = std::time::Instant::now();
            let result = register(&current.flair, &prior.flair, &options).unwrap();
            let seconds = started.elapsed().as_secs_f64();
            let error = result.transform.mean_displacement(&reference, &points);
            let ours = correlation(&result.transform);
            if n == 1 {
                // Deterministic whatever the number of threads.
                let single = rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .unwrap()
                    .install(|| register(&current.flair, &prior.flair, &options))
                    .unwrap();
                assert_eq!(single.transform, result.transform);
            }
            println!(
                "patient {n} {model:?}: {error:.3} mm from the reference, brain r {ours:.4} (reference {theirs:.4}), quality {:?}, start {:?}, {seconds:.1} s",
                result.quality, result.start
            );
            assert!(
                error < 1.0,
                "patient {n} {model:?}: {error} mm from the reference"
            );
            // The reported quality is high for a true pairing (see below for a false one).
            assert!(result.quality.metric > 0.5 && result.quality.overlap > 0.99);
            if model == Model::Affine {
                // With the reference's own degrees of freedom, the aligned images correlate inside
                // the brain at least as well as with the reference mapping.
                assert!(
                    ours >= theirs,
                    "patient {n}: aligned images correlate {ours} inside the brain, the reference {theirs}"
                );
            }
        }
    }
}

#[test]
fn a_false_pairing_gets_a_low_quality_figure() {
    // Patient 3's prior registered to patient 1's current: plausible anatomy, wrong person.
    let (prior, current) = (visit(3, 1), visit(1, 2));
    let result = register(&current.flair, &prior.flair, &RegisterOptions::default()).unwrap();
    println!("false pairing: {:?}", result.quality);
    assert!(
        result.quality.brain_correlation < 0.6 && result.quality.metric < 0.5,
        "{:?}",
        result.quality
    );
}

#[test]
fn resampling_keeps_images_and_labels_and_moves_by_the_transform() {
    let flair = visit(1, 2).flair;
    let grid = Grid::of(&flair);
    for (interpolation, tolerance) in [
        (Interpolation::Nearest, 0.0),
        (Interpolation::Linear, 1e-3),
        (Interpolation::BSpline, 1e-2),
    ] {
        let same = resample(&flair, &Transform::identity(), &grid, interpolation).unwrap();
        let worst = (&same.data - &flair.data).fold(0.0f32, |m, d| m.max(d.abs()));
        assert!(worst <= tolerance, "{interpolation:?}: {worst}");
    }

    // A label map (the FLAIR cut into 4 labels), rotated: only its own labels come out.
    let labels = Volume {
        data: flair.data.mapv(|v| match v {
            v if v < 50.0 => 0.0,
            v if v < 200.0 => 3.0,
            v if v < 300.0 => 7.0,
            _ => 12.0,
        }),
        ..flair.clone()
    };
    let centre = flair.world(flair.dims().map(|d| d as f64 / 2.0));
    let turn = Transform::rigid([0.1, -0.05, 0.2], [3.3, -1.7, 2.2], centre);
    let moved = resample(&labels, &turn, &grid, Interpolation::Nearest).unwrap();
    let mut seen: Vec<u32> = moved.data.iter().map(|v| *v as u32).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, vec![0, 3, 7, 12]);
    assert!(moved.data.iter().all(|v| v.fract() == 0.0));

    // A Gaussian blob on the oblique, anisotropic FLAIR grid: resampling through a shift by
    // +t puts it at c - t (the output at x shows the input at x + t).
    let c = flair.world([150.3, 170.6, 20.4]);
    let blob = Volume {
        data: Array3::from_shape_fn(flair.data.dim(), |(k, j, i)| {
            let p = flair.world([i as f64, j as f64, k as f64]);
            let r2: f64 = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum();
            (-r2 / (2.0 * 6.0f64.powi(2))).exp() as f32
        }),
        ..flair.clone()
    };
    let shift = [4.2, -7.5, 5.1];
    for interpolation in [Interpolation::Linear, Interpolation::BSpline] {
        let out = resample(&blob, &Transform::translation(shift), &grid, interpolation).unwrap();
        let (mut sum, mut weight) = ([0.0; 3], 0.0);
        for ((k, j, i), v) in out.data.indexed_iter() {
            let p = flair.world([i as f64, j as f64, k as f64]);
            for a in 0..3 {
                sum[a] += f64::from(*v) * p[a];
            }
            weight += f64::from(*v);
        }
        let found = sum.map(|s| s / weight);
        for a in 0..3 {
            assert!(
                (found[a] - (c[a] - shift[a])).abs() < 0.1,
                "{interpolation:?}: blob at {found:?}, expected {:?}",
                [c[0] - shift[0], c[1] - shift[1], c[2] - shift[2]]
            );
        }
    }
}

#[test]
fn register_command_writes_the_aligned_prior_and_its_transform() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("aligned.nii.gz");
    let data = patient(1);
    let output = common::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_msnode"))
            .args(["register", "--affine", "--fixed"])
            .arg(data.join("study2_FLAIR.nii.gz"))
            .arg("--moving")
            .arg(data.join("study1_FLAIR.nii.gz"))
            .arg("--out")
            .arg(&out),
    );
    assert!(output.status.success(), "{}", common::text(&output));
    let current = visit(1, 2);
    let aligned = load(out.clone());
    assert_eq!(aligned.dims(), current.flair.dims());
    assert_eq!(
        aligned.affine.map(|r| r.map(|v| (v * 1e4).round())),
        current.flair.affine.map(|r| r.map(|v| (v * 1e4).round()))
    );
    // The transform file is ITK's: it maps current points to prior points like the reference.
    let written = read_itk_transform(&dir.path().join("aligned.tfm")).unwrap();
    let reference = current
        .from_common
        .inverse()
        .unwrap()
        .then(&visit(1, 1).from_common);
    let points = mask_points(&current.flair, &expert_brain(1, &current), 7);
    let error = written.mean_displacement(&reference, &points);
    assert!(error < 1.0, "{error} mm");
    // The aligned prior correlates with the current scan inside the brain.
    let expert = expert_brain(1, &current);
    let (r, _) =
        masked_correlation(&current.flair, &aligned, &Transform::identity(), &expert).unwrap();
    assert!(r > 0.85, "{r}");
    assert!(common::text(&output).contains("brain correlation"));

    let missing = common::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_msnode"))
            .args(["register", "--fixed", "/nonexistent.nii.gz", "--moving"])
            .arg(data.join("study1_FLAIR.nii.gz"))
            .arg("--out")
            .arg(&out),
    );
    assert!(!missing.status.success());
    assert!(
        common::text(&missing).contains("/nonexistent.nii.gz"),
        "{}",
        common::text(&missing)
    );
}

#[test]
fn normalisation_matches_the_training_pipeline() {
    let current = visit(1, 2).flair;
    let centre = current.world(current.dims().map(|d| d as f64 / 2.0));
    let moved = Transform::rigid([0.05, 0.0, -0.08], [4.0, -3.0, 2.0], centre);
    let other = resample(&current, &moved, &Grid::of(&current), Interpolation::Linear).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, out) = (
        dir.path().join("a.nii.gz"),
        dir.path().join("b.nii.gz"),
        dir.path().join("out.nii.gz"),
    );
    msnode::volume::write_nifti(&current, &a).unwrap();
    msnode::volume::write_nifti(&other, &b).unwrap();
    let output = common::run(
        std::process::Command::new(common::python())
            .arg(common::repo_root().join("tests/tools/register_normalize_reference.py"))
            .args([&a, &b, &out]),
    );
    assert!(output.status.success(), "{}", common::text(&output));
    let reference = load(out);
    let mask = nonzero_mask(&[&current.data, &other.data]).unwrap();
    let ours = normalize(&current.data, &mask, &Normalization::ZSCORE_IN_MASK).unwrap();
    let worst = (&ours - &reference.data).fold(0.0f32, |m, d| m.max(d.abs()));
    assert!(
        worst < 1e-4,
        "largest difference from the training pipeline: {worst}"
    );
    // The mask is a real one: background is excluded, the head included.
    let share = mask.iter().filter(|m| **m).count() as f64 / mask.len() as f64;
    assert!(share > 0.1 && share < 0.6, "{share}");
}
