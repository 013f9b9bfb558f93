"""Join `dmavk bench --json` rows with `bench/peers/sdpa.py --json` rows measured on the same
card in the same run into one markdown table of times and ratios.

  python3 bench/peers/join.py dmavk.json sdpa.json [more pairs...]
"""
import json
import sys

KEY = ("b", "lq", "lk", "h", "hkv", "d", "window")


def main():
    if len(sys.argv) < 3 or len(sys.argv) % 2 != 1:
        sys.exit(__doc__)
    print("| card | section | B | Lq | Lk | H/Hkv | D | w | path | DMA ms (sel + attn) | SDPA dense ms | SDPA over w keys ms | DMA / dense | DMA / floor |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for i in range(1, len(sys.argv), 2):
        dm = json.load(open(sys.argv[i]))
        peers = {tuple(r[k] for k in KEY): r for r in json.load(open(sys.argv[i + 1]))}
        for r in dm:
            p = peers.get(tuple(r[k] for k in KEY))
            if p is None:
                continue
            t = r["gpu_ms"]
            print(f"| {p['device']} | {r['section']} | {r['b']} | {r['lq']} | {r['lk']} | {r['h']}/{r['hkv']} | {r['d']} | "
                  f"{r['window']} | {r.get('path', '')} | {t:.3f} ({r['selection_ms']:.3f} + {r['attention_ms']:.3f}) | "
                  f"{p['dense_causal_ms']:.3f} | {p['wkeys_ms']:.3f} | {t / p['dense_causal_ms']:.2f}x | {t / p['wkeys_ms']:.2f}x |")


if __name__ == "__main__":
    main()
