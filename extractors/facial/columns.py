"""The 35 vision columns, in order: the contract every facial backend fills (docs/facial_features.md)."""

from __future__ import annotations

from extractors.facial.emotion import EMOTIONS

AU_NAMES = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU11", "AU12",
            "AU14", "AU15", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26", "AU28", "AU43")
POSE = ("pose_yaw", "pose_pitch", "pose_roll")
GEOMETRY = ("geo_mouth_open", "geo_eye_open", "geo_brow_raise", "geo_face_scale")
COLUMNS = (
    ("face_present",)
    + tuple(f"emo_{e}" for e in EMOTIONS)
    + tuple(f"{a.lower()}_est" for a in AU_NAMES)
    + POSE
    + GEOMETRY
)
assert len(COLUMNS) == 35
