"""Pure-numpy face geometry on MediaPipe's 468-vertex mesh: alignment, head pose, AU estimates.

The AU estimates invert py-feat's AU+pose -> 478-vertex mesh linear (PLS) model
(`assets/au_to_mesh_pls_v4.npz`): each observed mesh is similarity-aligned (Umeyama) to the
model's neutral face on the vertices its AUs move least, then the 20 AU intensities (plus 3 pose
nuisance terms) are solved by ridge least squares against the displacement from neutral and
clipped to the model's AU range [0, 1]. They are estimates from geometry, not py-feat's AU
detector output and not FACET.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parent.parent / "assets"  # extractors/assets
AU_MODEL_FILE = ASSETS / "au_to_mesh_pls_v4.npz"
N_MESH = 468  # vertices without the iris (refine_landmarks=False)

N_STABLE = 60  # alignment anchors: the vertices the model's 20 AUs move least

# Landmarks for the geometry columns (MediaPipe indices; "left"/"right" are image sides).
EYE_OUTER = (33, 263)
EYE_LIDS = ((159, 145), (386, 374))  # upper, lower lid centres
EYE_CORNERS = ((33, 133), (362, 263))
BROW = ((105, 66, 107), (334, 296, 336))
EYE_TOP = (159, 386)
LIPS_INNER = (13, 14)


@dataclass(frozen=True)
class AUModel:
    au_names: tuple[str, ...]  # "AU01" ...
    neutral: np.ndarray  # (468, 3) model frame: x right, y up, z toward the camera
    basis: np.ndarray  # (23, 468*3) displacement per unit input (20 AUs then 3 pose terms)
    solver: np.ndarray  # (468*3, 23) ridge pseudo-inverse
    stable: np.ndarray  # vertex indices for the alignment (nose bridge, inner eyes, brow base)

    def estimate(self, aligned: np.ndarray) -> np.ndarray:
        """(N, 468, 3) aligned meshes -> (N, 20) AU intensities in [0, 1]."""
        resid = (aligned - self.neutral).reshape(len(aligned), -1)
        coefs = resid @ self.solver
        return np.clip(coefs[:, : len(self.au_names)], 0.0, 1.0)


@lru_cache(maxsize=1)
def load_au_model(*, ridge: float = 0.03) -> AUModel:
    """Load the bundled npz once.

    `ridge` penalises the 20 AU terms, relative to their mean squared norm; the 3 pose terms
    are nuisance (our alignment removed most of the pose) and are left almost free. The basis
    is nearly collinear, so estimates shrink (an AU12 of 0.8 reads ~0.4): 0.03 keeps the smile
    contrast while stopping a person's resting shape from saturating unrelated AUs.
    """
    with np.load(AU_MODEL_FILE, allow_pickle=False) as z:
        coef, intercept = z["coef"].astype(np.float64), z["intercept"].astype(np.float64)
        au_names = tuple(str(s) for s in z["au_columns"])
    n = coef.shape[1] // 3  # axis-major layout [x_0..x_477 | y_.. | z_..]

    def to_mesh(flat: np.ndarray) -> np.ndarray:
        return np.stack([flat[..., :n], flat[..., n:2 * n], flat[..., 2 * n:]], -1)[..., :N_MESH, :]

    neutral = to_mesh(intercept)
    basis = to_mesh(coef).reshape(len(coef), -1)
    gram = basis @ basis.T
    penalty = np.full(len(gram), ridge * np.diag(gram)[: len(au_names)].mean())
    penalty[len(au_names):] *= 1e-4
    solver = basis.T @ np.linalg.inv(gram + np.diag(penalty))
    # anchoring on the least-moving vertices keeps expressions out of the pose and alignment
    motion = np.linalg.norm(basis[: len(au_names)].reshape(len(au_names), N_MESH, 3), axis=2)
    stable = np.argsort((motion ** 2).sum(0))[:N_STABLE]
    return AUModel(au_names, neutral, basis, solver, stable)


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising ||s R src + t - dst|| over (N, 3) point sets."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # no reflections
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / (a ** 2).sum())
    return scale, rot, mu_d - scale * rot @ mu_s


def to_model_frame(mesh_px: np.ndarray) -> np.ndarray:
    """MediaPipe pixels (x right, y down, z away from camera) -> model axes (y up, z toward camera)."""
    return mesh_px * np.array([1.0, -1.0, -1.0])


def euler_deg(rot: np.ndarray) -> tuple[float, float, float]:
    """Head rotation (maps the frontal model face onto the observed face) -> (yaw, pitch, roll).

    R = Ry(yaw) Rx(pitch) Rz(roll) in the model frame (x right, y up, z toward the camera):
    yaw > 0 turns the nose towards image right, pitch > 0 lifts the nose, roll > 0 tilts the
    head counter-clockwise as seen in the image.
    """
    pitch = np.arcsin(np.clip(-rot[1, 2], -1.0, 1.0))
    yaw = np.arctan2(rot[0, 2], rot[2, 2])
    roll = np.arctan2(rot[1, 0], rot[1, 1])
    return float(np.degrees(yaw)), float(-np.degrees(pitch)), float(np.degrees(roll))


def analyse(meshes_px: np.ndarray, *, model: AUModel) -> dict[str, np.ndarray]:
    """(N, >=468, 3) meshes in pixels -> AU estimates (N, 20), pose (N, 3) degrees, geometry (N, 3).

    Geometry is measured on the aligned mesh, so it is pose- and distance-normalised: mouth
    opening and brow height are divided by the outer eye-corner distance, eye openness is lid
    gap over eye width.
    """
    meshes = to_model_frame(np.asarray(meshes_px, np.float64)[:, :N_MESH])
    aligned = np.empty_like(meshes)
    pose = np.empty((len(meshes), 3))
    for i, m in enumerate(meshes):
        s, r, t = umeyama(m[model.stable], model.neutral[model.stable])
        aligned[i] = s * m @ r.T + t
        pose[i] = euler_deg(r.T)
    return {"aus": model.estimate(aligned), "pose": pose, "geometry": geometry(aligned)}


def geometry(aligned: np.ndarray) -> np.ndarray:
    """(N, 468, 3) aligned meshes -> (N, 3): mouth_open, eye_open, brow_raise."""
    xy = aligned[..., :2]

    def dist(i: int, j: int) -> np.ndarray:
        return np.linalg.norm(xy[:, i] - xy[:, j], axis=-1)

    iod = dist(*EYE_OUTER)
    mouth = dist(*LIPS_INNER) / iod
    eyes = np.mean([dist(*lids) / dist(*corners) for lids, corners in zip(EYE_LIDS, EYE_CORNERS)], 0)
    brow = np.mean([xy[:, list(b), 1].mean(-1) - xy[:, top, 1] for b, top in zip(BROW, EYE_TOP)], 0) / iod
    return np.stack([mouth, eyes, brow], -1)
