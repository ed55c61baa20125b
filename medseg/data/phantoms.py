"""The image generators behind :mod:`medseg.data.synthetic`: one function per dataset kind.

Each ``_<kind>(rng, size)`` returns the image (one array, channels last for RGB; or a list of
arrays, one file per channel), the label map and the RAS affine; what the kinds look like and why
is in :mod:`medseg.data.synthetic`'s docstring. Writing, layouts and ``dataset.json`` live there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage


# -- nuclei2d ----------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``sigma`` voxels."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def _nucleus(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    """Mask of one blob: an ellipse with a wavy outline (low radial harmonics)."""
    ratio = rng.uniform(1.0, 1.6)
    angle = rng.uniform(0, math.pi)
    dy, dx = yy - cy, xx - cx
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    a, b = r * math.sqrt(ratio), r / math.sqrt(ratio)
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    theta = np.arctan2(v, u)
    wobble = sum(rng.uniform(0.0, 0.08) * np.cos(k * theta + rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5))
    return rho <= 1.0 + wobble


def nuclei2d(rng: np.random.Generator, size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One microscopy-like image (uint8, PIL order: W, H) and its 0/1 mask; identity affine."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    scale = math.sqrt(h * w) / 128.0
    mask = np.zeros((h, w), bool)
    signal = np.zeros((h, w), np.float32)
    centres: list[tuple[float, float, float]] = []
    target = int(rng.integers(7, 17) * scale**2)
    for _ in range(target * 20):
        if len(centres) >= target:
            break
        r = rng.uniform(4.0, 10.5) * scale ** 0.5
        if centres and rng.random() < 0.35:  # touch a neighbour
            py, px, pr = centres[int(rng.integers(len(centres)))]
            angle = rng.uniform(0, 2 * math.pi)
            dist = (pr + r) * rng.uniform(0.85, 1.0)
            cy, cx = py + dist * math.sin(angle), px + dist * math.cos(angle)
        else:
            cy, cx = rng.uniform(-2, h + 2), rng.uniform(-2, w + 2)
        if any(math.hypot(cy - py, cx - px) < 0.8 * (r + pr) for py, px, pr in centres):
            continue
        blob = _nucleus(rng, yy, xx, cy, cx, r)
        if blob.sum() < 12:
            continue
        centres.append((cy, cx, r))
        brightness = rng.uniform(0.3, 1.0)
        texture = 1.0 + 0.22 * _smooth_noise(rng, (h, w), 1.2)
        signal = np.where(blob & ~mask, brightness * texture, signal)
        mask |= blob
    for _ in range(int(rng.integers(2, 7) * scale**2)):  # unlabelled debris: small bright specks
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        speck = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(0.8, 2.0) ** 2
        signal = np.where(speck & ~mask, rng.uniform(0.4, 0.9), signal)
    background = rng.uniform(0.04, 0.12) * (1.0 + 0.3 * _smooth_noise(rng, (h, w), 12.0))
    image = ndimage.gaussian_filter(signal, rng.uniform(0.7, 1.6)) + background
    gy, gx = rng.uniform(-0.5, 0.5, 2)  # uneven illumination: a tilt and a broad bump
    illumination = 1.0 + gy * (yy / h - 0.5) + gx * (xx / w - 0.5) + 0.25 * _smooth_noise(rng, (h, w), 30.0)
    image = np.clip(image * np.clip(illumination, 0.45, 1.6), 0, None)
    peak = rng.uniform(25.0, 90.0)  # photons at brightness 1: Poisson shot noise
    image = rng.poisson(image * peak) / peak + rng.normal(0, 0.02, image.shape)
    pixels = np.clip(image * 190.0, 0, 255).astype(np.uint8)
    return pixels.T.copy(), mask.T.astype(np.uint8), np.eye(3)


# -- organ3d -----------------------------------------------------------------------------------------
def _rotation(rz: float, rx: float) -> np.ndarray:
    cz, sz, cx, sx = math.cos(rz), math.sin(rz), math.cos(rx), math.sin(rx)
    z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return z @ x


def organ3d(rng: np.random.Generator, size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One CT-like volume (int16 HU) and its labels (0 background, 1 organ, 2 lesion) with an oblique affine."""
    # about 1.5 x 1.5 x 3 mm at the default 64 x 64 x 32: the field of view (~96 mm) is the same at any size
    spacing = np.array([1.5, 1.5, 3.0]) * (np.array([64, 64, 32]) / np.array(size)) * rng.uniform(0.92, 1.08, 3)
    spacing[1] = spacing[0]
    direction = _rotation(math.radians(rng.uniform(-20, 20)), math.radians(rng.uniform(-6, 6)))
    if rng.random() < 0.5:  # stored like a DICOM conversion: LPS voxel order
        direction = direction @ np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(spacing)
    centre_vox = (np.array(size) - 1) / 2.0
    centre_world = rng.uniform(-120, 120, 3)
    affine[:3, 3] = centre_world - affine[:3, :3] @ centre_vox
    # world coordinates (mm, RAS) of every voxel, relative to the scan centre
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in size], indexing="ij"), -1)
    p = (grid - centre_vox.astype(np.float32)) @ affine[:3, :3].T.astype(np.float32)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    warp = 6.0 * _smooth_noise(rng, size, 6.0)  # mm: irregular outlines

    body_a, body_b = rng.uniform(38, 44), rng.uniform(28, 33)
    body_r = np.sqrt((x / body_a) ** 2 + (y / body_b) ** 2)
    body = body_r * (1 + 0.02 * warp / 6.0) <= 1.0
    fat = body & (body_r > 1.0 - rng.uniform(0.08, 0.14))
    spine = ((x / 7.0) ** 2 + ((y + body_b * 0.62) / 7.0) ** 2) <= 1.0
    side = 1.0 if rng.random() < 0.5 else -1.0  # the organ lies right or left of the midline
    oc = np.array([side * rng.uniform(12, 17), rng.uniform(-3, 6), rng.uniform(-6, 6)])
    oa = np.array([rng.uniform(16, 20), rng.uniform(12, 15), rng.uniform(28, 36)])
    organ_f = ((x - oc[0]) / oa[0]) ** 2 + ((y - oc[1]) / oa[1]) ** 2 + ((z - oc[2]) / oa[2]) ** 2
    organ = (organ_f + warp / 20.0 <= 1.0) & body
    dc = np.array([-side * rng.uniform(14, 18), rng.uniform(-12, -6), rng.uniform(-8, 8)])  # distractor
    da = np.array([rng.uniform(6, 8), rng.uniform(7, 10), rng.uniform(14, 20)])
    distractor = (((x - dc[0]) / da[0]) ** 2 + ((y - dc[1]) / da[1]) ** 2 + ((z - dc[2]) / da[2]) ** 2) <= 1.0
    distractor &= body & ~organ
    lesion = np.zeros(size, bool)
    inside = np.argwhere(ndimage.binary_erosion(organ, iterations=2))
    if len(inside):
        c = p[tuple(inside[int(rng.integers(len(inside)))])]
        radius = rng.uniform(5.5, 10.0)
        lesion = (np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) + warp / 4.0 <= radius) & organ

    organ_hu = rng.uniform(95, 135)
    hu = np.full(size, -1000.0, np.float32)
    hu[body] = rng.uniform(35, 55)
    hu[fat] = rng.uniform(-110, -80)
    hu[spine & body] = rng.uniform(450, 750)
    hu[distractor] = organ_hu + rng.uniform(-15, 15)
    hu[organ] = organ_hu
    hu[lesion] = organ_hu - rng.uniform(35, 65)
    hu += 8.0 * _smooth_noise(rng, size, 3.0) * body  # tissue texture
    hu = ndimage.gaussian_filter(hu, 0.6) + rng.normal(0, rng.uniform(10, 18), size)
    labels = np.where(lesion, 2, np.where(organ, 1, 0)).astype(np.uint8)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16), labels, affine


def _broad_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    """:func:`_smooth_noise` for long correlation lengths: made on a grid 4-8x coarser, then interpolated."""
    factor = max(1, min(8, int(sigma // 4)))
    coarse = _smooth_noise(rng, [math.ceil(n / factor) + 1 for n in shape], sigma / factor)
    field = ndimage.zoom(coarse, factor, order=1)[tuple(slice(0, n) for n in shape)]
    return (field - field.mean()) / (field.std() + 1e-8)


# -- micro2d_small -----------------------------------------------------------------------------------
def _place_blobs(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, fraction: float, radii: tuple[float, float]
) -> list[np.ndarray]:
    """Small wavy blobs, some touching a neighbour, until they cover ``fraction`` of the image."""
    h, w = yy.shape
    covered = np.zeros((h, w), bool)
    blobs: list[np.ndarray] = []
    centres: list[tuple[float, float, float]] = []
    for _ in range(4000):
        if covered.sum() >= fraction * h * w:
            break
        r = rng.uniform(*radii)
        if centres and rng.random() < 0.3:  # a cluster: next to an earlier one
            py, px, pr = centres[int(rng.integers(len(centres)))]
            angle = rng.uniform(0, 2 * math.pi)
            cy, cx = py + (pr + r) * math.sin(angle), px + (pr + r) * math.cos(angle)
        else:
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if any(math.hypot(cy - py, cx - px) < 0.85 * (r + pr) for py, px, pr in centres):
            continue
        blob = _nucleus(rng, yy, xx, cy, cx, r) & ~covered
        if blob.sum() < 6:
            continue
        centres.append((cy, cx, r))
        blobs.append(blob)
        covered |= blob
    return blobs


def micro2d_small(rng: np.random.Generator, size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 16-bit camera frame of many small cells (uint16, PIL order: W, H) and its 0/1 mask."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    blobs = _place_blobs(rng, yy, xx, rng.uniform(0.055, 0.095), (2.0, 6.0))
    mask = np.zeros((h, w), bool)
    signal = np.zeros((h, w), np.float32)
    for blob in blobs:  # photo-electrons per pixel at full illumination; some cells dim
        texture = 1.0 + 0.15 * _smooth_noise(rng, (h, w), 1.0)
        signal = np.where(blob, rng.uniform(0.2, 1.0) * texture, signal)
        mask |= blob
    peak = rng.uniform(2200.0, 3300.0)
    signal *= peak
    for _ in range(int(rng.integers(1, 4))):  # out-of-focus cells: broad, dim, unlabelled
        cy, cx, s = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5.0, 10.0)
        signal += rng.uniform(0.08, 0.25) * peak * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    signal = ndimage.gaussian_filter(signal, rng.uniform(0.6, 1.1))  # the microscope's blur
    autofluorescence = rng.uniform(180.0, 380.0) * (1.0 + 0.15 * _broad_noise(rng, (h, w), 20.0))
    gy, gx = rng.uniform(-0.5, 0.5, 2)  # uneven illumination: a tilt, a broad bump, a vignette
    corner = ((yy / h - 0.5) ** 2 + (xx / w - 0.5) ** 2) / 0.5
    light = (1.0 + gy * (yy / h - 0.5) + gx * (xx / w - 0.5) + 0.15 * _broad_noise(rng, (h, w), 40.0)
             - rng.uniform(0.1, 0.3) * corner)
    electrons = np.clip((signal + autofluorescence) * np.clip(light, 0.4, 1.5), 0, None)
    gain = rng.uniform(0.8, 2.5)  # ADU per photo-electron: shot noise grows with it
    adu = rng.uniform(100.0, 200.0) + gain * rng.poisson(electrons / gain) + rng.normal(0, 6.0, (h, w))
    hot = rng.integers(0, h * w, int(rng.integers(3, 12)))  # hot pixels
    adu.flat[hot] = rng.uniform(2000, 4000, hot.size)
    pixels = np.clip(np.rint(adu), 0, 65535).astype(np.uint16)
    return pixels.T.copy(), mask.T.astype(np.uint8), np.eye(3)


# -- derm2d_rgb --------------------------------------------------------------------------------------
def _lesion_level(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A level function whose sublevel sets are one irregular, lobed lesion near the centre."""
    h, w = yy.shape
    cy, cx = h * rng.uniform(0.4, 0.6), w * rng.uniform(0.4, 0.6)
    ratio, angle = rng.uniform(1.0, 1.7), rng.uniform(0, math.pi)
    dy, dx = (yy - cy) / h, (xx - cx) / h
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    rho = np.sqrt(u * u / ratio + v * v * ratio)
    theta = np.arctan2(v, u)
    lobes = sum(rng.uniform(0.0, 0.14 / k**0.5) * np.cos(k * theta + rng.uniform(0, 2 * math.pi)) for k in range(2, 9))
    return rho * (1.0 - lobes) + 0.025 * _smooth_noise(rng, (h, w), 6.0)


def _hairs(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Opacity (0-0.9) of up to eight hair-like curves: quadratic Bézier strokes 1-2 px wide."""
    strokes = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(0, 9))):
        p0, p1, p2 = (rng.uniform([-0.1 * h, -0.1 * w], [1.1 * h, 1.1 * w]) for _ in range(3))
        t = np.linspace(0.0, 1.0, 4 * (h + w))[:, None]
        points = np.rint((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t * t * p2).astype(int)
        inside = (points[:, 0] >= 0) & (points[:, 0] < h) & (points[:, 1] >= 0) & (points[:, 1] < w)
        strokes[points[inside, 0], points[inside, 1]] = True
    if not strokes.any():
        return np.zeros((h, w), np.float32)
    distance = ndimage.distance_transform_edt(~strokes)
    return np.clip(1.0 - (distance - rng.uniform(0.3, 1.0)), 0, 1).astype(np.float32) * rng.uniform(0.6, 0.9)


def derm2d_rgb(rng: np.random.Generator, size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One dermoscopy-like RGB photograph (uint8, W, H, 3) of one pigmented lesion and its 0/1 mask."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    skin_rgb = np.array([rng.uniform(195, 235), rng.uniform(140, 180), rng.uniform(115, 155)], np.float32)
    skin = skin_rgb * (1.0 + 0.05 * _smooth_noise(rng, (h, w), 2.0) + 0.05 * _smooth_noise(rng, (h, w), 14.0))[..., None]
    level = _lesion_level(rng, yy, xx)
    threshold = float(np.quantile(level, rng.uniform(0.16, 0.38)))
    lesion, count = ndimage.label(level <= threshold)
    if count > 1:  # one lesion: the largest piece, holes filled
        lesion = lesion == 1 + int(np.argmax(ndimage.sum(lesion > 0, lesion, range(1, count + 1))))
    lesion = ndimage.binary_fill_holes(lesion > 0)
    depth = np.clip((threshold - level) / threshold, 0, 1)  # 0 at the border, 1 in the middle
    edge = np.clip(0.5 + (threshold - level) / (rng.uniform(0.006, 0.02)), 0, 1)  # a soft, fuzzy border
    outer = np.array([rng.uniform(140, 175), rng.uniform(90, 115), rng.uniform(65, 90)], np.float32)
    inner = outer * rng.uniform(0.35, 0.6)
    pigment = outer + (inner - outer) * (depth ** rng.uniform(0.5, 1.2))[..., None]
    network = 1.0 + 0.12 * _smooth_noise(rng, (h, w), 1.5) + 0.1 * _smooth_noise(rng, (h, w), 5.0)
    pigment = pigment * network[..., None]
    if rng.random() < 0.4:  # a blue-white veil inside some lesions
        veil = np.clip(_smooth_noise(rng, (h, w), 10.0) - 0.5, 0, 1)[..., None] * (depth > 0.3)[..., None]
        pigment = pigment * (1 - 0.6 * veil) + np.array([120, 130, 160], np.float32) * 0.6 * veil
    alpha = (edge * ndimage.binary_dilation(lesion, iterations=3))[..., None]
    image = skin * (1 - alpha) + pigment * alpha
    hair = _hairs(rng, h, w)[..., None]
    image = image * (1 - hair) + np.array([45, 32, 26], np.float32) * hair
    radius = np.sqrt(((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2) / rng.uniform(1.15, 1.4)
    vignette = np.clip(1.0 - 0.45 * radius**2.5, 0, 1) * (radius < 1.0)  # the dermoscope's round field
    image = image * vignette[..., None] * rng.uniform(0.85, 1.1, 3)  # and a colour cast
    image = image + rng.normal(0, 2.5, image.shape)
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(1, 0, 2)), lesion.T.astype(np.uint8), np.eye(3)


# -- ct3d_lesion -------------------------------------------------------------------------------------
def _scanner_affine(
    rng: np.random.Generator, size: tuple[int, ...], spacing: np.ndarray, max_degrees: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """A slightly oblique RAS affine stored in LPS voxel order (as DICOM converters write it), with a
    non-zero origin, and every voxel's world position (mm) relative to the volume's centre."""
    rz, rx = (math.radians(rng.uniform(1.0, m) * rng.choice([-1, 1])) for m in max_degrees)
    affine = np.eye(4)
    affine[:3, :3] = _rotation(rz, rx) @ np.diag([-1.0, -1.0, 1.0]) @ np.diag(spacing)
    centre_vox = (np.array(size) - 1) / 2.0
    affine[:3, 3] = rng.uniform([-30, -220, -700], [30, -140, -400]) - affine[:3, :3] @ centre_vox
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in size], indexing="ij"), -1)
    return affine, (grid - centre_vox.astype(np.float32)) @ affine[:3, :3].T.astype(np.float32)


def _ellipsoid(p: np.ndarray, centre: Sequence[float], axes: Sequence[float]) -> np.ndarray:
    """Normalised squared radius of an axis-aligned ellipsoid (<= 1 inside) at world points ``p``."""
    return sum(((p[..., i] - centre[i]) / axes[i]) ** 2 for i in range(3))


def _lesions(
    rng: np.random.Generator, p: np.ndarray, organ: np.ndarray, spacing: np.ndarray, warp: np.ndarray
) -> np.ndarray:
    """One or two irregular blobs inside the organ together covering 0.2-0.55 % of the volume."""
    lesion = np.zeros(organ.shape, bool)
    depth = ndimage.distance_transform_edt(organ, sampling=spacing)
    total = rng.uniform(0.002, 0.0055) * organ.size
    shares = rng.dirichlet([3.0, 3.0])[: int(rng.integers(1, 3))]
    for share in shares / shares.sum():
        voxels = int(share * total)
        radius = (3 * voxels * float(np.prod(spacing)) / (4 * math.pi)) ** (1 / 3)
        candidates = np.argwhere((depth >= min(radius + 2.0, depth.max() * 0.9)) & ~lesion)
        if not len(candidates):
            continue
        c = p[tuple(candidates[int(rng.integers(len(candidates)))])]
        level = np.sqrt(((p - c) ** 2).sum(-1)) / radius + 0.08 * warp
        level[~organ | lesion] = np.inf
        cut = np.partition(level.ravel(), voxels)[voxels]
        lesion |= level < cut
    return lesion


def ct3d_lesion(rng: np.random.Generator, size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An abdominal CT crop (int16 HU): 0 background, 1 organ (~60 HU), 2 small hypodense lesions."""
    spacing = np.array([0.78, 0.78, 3.0]) * (np.array([160, 160, 40]) / np.array(size))
    spacing[:2] *= rng.uniform(0.95, 1.05)
    affine, p = _scanner_affine(rng, size, spacing, (6.0, 4.0))
    x, y = p[..., 0], p[..., 1]
    warp = _smooth_noise(rng, size, 5.0)
    body_a, body_b = rng.uniform(52, 58), rng.uniform(42, 48)
    body_r = np.sqrt((x / body_a) ** 2 + (y / body_b) ** 2) * (1 + 0.015 * warp)
    body, fat = body_r <= 1.0, (body_r <= 1.0) & (body_r > 1.0 - rng.uniform(0.1, 0.18))
    vertebra = (x / 11.0) ** 2 + ((y + 0.55 * body_b) / 10.0) ** 2
    side = rng.choice([-1.0, 1.0])  # the organ lies right or left of the midline
    oc = [side * rng.uniform(14, 20), rng.uniform(-4, 8), rng.uniform(-10, 10)]
    oa = [rng.uniform(26, 32), rng.uniform(20, 26), rng.uniform(45, 60)]
    organ = (_ellipsoid(p, oc, oa) + 0.12 * warp <= 1.0) & body & ~fat & (vertebra > 1.4)
    cyst_c = [oc[0] - side * rng.uniform(0.5, 0.8) * oa[0], oc[1] - rng.uniform(0.7, 1.0) * oa[1], oc[2]]
    cyst = (_ellipsoid(p, cyst_c, [rng.uniform(7, 10), rng.uniform(6, 9), rng.uniform(12, 18)]) <= 1.0) & body & ~organ
    kidney_c = [-side * rng.uniform(18, 26), -0.3 * body_b, rng.uniform(-15, 15)]
    kidney = (_ellipsoid(p, kidney_c, [rng.uniform(10, 13), rng.uniform(12, 16), rng.uniform(28, 36)]) <= 1.0) & body
    gas = (_smooth_noise(rng, size, 3.0) > 2.3) & body & ~fat & ~organ & (vertebra > 2.0)  # bowel gas
    lesion = _lesions(rng, p, organ, spacing, warp)
    organ_hu = rng.uniform(55, 70)
    hu = np.full(size, -1000.0, np.float32)
    hu[body] = rng.uniform(35, 45)
    hu[fat] = rng.uniform(-115, -85)
    hu[vertebra <= 1.0] = rng.uniform(650, 750)
    hu[vertebra <= 0.55] = rng.uniform(180, 260)  # marrow inside the cortical shell
    hu[kidney & ~organ] = rng.uniform(140, 180)
    hu[cyst] = rng.uniform(0, 15)
    hu[gas] = rng.uniform(-950, -850)
    hu[organ] = organ_hu
    hu[lesion] = organ_hu - rng.uniform(25, 45)
    hu += 6.0 * _smooth_noise(rng, size, 2.0) * body  # tissue texture
    hu = ndimage.gaussian_filter(hu, (0.7, 0.7, 0.4)) + rng.normal(0, rng.uniform(10, 16), size)
    labels = np.where(lesion, 2, np.where(organ, 1, 0)).astype(np.uint8)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16), labels, affine


# -- mri3d_2ch ---------------------------------------------------------------------------------------
def _brain(rng: np.random.Generator, p: np.ndarray, size: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Masks of a head: scalp, skull, CSF, grey matter, white matter, ventricles (world mm)."""
    axes = np.array([rng.uniform(40, 44), rng.uniform(48, 52), rng.uniform(40, 44)])
    warp = _smooth_noise(rng, size, 3.0)
    r = np.sqrt(_ellipsoid(p, [0, 0, 0], axes))
    scale = float(axes.mean())
    csf_outer = r <= 1.0 - 9.0 / scale
    brain = r <= 1.0 - 11.0 / scale
    wm = (r + 0.05 * warp <= 1.0 - 15.0 / scale) & brain
    ventricles = np.zeros(r.shape, bool)
    for side in (-1.0, 1.0):
        vc = [side * rng.uniform(5, 8), rng.uniform(-4, 4), rng.uniform(2, 8)]
        ventricles |= _ellipsoid(p, vc, [rng.uniform(3, 5), rng.uniform(14, 18), rng.uniform(5, 8)]) <= 1.0
    return {
        "scalp": (r <= 1.0) & (r > 1.0 - 4.0 / scale), "skull": (r <= 1.0 - 4.0 / scale) & ~csf_outer,
        "csf": (csf_outer & ~brain) | ventricles, "gm": brain & ~wm & ~ventricles, "wm": wm & ~ventricles,
    }


def _tumour(rng: np.random.Generator, p: np.ndarray, tissue: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A lesion in the white matter: an enhancing-free core and the oedema around it."""
    depth = ndimage.distance_transform_edt(tissue["wm"])  # voxels
    inside = np.argwhere(depth >= min(6.0, 0.7 * depth.max()))
    c = p[tuple(inside[int(rng.integers(len(inside)))])]
    distance = np.sqrt(((p - c) ** 2).sum(-1))
    warp = _smooth_noise(rng, distance.shape, 4.0)
    core_r = rng.uniform(6.0, 11.0)
    core = (distance + 1.5 * warp <= core_r) & (tissue["wm"] | tissue["gm"])
    oedema = (distance + 4.0 * warp <= core_r + rng.uniform(7.0, 15.0)) & (tissue["wm"] | tissue["gm"]) & ~core
    return core, oedema


#: Relative intensity of each tissue in (T1, FLAIR); the oedema and core rows apply on top of the brain.
_MRI_CONTRAST = {
    "scalp": (1.1, 0.65), "skull": (0.08, 0.08), "csf": (0.22, 0.1), "gm": (0.62, 0.72), "wm": (1.0, 0.55),
    "oedema": (0.74, 1.15), "core": (0.35, 0.85),
}


def mri3d_2ch(rng: np.random.Generator, size: tuple[int, ...]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """T1-like (uint16) and FLAIR-like (float32) head volumes with a bias field and scanner scaling each;
    labels 0 background, 1 oedema (bright in FLAIR only), 2 core (dark in T1, mixed in FLAIR)."""
    spacing = np.array([1.0, 1.0, 1.2]) * (np.array([96, 112, 80]) / np.array(size))
    affine, p = _scanner_affine(rng, size, spacing, (4.0, 4.0))
    tissue = _brain(rng, p, size)
    core, oedema = _tumour(rng, p, tissue)
    tissue.update(oedema=oedema, core=core)
    spots = (_smooth_noise(rng, size, 1.5) > 2.8) & tissue["wm"] & ~oedema & ~core  # unlabelled FLAIR spots
    channels = []
    for c in range(2):
        s = np.zeros(size, np.float32)
        for name, mask in tissue.items():
            s[mask] = _MRI_CONTRAST[name][c] * rng.uniform(0.95, 1.05)
        if c == 1:
            s[spots] = 1.0
        s *= 1.0 + 0.05 * _smooth_noise(rng, size, 1.5) * (s > 0.15)  # texture
        s = ndimage.gaussian_filter(s, 0.6)
        bias = np.exp(0.18 * _broad_noise(rng, size, 25.0) + rng.uniform(-0.15, 0.15) * p[..., 2] / 50.0)
        sigma = rng.uniform(0.015, 0.035)  # Rician noise: the magnitude of complex Gaussian noise
        s = np.hypot(s * bias + rng.normal(0, sigma, size), rng.normal(0, sigma, size))
        channels.append(s.astype(np.float32))
    t1 = np.clip(np.rint(channels[0] * math.exp(rng.uniform(math.log(300), math.log(3000)))), 0, 65535)
    flair = channels[1] * np.float32(math.exp(rng.uniform(math.log(0.5), math.log(2000))))
    labels = np.where(core, 2, np.where(oedema, 1, 0)).astype(np.uint8)
    return [t1.astype(np.uint16), flair.astype(np.float32)], labels, affine
