import contextlib
import enum

_active = []


class SDPBackend(enum.Enum):
    MATH = 0
    FLASH_ATTENTION = 1
    EFFICIENT_ATTENTION = 2


@contextlib.contextmanager
def sdpa_kernel(backends):
    _active.append(backends)
    try:
        yield
    finally:
        _active.pop()
