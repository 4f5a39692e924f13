//! ITK transform files (`#Insight Transform File V1.0`), LPS, fixed point -> moving point:
//! read `AffineTransform`, `MatrixOffsetTransformBase` and `Euler3DTransform` (double, 3D);
//! write `AffineTransform_double_3_3`, which ITK, SimpleITK and ANTs read.

use std::path::Path;

use super::{RegisterError, Transform};

/// Read the single 3D linear transform of an ITK transform file.
pub fn read_itk_transform(path: &Path) -> Result<Transform, RegisterError> {
    let error = |message: String| RegisterError::TransformFile {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    parse(&text).map_err(error)
}

fn parse(text: &str) -> Result<Transform, String> {
    if !text.starts_with("#Insight Transform File") {
        return Err("not an ITK transform file (no #Insight Transform File header)".into());
    }
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(str::trim))
            .ok_or_else(|| format!("no {name} line"))
    };
    let numbers = |name: &str| -> Result<Vec<f64>, String> {
        field(name)?
            .split_whitespace()
            .map(|v| v.parse::<f64>().map_err(|e| format!("{name} {v:?}: {e}")))
            .collect()
    };
    let count = text.lines().filter(|l| l.starts_with("Transform:")).count();
    if count != 1 {
        return Err(format!(
            "holds {count} transforms; only files with one linear transform are read"
        ));
    }
    let kind = field("Transform:")?;
    let parameters = numbers("Parameters:")?;
    let fixed = numbers("FixedParameters:")?;
    let centre: [f64; 3] = fixed
        .get(..3)
        .and_then(|c| c.try_into().ok())
        .ok_or("FixedParameters must hold the 3 coordinates of the centre")?;
    let expect = |n: usize| {
        if parameters.len() == n {
            Ok(())
        } else {
            Err(format!(
                "{kind} needs {n} parameters, found {}",
                parameters.len()
            ))
        }
    };
    let transform = match kind {
        "AffineTransform_double_3_3" | "MatrixOffsetTransformBase_double_3_3" => {
            expect(12)?;
            let m = [
                [parameters[0], parameters[1], parameters[2]],
                [parameters[3], parameters[4], parameters[5]],
                [parameters[6], parameters[7], parameters[8]],
            ];
            Transform::from_matrix(m, [parameters[9], parameters[10], parameters[11]], centre)
        }
        "Euler3DTransform_double_3_3" => {
            expect(6)?;
            // A fourth fixed parameter set to 1 means ComputeZYX (R = Rz Ry Rx); ITK's default is
            // R = Rz Rx Ry.
            let zyx = fixed.get(3).is_some_and(|v| *v != 0.0);
            let [rx, ry, rz] =
                super::rotation_factors([parameters[0], parameters[1], parameters[2]]);
            let m = if zyx {
                super::mat3(&rz, &super::mat3(&ry, &rx))
            } else {
                super::mat3(&rz, &super::mat3(&rx, &ry))
            };
            Transform::from_matrix(m, [parameters[3], parameters[4], parameters[5]], centre)
        }
        other => {
            return Err(format!(
                "{other} is not supported (affine, matrix-offset or Euler 3D, double precision)"
            ));
        }
    };
    if transform.affine.iter().flatten().any(|v| !v.is_finite()) {
        return Err("the parameters are not finite".into());
    }
    Ok(transform)
}

/// Write `transform` as an ITK affine transform file (centre at the origin).
pub fn write_itk_transform(transform: &Transform, path: &Path) -> Result<(), RegisterError> {
    std::fs::write(path, format_itk(transform)).map_err(|e| RegisterError::TransformFile {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn format_itk(transform: &Transform) -> String {
    let a = &transform.affine;
    let values: Vec<String> = (0..3)
        .flat_map(|r| (0..3).map(move |c| a[r][c]))
        .chain((0..3).map(|r| a[r][3]))
        .map(|v| format!("{v:.17e}"))
        .collect();
    format!(
        "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\nParameters: {}\nFixedParameters: 0 0 0\n",
        values.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_transforms_read_back_exactly() {
        let t = Transform::rigid([0.1, 0.2, -0.3], [4.0, -5.5, 6.25], [1.0, 2.0, 3.0]);
        let back = parse(&format_itk(&t)).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn matrix_offset_uses_its_centre_and_euler_its_order() {
        let text = "#Insight Transform File V1.0\n#Transform 0\nTransform: MatrixOffsetTransformBase_double_3_3\nParameters: 0 -1 0 1 0 0 0 0 1 1 2 3\nFixedParameters: 10 0 0\n";
        let t = parse(text).unwrap();
        // x -> M (x - c) + c + t with c = (10, 0, 0): the centre goes to c + t.
        assert_eq!(t.apply([10.0, 0.0, 0.0]), [11.0, 2.0, 3.0]);
        assert_eq!(t.apply([11.0, 0.0, 0.0]), [11.0, 3.0, 3.0]);
        let half = std::f64::consts::FRAC_PI_2;
        let euler = format!(
            "#Insight Transform File V1.0\nTransform: Euler3DTransform_double_3_3\nParameters: {half} 0 {half} 0 0 0\nFixedParameters: 0 0 0 0\n"
        );
        // ZXY: Rz(Rx(y)) = Rz(z) = z.
        let z = parse(&euler).unwrap().apply([0.0, 1.0, 0.0]);
        assert!((z[2] - 1.0).abs() < 1e-12, "{z:?}");
        assert!(parse("Transform: AffineTransform_double_3_3").is_err());
        assert!(
            parse(&text.replace("1 2 3\n", "1 2\n"))
                .unwrap_err()
                .contains("12 parameters")
        );
    }
}
