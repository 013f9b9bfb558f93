"""Peer timings for dmavk bench: PyTorch SDPA on the same shapes, on the same card in the same run.

  dmavk bench --sweep table2 --configs > configs.json
  python3 bench/peers/sdpa.py --configs configs.json --json sdpa.json
  python3 bench/peers/sdpa.py --lengths 4096,8192 --h 8 --d 128 --window 2048 --json sdpa.json

Times (median of --reps, CUDA events, after warm-up), fp16:
  dense_causal_ms  SDPA over all Lk keys, causal when Lq = Lk (one query row sees every
                   key): what DMA replaces
  wkeys_ms         SDPA of the Lq queries over only min(w, Lk) keys, not causal: the floor
                   of DMA's work, as many (query, key) pairs as DMA keeps
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


def run(cfg, reps, backward=False):
    B, Lq, Lk, H, Hkv, D, w = (cfg[k] for k in ("b", "lq", "lk", "h", "hkv", "d", "window"))
    q = torch.randn(B, H, Lq, D, device="cuda", dtype=torch.float16, requires_grad=backward)
    k = torch.randn(B, Hkv, Lk, D, device="cuda", dtype=torch.float16, requires_grad=backward)
    v = torch.randn(B, Hkv, Lk, D, device="cuda", dtype=torch.float16, requires_grad=backward)
    gqa = Hkv != H
    causal = Lq == Lk and Lq > 1
    dO = torch.randn(B, H, Lq, D, device="cuda", dtype=torch.float16)

    def step(kk, vv, is_causal):
        # Forward alone, or forward + backward (gradients of q, k, v) with --backward.
        out = F.scaled_dot_product_attention(q, kk, vv, is_causal=is_causal, enable_gqa=gqa)
        if backward:
            out.backward(dO)

    dense = timed(lambda: step(k, v, causal), reps)
    n = min(w, Lk)
    kw = k.detach()[:, :, :n].contiguous().requires_grad_(backward)
    vw = v.detach()[:, :, :n].contiguous().requires_grad_(backward)
    floor = timed(lambda: step(kw, vw, False), reps)
    return dict(cfg, device=torch.cuda.get_device_name(), dense_causal_ms=dense, wkeys_ms=floor, torch=torch.__version__)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--configs", default="", help="JSON list from `dmavk bench --configs`")
    p.add_argument("--lengths", default="4096,8192,16384")
    p.add_argument("--b", type=int, default=1)
    p.add_argument("--h", type=int, default=8)
    p.add_argument("--hkv", type=int, default=0)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--window", type=int, default=2048)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--json", default="")
    p.add_argument("--backward", action="store_true", help="time forward + backward")
    a = p.parse_args()
    if a.configs:
        cfgs = json.load(open(a.configs))
    else:
        cfgs = [dict(section="custom", b=a.b, lq=L, lk=L, h=a.h, hkv=a.hkv or a.h, d=a.d, window=a.window)
                for L in (int(x) for x in a.lengths.split(","))]
    rows = []
    for cfg in cfgs:
        r = run(cfg, a.reps, a.backward)
        rows.append(r)
        print(f"{r['section']:>9} B={r['b']} Lq={r['lq']:6d} Lk={r['lk']:7d} H={r['h']}/{r['hkv']} D={r['d']}: "
              f"SDPA dense {r['dense_causal_ms']:.3f} ms, SDPA over w keys {r['wkeys_ms']:.3f} ms")
        torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
