#!/usr/bin/env python3
"""Dense causal attention baseline and tensor-core rate for the GPU bench (bench/gpu.ts runs this).

  python3 bench/sdpa.py --tokens 8192,16384 [--batch 2 --heads 16 --head-dim 128 --dtype bf16 --reps 3 --budget 300]

For every N: torch SDPA with the flash backend (FlashAttention-2), causal, inputs [batch, heads, N, head_dim],
forward, backward and forward + backward times (CUDA events, median over repetitions after a warm-up) and the peak
of torch.cuda.max_memory_allocated over one forward + backward (inputs, dOut and gradients included). Plus the bf16
matmul rate (torch.matmul of two n x n matrices, n = 8192 by default), measured after the dense runs. Sizes whose
predicted time would overrun --budget seconds (less 10 s kept for the matmul) are skipped and say so.

Prints ONE JSON object on the last line of stdout: {"ok": true, ...} or {"ok": false, "error": "..."} (exit code 0
either way; progress goes to stderr). Runs without torch or CUDA too, then it only reports why.
"""
import argparse
import json
import statistics
import sys
import time

from sdpa_common import cuda_torch, emit, logger, size_list


log = logger("sdpa.py")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", default="8192", help="N per sequence, comma separated (K suffix ok); empty: no dense")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=None)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions after a warm-up (1 where one takes over 2 s)")
    ap.add_argument("--budget", type=float, default=300.0, help="seconds for the whole script")
    ap.add_argument("--no-matmul", action="store_true")
    ap.add_argument("--matmul-size", type=int, default=8192)
    args = ap.parse_args()
    start = time.monotonic()
    left = lambda: args.budget - (time.monotonic() - start)

    torch, info = cuda_torch()
    if torch is None:
        return emit(info)
    import torch.nn.functional as F
    dev = torch.device("cuda")
    dt = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]

    def event_ms(fn, n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(n):
            fn()
        b.record()
        torch.cuda.synchronize()
        return a.elapsed_time(b) / n

    from torch.nn.attention import SDPBackend, sdpa_kernel

    hkv = args.kv_heads or args.heads
    results = []
    prev = None  # (N, seconds of one repetition)
    for N in size_list(args.tokens):
        if prev is not None:
            one = prev[1] * (N / prev[0]) ** 2  # dense attention is quadratic in N
            reps = 1 if one > 2 else args.reps
            need = one * (1 + reps)
            if need > left() - 10:  # 10 s kept for the matmul rate
                results.append({"N": N, "skipped": f"predicted {need:.0f} s (warm-up + {reps} rep(s)) exceeds the {max(0.0, left() - 10):.0f} s left of --budget"})
                log(f"N={N}: skipped (predicted {need:.0f} s, {left():.0f} s left)")
                continue
        try:
            g = torch.Generator(device=dev).manual_seed(N)
            shape_q, shape_kv = (args.batch, args.heads, N, args.head_dim), (args.batch, hkv, N, args.head_dim)
            q = torch.randn(shape_q, device=dev, dtype=dt, generator=g).requires_grad_()
            k = torch.randn(shape_kv, device=dev, dtype=dt, generator=g).requires_grad_()
            v = torch.randn(shape_kv, device=dev, dtype=dt, generator=g).requires_grad_()
            dout = torch.randn(shape_q, device=dev, dtype=dt, generator=g)
            kw = {"is_causal": True}
            if hkv != args.heads:
                kw["enable_gqa"] = True

            def rep():
                q.grad = k.grad = v.grad = None
                e0, e1, e2 = (torch.cuda.Event(enable_timing=True) for _ in range(3))
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                    e0.record()
                    out = F.scaled_dot_product_attention(q, k, v, **kw)
                    e1.record()
                    out.backward(dout)
                    e2.record()
                torch.cuda.synchronize()
                return e0.elapsed_time(e1), e1.elapsed_time(e2)

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(dev)
            t0 = time.monotonic()
            rep()  # warm-up; its peak memory is that of one forward + backward with inputs and gradients live
            warm = time.monotonic() - t0
            peak = torch.cuda.max_memory_allocated(dev)
            reps = 1 if warm > 2 else args.reps
            times = [rep() for _ in range(reps)]
            one = (time.monotonic() - t0 - warm) / reps
            fwd = statistics.median(t[0] for t in times)
            bwd = statistics.median(t[1] for t in times)
            tot = statistics.median(t[0] + t[1] for t in times)
            results.append({"N": N, "fwdMs": fwd, "bwdMs": bwd, "fwdBwdMs": tot, "peakBytes": peak, "reps": reps,
                            "repsMs": [[a, b] for a, b in times]})
            log(f"N={N}: fwd {fwd:.2f} ms, bwd {bwd:.2f} ms, peak {peak / 2**30:.2f} GiB ({reps} rep(s) after a warm-up)")
            prev = (N, one)
        except Exception as e:  # OOM or an unsupported shape: reported, the next sizes still run
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            results.append({"N": N, "error": msg})
            log(f"N={N}: {msg}")
        finally:
            q = k = v = dout = None
            torch.cuda.empty_cache()

    matmul = None  # after the dense runs: cuBLAS's workspace stays allocated and would count in their peaks
    if not args.no_matmul and left() < 5:
        matmul = {"error": f"no time left of --budget {args.budget:.0f} s"}
    elif not args.no_matmul:
        try:
            n = args.matmul_size
            x = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
            y = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
            event_ms(lambda: torch.matmul(x, y), 3)  # warm-up (cuBLAS heuristics, clocks)
            runs = [event_ms(lambda: torch.matmul(x, y), 10) for _ in range(5)]
            best, med = min(runs), statistics.median(runs)
            matmul = {"n": n, "dtype": "bf16", "msMedian": med, "msBest": best,
                      "tflopsMedian": 2 * n ** 3 / (med * 1e9), "tflopsBest": 2 * n ** 3 / (best * 1e9)}
            log(f"bf16 matmul {n}^3: {matmul['tflopsMedian']:.1f} TFLOP/s (median of 5 x 10), best {matmul['tflopsBest']:.1f}")
            del x, y
        except Exception as e:
            matmul = {"error": f"{type(e).__name__}: {e}"}
        torch.cuda.empty_cache()

    return emit({"ok": True, **info, "backend": "torch SDPA, flash backend (FlashAttention-2), causal",
                 "layout": "[batch, heads, N, head_dim]", "batch": args.batch, "heads": args.heads, "kvHeads": hkv,
                 "headDim": args.head_dim, "dtype": args.dtype, "matmul": matmul, "sizes": results,
                 "seconds": time.monotonic() - start})


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # never leave the bench without a JSON line
        print(json.dumps({"ok": False, "error": f"sdpa.py crashed: {type(e).__name__}: {e}"}), flush=True)
        sys.exit(0)
