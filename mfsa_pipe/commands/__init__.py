"""CLI commands, one module per job; each exposes `register(app)`. Heavy imports stay inside the commands."""

COMMAND_MODULES = ("extract", "train", "analyze", "build")
