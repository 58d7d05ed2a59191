import time


def scaled_dot_product_attention(q, k, v, is_causal=False, enable_gqa=False):
    from .. import Tensor
    from .attention import _active

    if not _active:
        raise RuntimeError("fake torch: sdpa called outside sdpa_kernel")
    if (q.shape[1] != k.shape[1]) != bool(enable_gqa):
        raise RuntimeError("fake torch: enable_gqa must be set exactly when the head counts differ")
    if not is_causal:
        raise RuntimeError("fake torch: the bench measures causal attention")
    cost = (q.shape[2] / 8192) ** 2 * 0.2
    time.sleep(cost * 0.25)
    return Tensor(q.shape, q.dtype, cost)
