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

from extractors import face_emotion

BATCH = 16
EMOTION_ALIASES = {"angry": ("anger", "angry"), "disgust": ("disgust",), "fear": ("fear",),
                   "happy": ("happiness", "happy"), "sad": ("sadness", "sad"),
                   "surprise": ("surprise",), "neutral": ("neutral",)}
_DETECTORS: dict[str, Any] = {}


class BackendUnavailableError(RuntimeError):
    """The chosen backend cannot run here; the message says why and what to do."""


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
    """(68, 2) image landmarks -> mouth_open, eye_open, brow_raise as in face_geometry."""
    d = lambda i, j: float(np.linalg.norm(lm[i] - lm[j]))  # noqa: E731
    iod = d(36, 45)
    eye = np.mean([(d(37, 41) + d(38, 40)) / 2 / d(36, 39), (d(43, 47) + d(44, 46)) / 2 / d(42, 45)])
    # image y grows downwards: brow above the upper lid is a positive height
    brow = np.mean([lm[[37, 38], 1].mean() - lm[17:22, 1].mean(), lm[[43, 44], 1].mean() - lm[22:27, 1].mean()])
    return np.array([d(62, 66) / iod, eye, brow / iod])


class PyFeatBackend:
    def __init__(self, config) -> None:
        self.config = config

    def run(self, frames: Iterable[tuple[float, np.ndarray]]) -> dict[str, Any]:
        """Same row dict as the mesh backend, with the feature rows already computed."""
        from extractors.facial import AU_NAMES, select_face

        det = _detector(self.config.device)  # before importing torch: fails fast without py-feat
        import torch
        rows: dict[str, Any] = {"times": [], "boxes": [], "sizes": [], "counts": [], "features": []}
        previous = None
        batch: list[tuple[float, np.ndarray]] = []

        def flush() -> None:
            nonlocal previous
            if not batch:
                return
            tensor = torch.from_numpy(np.stack([im for _, im in batch])).permute(0, 3, 1, 2)
            fex = det.detect(tensor, data_type="tensor", batch_size=len(batch), progress_bar=False)
            fex = fex.reset_index(drop=True)
            cols = {c.lower(): c for c in fex.columns}
            for i, (t, im) in enumerate(batch):
                h, w = im.shape[:2]
                faces = fex[(fex["frame"] == i) & fex["FaceRectX"].notna()]
                rows["times"].append(float(t))
                rows["sizes"].append((w, h))
                rows["counts"].append(len(faces))
                if faces.empty:
                    rows["boxes"].append(None)
                    previous = None
                    continue
                xywh = faces[["FaceRectX", "FaceRectY", "FaceRectWidth", "FaceRectHeight"]].to_numpy(float)
                cand = [np.array([x, y, x + bw, y + bh]) for x, y, bw, bh in xywh]
                k = select_face(cand, previous=previous, rule=self.config.face, frame_wh=(w, h))
                previous = cand[k]
                face = faces.iloc[k]
                emo = [next((float(face[cols[a]]) for a in EMOTION_ALIASES[e] if a in cols), 0.0)
                       for e in face_emotion.EMOTIONS]
                aus = [float(face[cols[a.lower()]]) if a.lower() in cols else 0.0 for a in AU_NAMES]
                pose = [float(face.get(c, 0.0)) for c in ("Yaw", "Pitch", "Roll")]
                lm = np.stack([face[[f"x_{j}" for j in range(68)]].to_numpy(float),
                               face[[f"y_{j}" for j in range(68)]].to_numpy(float)], 1)
                row = np.concatenate([[1.0], emo, aus, pose, landmark_geometry(lm), [cand[k][3] - cand[k][1]]])
                row[-1] /= h
                rows["boxes"].append(cand[k])
                rows["features"].append(np.nan_to_num(row))
            batch.clear()

        for t, image in frames:
            batch.append((t, image))
            if len(batch) == BATCH:
                flush()
        flush()
        return rows
