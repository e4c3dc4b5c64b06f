"""CLI commands, one module per command or named group; each exposes `register(app)`, which adds
its module-level command functions. Errors follow console.py's policy. torch and cv2 are imported
only when a command runs, so that `mfsa-pipe --help` stays fast."""

COMMAND_MODULES = ("extract", "train", "analyze", "build")
