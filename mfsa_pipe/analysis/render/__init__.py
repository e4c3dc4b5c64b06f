"""What `analyze` draws: the annotated video and timeline.png.

overlay.py holds what both show (`OverlayData`) and their colours; annotator.py draws it onto a
frame; encode.py writes the annotated video (decode, draw, encode, audio kept); timeline.py
draws timeline.png with matplotlib.
"""

from mfsa_pipe.analysis.render.annotator import Annotator, PanelLayer
from mfsa_pipe.analysis.render.encode import RenderStats, render_video
from mfsa_pipe.analysis.render.overlay import (
    OverlayData,
    caption_words,
    class_colour,
    find_column,
    overlay_data,
    prediction_colour,
    score_colour,
    sentiment_colour,
)
from mfsa_pipe.analysis.render.timeline import fallback_fonts, render_timeline_png

__all__ = [
    "Annotator", "OverlayData", "PanelLayer", "RenderStats", "caption_words", "class_colour", "fallback_fonts",
    "find_column", "overlay_data", "prediction_colour", "render_timeline_png", "render_video", "score_colour",
    "sentiment_colour",
]
