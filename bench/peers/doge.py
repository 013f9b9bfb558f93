"""transformers' DogeForCausalLM beside `dmavk generate --bench`: the same checkpoint on the
same card, timed the same way.

  dmavk generate --random 160m --dtype float16 --save /tmp/doge160m --half --bench --json > dmavk.json
  python3 bench/peers/doge.py --model /tmp/doge160m --json hf.json
  python3 bench/peers/doge.py --join dmavk.json hf.json

At each context length L (--contexts, default 2K,32K): the prefill of L random tokens (one
forward, use_cache, logits of the last position only), then --steps decode steps of one
token through the KV cache (DynamicCache), each timed by the wall clock after a CUDA
synchronize, as `dmavk generate --bench` times its steps; gpu_ms is the same steps' time
between CUDA events. attn_implementation "sdpa" (or --attn eager); the weights' dtype as
stored (or --dtype). Peak memory: torch.cuda.max_memory_allocated over the context's
prefill and steps (bench/doge.sh also samples nvidia-smi for both sides).
"""
import argparse
import json
import statistics
import sys
import time


def lengths(s):
    out = []
    for x in s.split(","):
        x = x.strip()
        mul = 1024 if x[-1] in "kK" else 1
        out.append(int(x.rstrip("kK")) * mul)
    return out


def bench(args):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "auto": "auto"}[args.dtype]
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, attn_implementation=args.attn).cuda().eval()
    cfg = model.config
    vocab = cfg.vocab_size
    gen = torch.Generator(device="cuda").manual_seed(7)

    def tokens(n):
        return torch.randint(0, vocab, (1, n), device="cuda", generator=gen)

    def sync():
        torch.cuda.synchronize()

    rows = []
    with torch.inference_mode():
        # Warm-up: kernels and the allocator, clocks up.
        out = model(input_ids=tokens(256), use_cache=True, logits_to_keep=1)
        pkv = out.past_key_values
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(8):
            out = model(input_ids=nxt, past_key_values=pkv, use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        del out, pkv
        sync()
        for L in lengths(args.contexts):
            print(f"doge.py: context {L} ...", file=sys.stderr)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            ids = tokens(L)
            sync()
            t0 = time.perf_counter()
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            sync()
            prefill = time.perf_counter() - t0
            pkv = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            wall, gpu = [], []
            for _ in range(args.steps):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                sync()
                t = time.perf_counter()
                a.record()
                out = model(input_ids=nxt, past_key_values=pkv, use_cache=True)
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                b.record()
                sync()
                wall.append(time.perf_counter() - t)
                gpu.append(a.elapsed_time(b) / 1e3)
            w = statistics.median(wall)
            rows.append({
                "device": torch.cuda.get_device_name(), "context": L, "attn": args.attn, "dtype": str(next(model.parameters()).dtype),
                "prefill_ms": prefill * 1e3, "prefill_tokens_per_s": L / prefill,
                "decode_step_ms": w * 1e3, "decode_tokens_per_s": 1 / w, "decode_gpu_ms": statistics.median(gpu) * 1e3,
                "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
                "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
                "keep_window_size": cfg.keep_window_size, "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size,
                "transformers": __import__("transformers").__version__, "torch": torch.__version__,
            })
            del out, pkv
    return rows


def join(dm_path, hf_path, mem=None):
    dm = {r["context"]: r for r in json.load(open(dm_path))}
    hf = {r["context"]: r for r in json.load(open(hf_path))}
    mem = mem or {}
    print("| card | context | side | prefill tok/s | decode tok/s | decode step ms | host us/step (share) | peak GPU MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for L in sorted(set(dm) & set(hf)):
        d, h = dm[L], hf[L]
        dmem = mem.get(f"dmavk_{L}", "")
        hmem = mem.get(f"hf_{L}", f"{h['peak_allocated_mib']:.0f} alloc / {h['peak_reserved_mib']:.0f} reserved")
        print(f"| {h['device']} | {L} | dmavk ({d['attention_dtype']} attention) | {d['prefill_tokens_per_s']:.0f} | {d['decode_tokens_per_s']:.1f} | "
              f"{d['decode_step_ms']:.3f} | {d['decode_host_us']:.0f} ({100 * d['decode_host_share']:.1f}%) | {dmem} |")
        print(f"| {h['device']} | {L} | transformers {h['transformers']} ({h['attn']}, {h['dtype']}) | {h['prefill_tokens_per_s']:.0f} | "
              f"{h['decode_tokens_per_s']:.1f} | {h['decode_step_ms']:.3f} | (GPU busy {h['decode_gpu_ms']:.3f} ms) | {hmem} |")
        print(f"| | {L} | dmavk / transformers | {d['prefill_tokens_per_s'] / h['prefill_tokens_per_s']:.2f}x | "
              f"{d['decode_tokens_per_s'] / h['decode_tokens_per_s']:.2f}x | | | |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a Doge model directory (e.g. from dmavk generate --random 160m --save DIR)")
    ap.add_argument("--contexts", default="2K,32K")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"])
    ap.add_argument("--json", help="write the rows there (else print them)")
    ap.add_argument("--join", nargs=2, metavar=("DMAVK_JSON", "HF_JSON"), help="print the table of two result files")
    ap.add_argument("--mem", help="with --join: a JSON of peak nvidia-smi MiB per side and context (bench/doge.sh)")
    a = ap.parse_args()
    if a.join:
        join(*a.join, json.load(open(a.mem)) if a.mem else None)
        return
    if not a.model:
        ap.error("--model is required")
    rows = bench(a)
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=2)
    else:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
