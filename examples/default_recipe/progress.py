"""The recipe's log lines: a time stamp and the message, flushed (a rebuild runs for hours)."""

import time


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
