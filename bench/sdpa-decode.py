#!/usr/bin/env python3
"""Dense decode baseline for the decode bench (bench/decode.ts runs this once per bench run, with every row).

  python3 bench/sdpa-decode.py --heads 16/16,32/8 --contexts 8K,32K --batch 1,16,64 [--head-dim 128 --dtype bf16
                               --reps 10 --warmup 3 --budget 300 --copy-mib 2048] [--dry-run [--free-bytes N]]

For every (heads, N, batch) row: torch SDPA with ONE query per sequence over the full K/V, q [batch, Hq, 1, D] and
K, V [batch, Hkv, N, D] random (normal_ in place), no mask, enable_gqa when Hq != Hkv. Each SDPA backend is forced
in turn (default: torch's own choice; flash; efficient; cudnn) and timed with CUDA events around single calls:
the median of --reps after --warmup calls; "best" is the fastest backend. A backend that refuses the shape is
reported with its error. A row whose tensors need more than the free device memory (torch.cuda.mem_get_info, less
1 GiB) is skipped with the bytes needed. Plus the copy bandwidth: dst.copy_(src) of --copy-mib MiB, read + write
bytes counted, CUDA events around 5 copies, best and median of 10 after 3 warm-up copies, before the rows (the
figure) and again after them ("after": a device that slowed under the load shows there).

Prints ONE JSON object on the last line of stdout: {"ok": true, ...} or {"ok": false, "error": "..."} (exit code 0
either way; progress goes to stderr). --dry-run imports no torch: it prints the rows with the bytes each needs and,
given --free-bytes, the skip decision (a check of this script without a GPU).
"""
import argparse
import json
import statistics
import sys
import time
import warnings

from sdpa_common import cuda_torch, emit, logger, size_list

BACKENDS = ("default", "flash", "efficient", "cudnn")
SLACK = 1 << 30  # kept free: the SDPA workspace, the caching allocator, the driver
ELEM = {"bf16": 2, "f16": 2, "f32": 4}


log = logger("sdpa-decode.py")


def heads(text):
    out = []
    for pair in text.split(","):
        hq, hkv = (int(x) for x in pair.strip().split("/"))
        if hq < 1 or hkv < 1 or hq % hkv:
            raise ValueError(f"--heads {text}: each entry is Hq/Hkv with Hq a multiple of Hkv")
        out.append((hq, hkv))
    return out


def bytes_needed(hq, hkv, n, batch, d, dtype):
    """K and V, q and the output of one row (the bench's tables show it for skipped rows)."""
    e = ELEM[dtype]
    return 2 * batch * hkv * n * d * e + 2 * batch * hq * d * e


def plan(args):
    return [{"Hq": hq, "Hkv": hkv, "N": n, "batch": b, "bytesNeeded": bytes_needed(hq, hkv, n, b, args.head_dim, args.dtype)}
            for hq, hkv in heads(args.heads) for n in size_list(args.contexts) for b in size_list(args.batch)]


def skip_reason(need, free):
    if need + SLACK <= free:
        return None
    return f"memory: needs {need / 2**30:.1f} GiB + {SLACK / 2**30:.0f} GiB slack, {free / 2**30:.1f} GiB free"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", default="16/16", help="Hq/Hkv pairs, comma separated")
    ap.add_argument("--contexts", default="8192", help="N per sequence, comma separated (K, M suffixes ok)")
    ap.add_argument("--batch", default="1", help="sequences, comma separated")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--dtype", default="bf16", choices=sorted(ELEM))
    ap.add_argument("--reps", type=int, default=10, help="timed calls per backend (median)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls per backend first")
    ap.add_argument("--budget", type=float, default=300.0, help="seconds for the whole script: later rows are skipped")
    ap.add_argument("--copy-mib", type=int, default=2048, help="copy-bandwidth buffer (0: none)")
    ap.add_argument("--dry-run", action="store_true", help="import no torch: print the rows and their bytes")
    ap.add_argument("--free-bytes", type=int, default=None, help="with --dry-run: apply the memory skip to this much")
    args = ap.parse_args()
    start = time.monotonic()
    rows = plan(args)
    if args.dry_run:
        for r in rows:
            why = skip_reason(r["bytesNeeded"], args.free_bytes) if args.free_bytes is not None else None
            if why:
                r["skipped"] = why
        return emit({"ok": True, "dryRun": True, "torch": None, "cuda": None, "device": None, "copy": None, "rows": rows})

    warnings.simplefilter("ignore", UserWarning)  # SDPA's "kernel not used because" lines: the errors say it
    torch, info = cuda_torch()
    if torch is None:
        return emit(info)
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    dev = torch.device("cuda")
    dt = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    forced = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
              "cudnn": getattr(SDPBackend, "CUDNN_ATTENTION", None)}

    def timed(fn, k=1):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(k):
            fn()
        e1.record()
        torch.cuda.synchronize()
        return e0.elapsed_time(e1) / k

    def median_ms(fn):
        for _ in range(args.warmup):
            fn()
        torch.cuda.synchronize()
        return statistics.median(timed(fn) for _ in range(args.reps))

    def copy_bandwidth():
        try:
            size = args.copy_mib << 20
            src = torch.empty(size, device=dev, dtype=torch.uint8).random_(0, 255)
            dst = torch.empty_like(src)
            for _ in range(3):
                dst.copy_(src)
            torch.cuda.synchronize()
            ms = [timed(lambda: dst.copy_(src), 5) for _ in range(10)]
            best, med = min(ms), statistics.median(ms)
            return {"bytes": 2 * size, "msBest": best, "msMedian": med, "bytesPerSecondBest": 2 * size / (best / 1e3),
                    "bytesPerSecondMedian": 2 * size / (med / 1e3),
                    "how": f"torch dst.copy_(src) of {args.copy_mib} MiB, read + write counted, CUDA events around 5 copies, best of 10"}
        except Exception as e:
            return {"error": f"{type(e).__name__}: {e}"[:300]}
        finally:
            src = dst = None
            torch.cuda.empty_cache()

    copy = copy_bandwidth() if args.copy_mib > 0 else None  # first, on an idle device (as the bench's own figure)
    if copy and "bytesPerSecondBest" in copy:
        log(f"copy bandwidth: {copy['bytesPerSecondBest'] / 1e12:.2f} TB/s best, {copy['bytesPerSecondMedian'] / 1e12:.2f} median")
    for r in rows:
        left = args.budget - (time.monotonic() - start)
        if left < 5:
            r["skipped"] = f"time: {max(0.0, left):.0f} s left of --budget {args.budget:.0f} s"
            continue
        free, _ = torch.cuda.mem_get_info(dev)
        why = skip_reason(r["bytesNeeded"], free)
        if why:
            r["skipped"] = why
            log(f"{r['Hq']}/{r['Hkv']} N={r['N']} batch={r['batch']}: skipped ({why})")
            continue
        q = k = v = None
        try:
            b, hq, hkv, n, d = r["batch"], r["Hq"], r["Hkv"], r["N"], args.head_dim
            g = torch.Generator(device=dev).manual_seed(n * 131 + b)
            q = torch.empty((b, hq, 1, d), device=dev, dtype=dt).normal_(generator=g)
            k = torch.empty((b, hkv, n, d), device=dev, dtype=dt).normal_(generator=g)
            v = torch.empty((b, hkv, n, d), device=dev, dtype=dt).normal_(generator=g)
            kw = {"enable_gqa": True} if hq != hkv else {}
            times, errors = {}, {}
            for name in BACKENDS:
                call = lambda: F.scaled_dot_product_attention(q, k, v, **kw)  # noqa: E731
                try:
                    if name == "default":
                        times[name] = median_ms(call)
                    elif forced[name] is None:
                        raise RuntimeError(f"SDPBackend has no {name} backend in torch {torch.__version__}")
                    else:
                        with sdpa_kernel([forced[name]]):
                            times[name] = median_ms(call)
                except Exception as e:  # the backend refuses the shape (e.g. efficient with GQA), or OOM
                    times[name] = None
                    errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            ok = {name: t for name, t in times.items() if t is not None}
            r["backends"] = times
            if errors:
                r["errors"] = errors
            if ok:
                r["best"] = min(ok, key=ok.get)
                r["bestMs"] = ok[r["best"]]
                log(f"{hq}/{hkv} N={n} batch={b}: best {r['bestMs']:.3f} ms ({r['best']}); "
                    + " / ".join(f"{x} {'n/a' if t is None else f'{t:.3f}'}" for x, t in times.items()))
            else:
                r["error"] = "every SDPA backend failed"
                log(f"{hq}/{hkv} N={n} batch={b}: every backend failed")
        except Exception as e:  # OOM while allocating: reported, the next rows still run
            r["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            log(f"{r['Hq']}/{r['Hkv']} N={r['N']} batch={r['batch']}: {r['error']}")
        finally:
            q = k = v = None
            torch.cuda.empty_cache()

    if copy is not None and "bytesPerSecondBest" in copy:  # again after the rows: the device may have slowed
        again = copy_bandwidth()
        copy["after"] = {x: again[x] for x in ("bytesPerSecondBest", "bytesPerSecondMedian") if x in again} or again

    return emit({"ok": True, **info, "layout": "q [batch, Hq, 1, D], K/V [batch, Hkv, N, D], no mask",
                 "backends": list(BACKENDS), "reps": args.reps, "warmup": args.warmup, "headDim": args.head_dim,
                 "dtype": args.dtype, "copy": copy, "rows": rows, "seconds": time.monotonic() - start})


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # never leave the bench without a JSON line
        print(json.dumps({"ok": False, "error": f"sdpa-decode.py crashed: {type(e).__name__}: {e}"}), flush=True)
        sys.exit(0)
