"""Rendering: one phantom radiograph (and its masks) as a pure function of its planned case.
SYNTHETIC DATA, NOT MEDICAL DATA."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from core_model.data.phantoms.plan import LOBES, TUNE, ZONES, Case


def _ramp(v, width):
    """Soft step: 0 below -width/2, 1 above +width/2 (v and width in the same units)."""
    out = v * np.float32(1.0 / width)
    out += np.float32(0.5)
    np.maximum(out, np.float32(0.0), out=out)
    np.minimum(out, np.float32(1.0), out=out)
    return out


def _smooth_noise(rng, shape, grid, *, upsample=Image.BICUBIC) -> np.ndarray:
    """Low-frequency noise (unit std before resampling) on ``shape`` from a coarse random grid."""
    h, w = shape
    gh, gw = max(2, int(grid[0])), max(2, int(grid[1]))
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), upsample), dtype=np.float32)


@dataclass
class Rendered:
    image: np.ndarray  # uint8 (H, W): the PNG
    linear: np.ndarray  # float32 (H, W): display values in [0, 1] before 8-bit rounding (unclipped)
    mask: np.ndarray | None  # uint8 0/255: pneumothorax
    lesion: np.ndarray | None  # uint8 0/255: lesion region of any abnormal finding


@dataclass
class _Anatomy:
    """Patient-specific shape parameters (shared by all studies of one patient)."""

    thorax_half_width: float  # share of the image width
    lung_height: float  # share of the image height
    heart_scale: float
    heart_shift: float
    dome_height: float
    left_dome_drop: float
    lung_round: float
    female: bool
    soft_tissue: float
    bone_density: float
    rib_spacing: float
    n_ribs: int
    neck_width: float
    shoulder: float
    mediastinum: float
    heart_tilt: float


def _anatomy(rng) -> _Anatomy:
    return _Anatomy(
        thorax_half_width=float(rng.uniform(0.33, 0.42)),
        lung_height=float(rng.uniform(0.56, 0.68)),
        heart_scale=float(rng.uniform(0.9, 1.12)),
        heart_shift=float(rng.uniform(0.08, 0.18)),
        dome_height=float(rng.uniform(0.13, 0.22)),
        left_dome_drop=float(rng.uniform(0.02, 0.07)),
        lung_round=float(rng.uniform(0.9, 1.1)),
        female=bool(rng.random() < 0.5),
        soft_tissue=float(rng.uniform(0.8, 1.2)),
        bone_density=float(rng.uniform(0.7, 1.2)),
        rib_spacing=float(rng.uniform(0.092, 0.108)),
        n_ribs=int(rng.integers(9, 11)),
        neck_width=float(rng.uniform(0.28, 0.36)),
        shoulder=float(rng.uniform(0.9, 1.15)),
        mediastinum=float(rng.uniform(0.11, 0.14)),
        heart_tilt=float(rng.uniform(15, 35)),
    )


def render_case(case: Case) -> Rendered:
    """Draw one phantom (pure function of the case)."""
    rng = np.random.default_rng(case.render_seed)
    anat = _anatomy(np.random.default_rng(case.patient_seed))
    H, W = case.height, case.width
    ap = case.view == "AP"

    # --- geometry: thorax coordinates X (lateral, +: image right = patient left) and Y (0 apex,
    # 1 costophrenic angle), with positioning jitter and a small rotation.
    g = TUNE["geometry"]
    hw = (
        (0.375 + (anat.thorax_half_width - 0.375) * g)
        * W
        * (1 + (rng.uniform(0.95, 1.05) - 1) * g)
        * (1.04 if ap else 1.0)
    )
    th = (0.62 + (anat.lung_height - 0.62) * g) * H * (1 + (rng.uniform(0.95, 1.05) - 1) * g) * (0.94 if ap else 1.0)
    x0 = W * (0.5 + rng.uniform(-0.04, 0.04) * g)
    y_apex = H * (0.135 + (rng.uniform(0.10, 0.17) - 0.135) * g)
    if y_apex + th > H * 0.9:
        th = H * 0.9 - y_apex
    angle = math.radians((rng.uniform(-4, 4) if not ap else rng.uniform(-6, 6)) * g)
    ca, sa = math.cos(angle), math.sin(angle)
    # Smooth anatomy is computed on a half-resolution grid (4x fewer pixels) and upsampled;
    # vessels, devices and noise are drawn at full resolution.
    f = 2 if max(H, W) >= 256 else 1
    h, w = -(-H // f), -(-W // f)
    yy = ((np.arange(h, dtype=np.float32) + 0.5) * (H / h) - 0.5)[:, None]
    xx = ((np.arange(w, dtype=np.float32) + 0.5) * (W / w) - 0.5)[None, :]
    dx, dy = xx - x0, yy - (y_apex + th * 0.5)
    X = (dx * ca + dy * sa) / hw
    Y = (-dx * sa + dy * ca) / th + 0.5
    del yy, xx, dx, dy
    px = 1.0 / hw  # one pixel in X units
    py = 1.0 / th
    Q = np.abs(X)
    right = X < 0  # patient's right = image left

    # --- body and soft tissue
    body_w = 1.18 + 0.06 * anat.soft_tissue
    torso = np.sqrt(np.clip(1.0 - (X / body_w) ** 2, 0.0, 1.0))
    neck = _ramp(anat.neck_width - Q, 0.12) * _ramp(-0.05 - Y, 0.25) * 0.85
    sh_y = -0.12 + 0.04 * (1 if ap else 0)
    shoulders = np.clip(1.0 - ((Q - 0.95 * anat.shoulder) / 0.75) ** 2 - ((Y - sh_y - 0.1) / 0.28) ** 2, 0, 1) ** 0.5
    body = np.maximum(torso * _ramp(Y - sh_y, 30 * py), np.maximum(neck, shoulders))
    if rng.random() < 0.5:  # arms at the side
        arm_q = body_w + rng.uniform(0.05, 0.2)
        arm = np.clip(1 - ((Q - arm_q - 0.15) / 0.17) ** 2, 0, 1) ** 0.5 * _ramp(Y + 0.1, 0.2)
        body = np.maximum(body, arm * 0.8)
    soft = 0.50 * body * anat.soft_tissue**0.5

    # --- lungs (one function per side, in lateral coordinate Q)
    qc, yc = 0.50 * anat.lung_round, 0.95
    a, b = 1.0 - qc, 0.95
    f_out = 1.0 - ((Q - qc) / a) ** 2 - (np.minimum(Y - yc, 0.0) / b) ** 2  # 1 centre, 0 wall
    inspiration = rng.uniform(-0.03, 0.03) + (0.06 if ap else 0.0)
    dome_peak = np.where(
        right,
        np.float32(1.0 - anat.dome_height + inspiration),
        np.float32(1.0 - anat.dome_height + anat.left_dome_drop + inspiration),
    )
    dq_dome = (Q - 0.48) / 0.55
    dome = dome_peak + anat.dome_height * dq_dome**2 * np.where(dq_dome < 0, np.float32(0.45), np.float32(1.0))
    med = anat.mediastinum + 0.04 * _ramp(0.35 - Y, 0.3)  # mediastinum half width (wider at the top)
    hs = anat.heart_scale * (1.13 if ap else 1.0)
    hcx, hcy = anat.heart_shift, 0.80 + 0.5 * inspiration
    hrx, hry = 0.40 * hs, 0.27 * hs
    tilt = math.radians(anat.heart_tilt)
    hu = (X - hcx) * math.cos(tilt) + (Y - hcy) * (th / hw) * math.sin(tilt) * 0.6
    hv = -(X - hcx) * math.sin(tilt) + (Y - hcy) * math.cos(tilt)
    heart_f = 1.0 - (hu / hrx) ** 2 - (hv / hry) ** 2
    knob_f = 1.0 - ((X - 0.155) / 0.08) ** 2 - ((Y - 0.27) / 0.065) ** 2
    edge = 2.5 * px
    lung_raw = np.minimum(_ramp(f_out, 0.03), _ramp(Q - med, edge))
    lung_raw = np.minimum(lung_raw, _ramp(dome - Y, 2.5 * py))
    lung = np.minimum(lung_raw, 1.0 - _ramp(heart_f, 0.06))
    lung = np.minimum(lung, 1.0 - _ramp(knob_f, 0.1))

    # Air depth: darkest in the middle third of each lung, paler at the edges and the bases.
    depth = np.sqrt(np.clip(f_out, 0, 1)) * (0.75 + 0.25 * _ramp(0.85 - Y, 0.5))
    air = rng.uniform(0.28, 0.36)

    # --- lung markings: vessel trees drawn from each hilum, fading to the periphery.
    vessels = _vessel_field(rng, H, W, x0, y_apex, th, hw, ca, sa, anat, hcx)

    # --- pneumothorax
    ptx = np.zeros((h, w), dtype=np.float32)
    pleural_line = None
    if case.finding == "pneumothorax":
        side_mask = right if case.side == "right" else ~right
        t0, y_end = {
            "small": (rng.uniform(0.26, 0.33), rng.uniform(0.45, 0.6)),
            "moderate": (rng.uniform(0.38, 0.46), rng.uniform(0.7, 0.9)),
            "large": (rng.uniform(0.5, 0.6), 1.05),
        }[case.size]
        t0 = min(0.7, t0 * TUNE["pneumothorax_size"])
        t = t0 * _ramp(y_end - Y, 0.35) + 0.02
        # distance from the apical and lateral chest wall (the medial side counts as far away)
        dq = Q - qc
        dq = np.where(dq > 0, dq, 0.4 * dq)
        f_wall = 1.0 - (dq / a) ** 2 - (np.minimum(Y - yc, 0.0) / b) ** 2
        inside_cap = (f_wall < t) & side_mask
        ptx = np.where(inside_cap, lung, np.float32(0.0))
        ptx *= _ramp(t - f_wall, 0.012)
        line_w = 0.018
        pleural_line = (
            np.exp(-(((f_wall - t - 0.01) / line_w) ** 2)) * lung * side_mask * _ramp(y_end - Y + 0.1, 0.2)
        ).astype(np.float32)

    # --- airspace opacities replace part of the air in the lung (never brighter than soft tissue)
    lesion = None
    fill = None
    if case.finding == "pneumonia":
        fill, lesion = _consolidation(case, rng, X, Q, Y, right, lung, px)
    elif case.finding == "covid19":
        fill, lesion = _covid(case, rng, Q, Y, f_out, lung, h, w, H, W)

    # --- assemble: display brightness before the exposure curve
    img = soft.astype(np.float32)
    img -= lung * depth * air
    if fill is not None:  # thin lung at the edges: fill as if at least 90 % deep
        img += lung * fill * (air * np.maximum(depth, np.float32(0.9)))
    # heart and great vessels (denser than mediastinal fat), spine, trachea
    above_dome = _ramp(dome - Y + 0.04, 0.08)
    img += 0.02 * _ramp(heart_f, 0.3) * above_dome + 0.015 * _ramp(knob_f, 0.3)
    spine = _ramp(0.075 - Q, 2 * px) * _ramp(Y + 0.3, 0.2)
    vert = 0.5 + 0.5 * np.cos((Y * (1.0 / 0.085)) * 2 * np.pi)
    img += spine * (0.035 + 0.02 * vert) * anat.bone_density
    trachea = _ramp(0.035 - np.abs(X + 0.01 * Y), 2 * px) * _ramp(0.32 - Y, 0.08) * _ramp(Y + 0.4, 0.1)
    img -= 0.07 * trachea
    # hila
    hila = np.exp(-(((Q - 0.26) / 0.07) ** 2 + ((Y - 0.45) / 0.1) ** 2))
    img += 0.05 * hila * lung
    # lung markings (hidden inside a pneumothorax)
    mark_gain = rng.uniform(0.05, 0.08)
    mark_weight = mark_gain * lung * (1.0 - ptx) * (1.0 + 0.6 * (case.finding == "pneumothorax") * (ptx == 0))
    if fill is not None:
        mark_weight = mark_weight * (1.0 - 0.7 * fill)  # vessels vanish into the opacity
    # interstitial texture
    tex = _smooth_noise(rng, (h, w), (H // 12, W // 12))
    img += 0.012 * tex * lung * (1.0 - ptx)
    # ribs, clavicles, scapulae
    img += anat.bone_density * _ribs(X, Q, Y, anat, rng, px, ap) * (0.35 + 0.65 * lung)
    img += anat.bone_density * _clavicles(Q, Y, rng, ap)
    if ap:
        scap = np.clip(1 - ((Q - 1.02) / 0.16) ** 2 - ((Y - 0.28) / 0.3) ** 2, 0, 1) ** 0.5
        img += 0.05 * scap
    # abdomen below the domes: soft tissue; gastric bubble under the left dome
    below = 1.0 - _ramp(dome - Y, 3 * py)
    img += 0.04 * below * _ramp(1.0 - Q, 0.1) * body
    bubble = _ramp(1 - ((X - 0.45) / 0.14) ** 2 - ((Y - dome_peak - 0.16) / 0.07) ** 2, 0.3)
    img -= 0.08 * bubble * (~right) * below * (rng.random() < 0.7)
    if anat.female:
        for s in (-1, 1):
            br = np.clip(1 - ((X - s * 0.62) / 0.42) ** 2 - ((Y - 0.95) / 0.32) ** 2, 0, 1) ** 0.6
            img += 0.06 * br
    if case.finding == "pneumothorax":
        img -= ptx * rng.uniform(0.06, 0.09) * TUNE["pneumothorax_dark"]
        img += pleural_line * rng.uniform(0.07, 0.11)
        side_lung = lung * (1.0 - ptx) * (right if case.side == "right" else ~right)
        img += side_lung * {"small": 0.01, "moderate": 0.025, "large": 0.04}[case.size]  # collapsed lung
        lesion = ptx * lung
    img += 0.06  # air outside the body is not pitch black
    img *= 1.0 + rng.uniform(-0.06, 0.06) * (Y - 0.5)  # heel effect
    del X, Y, Q
    # --- to full resolution; add lung markings and devices (unrelated to the finding)
    if f > 1:
        img = _upsample(img, H, W, Image.BICUBIC)
        mark_weight = _upsample(mark_weight, H, W, Image.BILINEAR)
        if lesion is not None:
            lesion = _upsample(lesion, H, W, Image.BILINEAR)
    img += mark_weight * vessels
    img += _devices(rng, H, W, hw, th, x0, y_apex, ca, sa)
    if lesion is not None:
        lesion = lesion > 0.5

    # --- exposure, contrast, noise
    nu = TUNE["nuisance"]
    gamma = 1.0 + (rng.uniform(0.8, 1.25) - 1.0) * nu
    img = np.clip(img, 0, None) ** gamma
    lo = np.float32(np.percentile(img[::7, ::7], 0.5))
    hi = np.float32(np.percentile(img[::7, ::7], 99.8))
    contrast = 1.0 - (1.0 - rng.uniform(0.8, 1.0)) * nu
    brightness = 0.015 + (rng.uniform(-0.05, 0.08) - 0.015) * nu
    img = (img - lo) / max(hi - lo, 1e-3) * contrast + brightness
    sigma = rng.uniform(0.008, 0.03) * (1.3 if ap else 1.0) * nu
    noise = rng.standard_normal((H, W), dtype=np.float32)
    img += sigma * noise * (1.2 - 0.6 * np.clip(img, 0, 1))  # quantum noise: more in the dark
    img += 0.015 * _smooth_noise(rng, (H, W), (6, 6), upsample=Image.BILINEAR)
    if rng.random() < 0.4:  # collimation edges
        c = int(rng.integers(2, max(3, W // 30)))
        img[:, :c] = img[:, :c] * 0.2
        img[:, W - c :] = img[:, W - c :] * 0.2
    linear = img.astype(np.float32)
    out = np.clip(np.rint(linear * 255.0), 0, 255).astype(np.uint8)
    mask = None
    if case.finding == "pneumothorax":
        mask = np.where(lesion, 255, 0).astype(np.uint8)
    les = np.where(lesion, 255, 0).astype(np.uint8) if lesion is not None else None
    return Rendered(out, linear, mask, les)


def _upsample(a: np.ndarray, H: int, W: int, resample) -> np.ndarray:
    return np.array(Image.fromarray(np.ascontiguousarray(a, dtype=np.float32), mode="F").resize((W, H), resample))


def _to_pixels(xu, yu, x0, y_apex, th, hw, ca, sa):
    """Thorax coordinates -> pixel coordinates (inverse of the mapping in render_case)."""
    dx = xu * hw
    dy = (yu - 0.5) * th
    return x0 + dx * ca - dy * sa, (y_apex + th * 0.5) + dx * sa + dy * ca


def _vessel_field(rng, H, W, x0, y_apex, th, hw, ca, sa, anat, hcx) -> np.ndarray:
    """Branching vessel trees from both hila, drawn with Pillow and blurred (0 .. ~1)."""
    canvas = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(canvas)
    scale = max(W, H) / 400.0
    for s in (-1, 1):
        hx = s * (0.24 + (0.04 if s > 0 else 0.0))
        hy = 0.45
        n_main = int(rng.integers(9, 13))
        for k in range(n_main):
            ang = -math.pi * 0.95 + math.pi * 0.9 * (k + rng.uniform(0.1, 0.9)) / n_main  # upward .. downward
            ang = ang + math.pi / 2  # 0 = downward in y, measured from +y
            # direction in thorax units: lateral (s) and vertical
            stack = [(hx, hy, ang, 3.5 * scale, 0)]
            while stack:
                x, y, a_, w_, depth = stack.pop()
                length = rng.uniform(0.07, 0.12) * (0.85**depth)
                segs = int(rng.integers(2, 4))
                pts = [(x, y)]
                for _ in range(segs):
                    a_ = a_ + rng.normal(0, 0.18)
                    x = x + s * math.sin(a_) * length * 1.1
                    y = y - math.cos(a_) * length * (th / hw) ** -1 * 1.0
                    pts.append((x, y))
                pix = [_to_pixels(px_, py_, x0, y_apex, th, hw, ca, sa) for px_, py_ in pts]
                shade = int(max(60, 255 - depth * 45))
                draw.line(pix, fill=shade, width=max(1, int(round(w_))))
                if depth < 3 and w_ > 1.0:
                    for _ in range(2):
                        stack.append((x, y, a_ + rng.normal(0, 0.45), w_ * 0.68, depth + 1))
    out = np.asarray(canvas.filter(ImageFilter.GaussianBlur(radius=1.1 * scale)), dtype=np.float32) * (1.0 / 255.0)
    return out


def _ribs(X, Q, Y, anat: _Anatomy, rng, px, ap) -> np.ndarray:
    """Posterior ribs (curved bands with brighter cortices) and faint anterior ribs, both sides."""
    # posterior: centre line y = y_k + bend(q); bend stronger for the upper ribs
    bend = (0.55 - 0.2 * np.clip(Y, 0, 1)) * np.maximum(Q - 0.22, 0.0) ** 2 - 0.03 * Q
    if ap:
        bend = bend * 0.7
    t = (Y - bend + 0.07) / anat.rib_spacing
    k = np.floor(t)
    frac = t - k
    thick = 0.62  # share of one period filled by the rib
    d = np.abs(frac - thick / 2) / (thick / 2)  # 0 centre .. 1 edge
    in_rib = d < 1.0
    prof = np.where(in_rib, 0.55 + 0.45 * np.clip((d - 0.55) / 0.45, 0, 1) ** 2, np.float32(0.0))
    prof = prof * _ramp(1.0 - d, 0.15)
    valid = (k >= 0) & (k < anat.n_ribs)
    extent = _ramp(Q - 0.09, 2 * px) * _ramp(1.14 - Q - 0.02 * k, 0.06)
    post = np.where(valid, prof, np.float32(0.0)) * extent * 0.07
    # anterior ribs: fainter, sloping down towards the midline
    t2 = (Y - 0.28 * (1.05 - Q) + 0.02) / (anat.rib_spacing * 1.05)
    k2 = np.floor(t2)
    d2 = np.abs(t2 - k2 - 0.25) / 0.25
    ant = (
        np.where((k2 >= 1) & (k2 < 7) & (d2 < 1), 1.0 - d2**4, np.float32(0.0))
        * _ramp(Q - 0.3, 0.1)
        * _ramp(1.1 - Q, 0.05)
    )
    return (post + 0.03 * ant).astype(np.float32)


def _clavicles(Q, Y, rng, ap) -> np.ndarray:
    y_med = -0.02 + rng.uniform(-0.03, 0.03) + (0.05 if ap else 0.0)
    slope = -0.12 if not ap else -0.03
    centre = y_med + slope * (Q - 0.1) + 0.05 * np.sin(np.clip((Q - 0.1) / 0.85, 0, 1) * np.pi)
    d = np.abs(Y - centre) / 0.028
    band = np.clip(1.0 - d**2, 0, 1) ** 0.5 * _ramp(Q - 0.1, 0.03) * _ramp(0.98 - Q, 0.05)
    return (0.075 * band).astype(np.float32)


def _blob(rng, Q, Y, qc, yc, rq, ry, rough, H, W) -> np.ndarray:
    d = np.sqrt(((Q - qc) / rq) ** 2 + ((Y - yc) / ry) ** 2)
    n = _smooth_noise(rng, (H, W), (max(3, H // 12), max(3, W // 12)))
    return np.clip((1.0 - d + rough * n) / 0.35, 0.0, 1.0)


def _consolidation(case: Case, rng, X, Q, Y, right, lung_raw, px):
    H, W = Q.shape
    side_mask = right if case.side == "right" else ~right
    if case.region in LOBES:
        _, qr, yr, fissure = LOBES[case.region]
    else:
        qr, yr = ZONES[case.region]
        fissure = None
    r = {"small": rng.uniform(0.15, 0.19), "moderate": rng.uniform(0.19, 0.25), "large": rng.uniform(0.25, 0.31)}[
        case.size
    ]
    r *= TUNE["pneumonia_size"]
    lung_side = side_mask * lung_raw
    # at least ~40 % of the nominal blob area (a hemithorax is about 0.55 square units)
    target = 0.4 * np.pi * r * r / 0.55 * np.count_nonzero(lung_side > 0.5)
    for _attempt in range(4):  # keep the lesion decent-sized (a blob may fall on the heart border)
        qc = rng.uniform(*qr)
        yc = rng.uniform(*yr)
        rq, ry = r * rng.uniform(0.85, 1.15), r * rng.uniform(0.75, 1.0)
        shape = _blob(rng, Q, Y, qc, yc, rq, ry, 0.35, H, W)
        if fissure is not None:
            kind, yf = fissure
            shape *= _ramp((yf - Y) if kind == "below" else (Y - yf), 0.01)
        region = shape * lung_side
        if np.count_nonzero(region > 0.5) >= target:
            break
        qr = (qr[0] + 0.05, min(0.85, qr[1] + 0.05))
    amp = min(0.95, rng.uniform(0.7, 0.95) * TUNE["pneumonia_fill"])
    mottle = 0.85 + 0.15 * _smooth_noise(rng, (H, W), (H // 5, W // 5))
    fill = np.clip(amp * region * mottle, 0.0, 0.95)
    return fill.astype(np.float32), region.astype(np.float32)


def _covid(case: Case, rng, Q, Y, f_out, lung_raw, h, w, H, W):
    extent = {"mild": 0.35, "moderate": 0.55, "extensive": 0.75}[case.size]
    amp = {"mild": rng.uniform(0.45, 0.55), "moderate": rng.uniform(0.52, 0.65), "extensive": rng.uniform(0.6, 0.75)}[
        case.size
    ]
    amp = min(0.9, amp * TUNE["covid_fill"])
    peripheral = _ramp(Q - (0.62 - 0.3 * extent), 0.25)
    lower = _ramp(Y - (0.55 - 0.3 * extent), 0.3)
    n1 = _smooth_noise(rng, (h, w), (max(3, H // 40), max(3, W // 40)))
    n2 = _smooth_noise(rng, (h, w), (max(3, H // 16), max(3, W // 16)))
    patch = np.clip((n1 * 0.8 + n2 * 0.45 + 0.75 * extent) / 0.6, 0, 1)
    density = peripheral * lower * patch * lung_raw
    fill = amp * density
    return fill.astype(np.float32), np.clip(density + 0.1, 0, 1).astype(np.float32)  # > 0.5: density > 0.4


def _devices(rng, H, W, hw, th, x0, y_apex, ca, sa) -> np.ndarray:
    """ECG electrodes and wires, a laterality marker: present regardless of the finding."""
    if rng.random() > TUNE["devices"]:
        return np.zeros((H, W), dtype=np.float32)
    canvas = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(canvas)
    r = max(2, int(round(0.012 * max(H, W))))
    if rng.random() < 0.6:
        for _ in range(int(rng.integers(2, 5))):
            cx = rng.uniform(-1.0, 1.0)
            cy = rng.uniform(-0.1, 0.9)
            px_, py_ = _to_pixels(cx, cy, x0, y_apex, th, hw, ca, sa)
            draw.ellipse([px_ - r, py_ - r, px_ + r, py_ + r], outline=255, width=max(1, r // 2))
            ex, ey = _to_pixels(cx + rng.uniform(-0.5, 0.5), cy - rng.uniform(0.4, 1.0), x0, y_apex, th, hw, ca, sa)
            draw.line(
                [(px_, py_), ((px_ + ex) / 2 + rng.uniform(-20, 20), (py_ + ey) / 2), (ex, ey)], fill=170, width=1
            )
    if rng.random() < 0.6:
        m = max(6, int(0.035 * max(H, W)))
        mx = int(rng.uniform(0.05, 0.2) * W) if rng.random() < 0.5 else int(rng.uniform(0.75, 0.9) * W)
        my = int(rng.uniform(0.04, 0.12) * H)
        draw.rectangle([mx, my, mx + m, my + m], fill=220)
        draw.line(
            [(mx + m * 0.3, my + m * 0.2), (mx + m * 0.3, my + m * 0.8), (mx + m * 0.75, my + m * 0.8)],
            fill=40,
            width=max(1, m // 6),
        )
    return np.asarray(canvas, dtype=np.float32) * (0.25 / 255.0)
