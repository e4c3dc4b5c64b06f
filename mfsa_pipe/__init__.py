"""mfsa-pipe: raw video to an emotion/sentiment timeline with MFSA."""

__version__ = "0.1.0"
