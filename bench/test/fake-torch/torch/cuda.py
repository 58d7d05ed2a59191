"""torch.cuda of the fake torch."""
import os
import time

_live = [0]
_peak = [0]


def _alloc(n):
    _live[0] += n
    _peak[0] = max(_peak[0], _live[0])


def is_available():
    return os.environ.get("FAKE_TORCH_NO_CUDA") != "1"


class _Props:
    name, major, minor, total_memory = "Fake GPU", 9, 0, 80 << 30


def get_device_properties(device=None):
    return _Props()


class Event:
    def __init__(self, enable_timing=False):
        self.t = 0.0

    def record(self):
        self.t = time.perf_counter()

    def elapsed_time(self, end):
        return (end.t - self.t) * 1000


def synchronize():
    pass


def reset_peak_memory_stats(device=None):
    _peak[0] = _live[0]


def max_memory_allocated(device=None):
    return _peak[0]


def empty_cache():
    pass
