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


def cuda_torch():
    """(torch, info) with the python, torch, CUDA and device facts, or (None, the script's JSON error object)."""
    python = sys.version.split()[0]
    try:
        import torch
    except Exception as e:  # ImportError, or a broken install
        return None, {"ok": False, "error": f"torch cannot be imported ({type(e).__name__}: {e})", "python": python}
    info = {"python": python, "torch": torch.__version__, "cuda": torch.version.cuda}
    if not torch.cuda.is_available():
        return None, {"ok": False, "error": "torch.cuda.is_available() is False (no CUDA device or a CPU-only torch)", **info}
    props = torch.cuda.get_device_properties(torch.device("cuda"))
    info.update({"device": props.name, "capability": f"{props.major}.{props.minor}", "totalBytes": props.total_memory})
    return torch, info
