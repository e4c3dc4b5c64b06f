"""Optional "py-feat" vision backend: py-feat's own detector mapped onto the same 35 columns.

py-feat is not a dependency (extra `pyfeat`) and downloads its detector weights from the
Hugging Face hub on first use, so this backend needs a network once; both failures raise
`BackendUnavailableError` with what to do. Mapping: py-feat's AU intensities -> `auXX_est`
(an AU py-feat does not output stays 0), its 7 emotion probabilities -> `emo_*`, its Yaw,
Pitch, Roll (degrees, py-feat's sign convention) -> `pose_*`, and the geometry columns
measured on its 68 landmarks with the same definitions as the mesh backend. py-feat itself
cannot run here (not installed, no network): tests cover the error path and the mapping with
a stand-in detector.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from extractors.config import VisionConfig
from extractors.errors import BackendUnavailableError
from extractors.facial.backend import FaceRows
from extractors.facial.columns import AU_NAMES, COLUMNS
from extractors.facial.emotion import EMOTIONS
from extractors.facial.tracking import FaceFollower

BATCH = 16
EMOTION_ALIASES = {"angry": ("anger", "angry"), "disgust": ("disgust",), "fear": ("fear",),
                   "happy": ("happiness", "happy"), "sad": ("sadness", "sad"),
                   "surprise": ("surprise",), "neutral": ("neutral",)}
BOX = ["FaceRectX", "FaceRectY", "FaceRectWidth", "FaceRectHeight"]
_DETECTORS: dict[str, Any] = {}


def _detector(device: str):
    """py-feat's detector, loaded once per device ("auto": CUDA when torch sees one)."""
    if device not in _DETECTORS:
        try:
            import feat
        except ImportError as err:
            raise BackendUnavailableError(
                "the 'py-feat' vision backend needs the py-feat package, which is not installed: "
                "pip install 'mfsa-pipe[pyfeat]' (its detectors are then downloaded from the "
                "Hugging Face hub on first use). The offline default is the 'mesh' backend."
            ) from err
        # py-feat renamed its detector (Detector -> Detectorv1/Detectorv2)
        cls = getattr(feat, "Detectorv2", None) or getattr(feat, "Detector", None)
        if cls is None:
            raise BackendUnavailableError(f"py-feat {getattr(feat, '__version__', '?')} has no Detector class")
        try:
            _DETECTORS[device] = cls(device=_device(device))
        except Exception as err:  # hub download, missing cache, incompatible weights
            raise BackendUnavailableError(
                f"py-feat could not load its detector ({type(err).__name__}: {err}). Its weights "
                "come from the Hugging Face hub on first use: run once with a network (they are "
                "cached), or use the offline 'mesh' backend."
            ) from err
    return _DETECTORS[device]


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def landmark_geometry(lm: np.ndarray) -> np.ndarray:
    """(68, 2) image landmarks -> mouth_open, eye_open, brow_raise as in `geometry`."""
    d = lambda i, j: float(np.linalg.norm(lm[i] - lm[j]))  # noqa: E731
    iod = d(36, 45)
    eye = np.mean([(d(37, 41) + d(38, 40)) / 2 / d(36, 39), (d(43, 47) + d(44, 46)) / 2 / d(42, 45)])
    # image y grows downwards: brow above the upper lid is a positive height
    brow = np.mean([lm[[37, 38], 1].mean() - lm[17:22, 1].mean(), lm[[43, 44], 1].mean() - lm[22:27, 1].mean()])
    return np.array([d(62, 66) / iod, eye, brow / iod])


def _face_row(face, cols: dict[str, str], *, box: np.ndarray, height: int) -> np.ndarray:
    """One py-feat face (a row of its result) -> the 35 columns, float64, NaN as 0."""
    emo = [next((float(face[cols[a]]) for a in EMOTION_ALIASES[e] if a in cols), 0.0) for e in EMOTIONS]
    aus = [float(face[cols[a.lower()]]) if a.lower() in cols else 0.0 for a in AU_NAMES]
    pose = [float(face.get(c, 0.0)) for c in ("Yaw", "Pitch", "Roll")]
    lm = np.stack([face[[f"x_{j}" for j in range(68)]].to_numpy(float),
                   face[[f"y_{j}" for j in range(68)]].to_numpy(float)], 1)
    row = np.concatenate([[1.0], emo, aus, pose, landmark_geometry(lm), [box[3] - box[1]]])
    row[-1] /= height
    return np.nan_to_num(row)


class PyFeatBackend:
    """`FaceBackend` on py-feat's detector, batches of BATCH frames."""

    def __init__(self, config: VisionConfig) -> None:
        self.config = config

    def run(self, frames: Iterable[tuple[float, np.ndarray]]) -> FaceRows:
        det = _detector(self.config.device)  # before importing torch: fails fast without py-feat
        rows, follower = FaceRows(), FaceFollower(self.config.face)
        features: list[np.ndarray] = []
        batch: list[tuple[float, np.ndarray]] = []
        for t, image in frames:
            batch.append((t, image))
            if len(batch) == BATCH:
                features += self._add_batch(det, batch, rows=rows, follower=follower)
                batch = []
        if batch:
            features += self._add_batch(det, batch, rows=rows, follower=follower)
        rows.features = np.asarray(features, np.float32).reshape(-1, len(COLUMNS))
        return rows

    def _add_batch(self, det, batch: list[tuple[float, np.ndarray]], *, rows: FaceRows,
                   follower: FaceFollower) -> list[np.ndarray]:
        """Detects faces in `batch`, adds its frames to `rows`; the feature rows of its faces."""
        import torch

        tensor = torch.from_numpy(np.stack([im for _, im in batch])).permute(0, 3, 1, 2)
        fex = det.detect(tensor, data_type="tensor", batch_size=len(batch), progress_bar=False)
        fex = fex.reset_index(drop=True)
        cols = {c.lower(): c for c in fex.columns}
        features = []
        for i, (t, im) in enumerate(batch):
            h, w = im.shape[:2]
            faces = fex[(fex["frame"] == i) & fex["FaceRectX"].notna()]
            if faces.empty:
                rows.add_frame(time=t, size=(w, h), count=0, box=None)
                follower.lose()
                continue
            cand = [np.array([x, y, x + bw, y + bh]) for x, y, bw, bh in faces[BOX].to_numpy(float)]
            k = follower.pick(cand, frame_wh=(w, h))
            rows.add_frame(time=t, size=(w, h), count=len(faces), box=cand[k])
            features.append(_face_row(faces.iloc[k], cols, box=cand[k], height=h))
        return features
