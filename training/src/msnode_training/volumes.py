"""Volumes as numpy arrays in (z, y, x) order, as SimpleITK returns them, with the geometry to write them back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Geometry:
    """Physical placement of a (z, y, x) array. `spacing_zyx` is in mm; origin and direction are ITK's (x, y, z)."""

    spacing_zyx: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    direction: tuple[float, ...]
    shape_zyx: tuple[int, int, int]

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing_zyx))

    @classmethod
    def from_image(cls, image: sitk.Image) -> "Geometry":
        spacing = image.GetSpacing()
        size = image.GetSize()
        return cls(
            spacing_zyx=(float(spacing[2]), float(spacing[1]), float(spacing[0])),
            origin_xyz=tuple(float(v) for v in image.GetOrigin()),
            direction=tuple(float(v) for v in image.GetDirection()),
            shape_zyx=(int(size[2]), int(size[1]), int(size[0])),
        )

    def to_image(self, array: np.ndarray) -> sitk.Image:
        if tuple(array.shape) != self.shape_zyx:
            raise ValueError(f"array shape {array.shape} does not match geometry {self.shape_zyx}")
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(tuple(reversed(self.spacing_zyx)))
        image.SetOrigin(self.origin_xyz)
        image.SetDirection(self.direction)
        return image

    def reference_image(self) -> sitk.Image:
        return self.to_image(np.zeros(self.shape_zyx, dtype=np.uint8))

    def cropped(self, box: tuple[slice, slice, slice]) -> "Geometry":
        """The geometry of `array[box]` (box in (z, y, x) order, unit steps)."""
        ranges = [range(*b.indices(n)) for b, n in zip(box, self.shape_zyx)]
        start = [r.start for r in ranges]
        origin = self.reference_image().TransformIndexToPhysicalPoint([start[2], start[1], start[0]])
        return Geometry(self.spacing_zyx, tuple(origin), self.direction, tuple(len(r) for r in ranges))

    def with_spacing(self, spacing_zyx: tuple[float, float, float]) -> "Geometry":
        """Same field of view sampled at another spacing (first voxel centre kept)."""
        extent = np.array(self.shape_zyx) * np.array(self.spacing_zyx)
        shape = tuple(int(max(1, round(e / s))) for e, s in zip(extent, spacing_zyx))
        return Geometry(tuple(float(s) for s in spacing_zyx), self.origin_xyz, self.direction, shape)


def read_volume(path: Path, dtype: type = np.float32) -> tuple[np.ndarray, Geometry]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image).astype(dtype), Geometry.from_image(image)


def write_volume(path: Path, array: np.ndarray, geometry: Geometry) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(geometry.to_image(array), str(path), useCompression=True)


def resample_to(image: sitk.Image, target: Geometry, interpolator: int = sitk.sitkLinear,
                transform: sitk.Transform | None = None) -> np.ndarray:
    """Resample `image` onto `target`; `transform` maps target points to `image` points, as ITK transforms do."""
    resampled = sitk.Resample(image, target.reference_image(), transform or sitk.Transform(), interpolator, 0.0,
                              image.GetPixelID())
    return sitk.GetArrayFromImage(resampled)


def resample_array(array: np.ndarray, source: Geometry, target: Geometry,
                   interpolator: int = sitk.sitkLinear) -> np.ndarray:
    return resample_to(source.to_image(array), target, interpolator)
