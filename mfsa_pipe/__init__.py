"""mfsa-pipe: raw video to an emotion/sentiment timeline with MFSA.

    report = mfsa_pipe.analyze("talk.mp4", out_dir="talk_analysis")   # -> mfsa_pipe.Report

The applications, one sub-package each: `analysis` (one video or a folder of them -> reports),
`training` (train and evaluate a model), `datasets` (read datasets; build one from labelled
videos). The small modules beside them are shared by all three.
"""

from mfsa_pipe.version import __version__


def __getattr__(name: str):
    # lazy: `import mfsa_pipe` stays light (no torch/cv2) until the API is used
    if name == "analyze":
        from mfsa_pipe.analysis.video import analyze

        return analyze
    if name == "Report":
        from mfsa_pipe.analysis.report import Report

        return Report
    raise AttributeError(f"module 'mfsa_pipe' has no attribute {name!r}")


__all__ = ["Report", "__version__", "analyze"]
