"""mfsa-pipe: raw video to an emotion/sentiment timeline with MFSA."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # lazy: `import mfsa_pipe` stays light (no torch/cv2) until the API is used
    if name == "analyze":
        # the module itself: callable as the API function (mfsa_pipe.analyze(path, out_dir=...)),
        # and what `import mfsa_pipe.analyze` binds here anyway
        import importlib

        return importlib.import_module("mfsa_pipe.analyze")
    if name == "Report":
        from mfsa_pipe.report import Report

        return Report
    raise AttributeError(f"module 'mfsa_pipe' has no attribute {name!r}")
