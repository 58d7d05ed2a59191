"""A stand-in for torch, just enough for bench/sdpa.py's code paths (bench/test/sdpa.test.ts).

Attention "costs" (N / 8192)^2 * 0.2 s of sleep (a quarter forward, the rest backward); FAKE_TORCH_OOM_N=n makes
inputs with n or more tokens raise an out-of-memory error; FAKE_TORCH_NO_CUDA=1 makes CUDA unavailable.
"""
import os

from . import cuda  # noqa: F401
from . import nn  # noqa: F401

__version__ = "0.0+fake"


class _Version:
    cuda = "0.0-fake"


version = _Version()
bfloat16, float16, float32 = "bfloat16", "float16", "float32"
_SIZE = {"bfloat16": 2, "float16": 2, "float32": 4}


def device(name):
    return name


class Generator:
    def __init__(self, device=None):
        self.device = device

    def manual_seed(self, seed):
        return self


class Tensor:
    def __init__(self, shape, dtype, cost=0.0):
        self.shape, self.dtype, self.grad, self.cost = tuple(shape), dtype, None, cost
        n = _SIZE[dtype]
        for s in self.shape:
            n *= s
        cuda._alloc(n)

    def requires_grad_(self):
        return self

    def backward(self, grad):
        import time

        time.sleep(self.cost * 0.75)
        cuda._alloc(3 * grad.nbytes() if hasattr(grad, "nbytes") else 0)

    def nbytes(self):
        n = _SIZE[self.dtype]
        for s in self.shape:
            n *= s
        return n


def randn(*shape, device=None, dtype=float32, generator=None):
    if len(shape) == 1 and isinstance(shape[0], tuple):
        shape = shape[0]
    oom = os.environ.get("FAKE_TORCH_OOM_N")
    if oom and len(shape) == 4 and shape[2] >= int(oom):
        raise RuntimeError("CUDA out of memory. Tried to allocate 8.00 GiB (fake)")
    return Tensor(shape, dtype)


def matmul(a, b):
    return Tensor((a.shape[0], b.shape[1]), a.dtype)
