"""Helpers shared by the bench's torch scripts (sdpa.py: training; sdpa-decode.py: decode). Written for moba-ts.

Each script prints one JSON line on stdout (emit) and progress on stderr (a logger from logger()).
"""
import json
import sys


def logger(prefix):
    """A function that prints `prefix: msg` on stderr."""
    def log(msg):
        print(f"{prefix}: {msg}", file=sys.stderr, flush=True)
    return log


def emit(obj):
    """Prints obj as the script's one JSON line; returns the exit status 0."""
    print(json.dumps(obj), flush=True)
    return 0


def size_list(text):
    """'8K,512K,1M,3' -> [8192, 524288, 1048576, 3] (K = 1024, M = 1024 * 1024; empty items ignored)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        mult = {"k": 1024, "m": 1024 * 1024}.get(part[-1].lower(), 1)
        out.append(int(part.rstrip("kKmM")) * mult)
    return out
