"""Peer timings for dmavk bench: PyTorch SDPA on the same shapes, same card, same call.

  python3 bench/peers/sdpa.py --lengths 4096,8192 --h 8 --d 128 --window 2048 --json out.json

Times (median of --reps, CUDA events, after warm-up):
  dense_causal_ms  SDPA with is_causal=True over all L keys (what DMA replaces)
  wkeys_ms         SDPA of the L queries over only w keys (non-causal): the floor of
                   DMA's work, the same number of (query, key) pairs as DMA keeps
"""
import argparse
import json
import statistics

import torch
import torch.nn.functional as F


def timed(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        out.append(a.elapsed_time(b))
    return statistics.median(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", default="4096,8192,16384")
    p.add_argument("--b", type=int, default=1)
    p.add_argument("--h", type=int, default=8)
    p.add_argument("--hkv", type=int, default=0)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--window", type=int, default=2048)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--json", default="")
    a = p.parse_args()
    hkv = a.hkv or a.h
    rows = []
    for L in [int(x) for x in a.lengths.split(",")]:
        q = torch.randn(a.b, a.h, L, a.d, device="cuda", dtype=torch.float16)
        k = torch.randn(a.b, hkv, L, a.d, device="cuda", dtype=torch.float16)
        v = torch.randn_like(k)
        gqa = hkv != a.h
        dense = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa), a.reps)
        w = min(a.window, L)
        kw, vw = k[:, :, :w].contiguous(), v[:, :, :w].contiguous()
        floor = timed(lambda: F.scaled_dot_product_attention(q, kw, vw, enable_gqa=gqa), a.reps)
        row = dict(device=torch.cuda.get_device_name(), b=a.b, l=L, h=a.h, hkv=hkv, d=a.d, window=a.window,
                   dense_causal_ms=dense, wkeys_ms=floor, torch=torch.__version__)
        rows.append(row)
        print(f"L={L:6d} H={a.h} D={a.d}: SDPA dense causal {dense:.3f} ms, SDPA over w={w} keys {floor:.3f} ms")
        del q, k, v, kw, vw
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
