"""transformers' DogeForCausalLM beside `dmavk generate --bench`: the same checkpoint on the
same card, timed the same way (bench/gpu.sh part doge runs all of it).

  python3 bench/peers/doge.py --make /tmp/doge160m                 # random weights, save_pretrained
  dmavk generate --model /tmp/doge160m --half --bench --json > dmavk.json
  python3 bench/peers/doge.py --model /tmp/doge160m --json hf.json
  python3 bench/peers/doge.py --join dmavk.json hf.json

--make writes a Doge-160M-shaped DogeForCausalLM (SmallDoge's recipe: hidden 768,
intermediate 1536, 24 layers, 6 / 3 heads of 128, keep_window_size 2048, tied embeddings,
dynamic RoPE with factor 4 over 2048 positions; a dense MLP, since transformers 5.17's
DogeCDMoE hands its forward's tuple to dropout) with random weights: normal(0, 0.02)
matrices, norms and residual gates 1, and A drawn away from 0 (|A| >= 0.5; transformers
initialises it to 0, which makes every dynamic weight 1 and DMA a sliding window), in
--dtype, with save_pretrained.

At each context length L (--contexts, default 2K,32K): the prefill of L random tokens (once
untimed, then the median of three; one
forward, use_cache, logits of the last position only), then --steps decode steps of one
token through the KV cache (DynamicCache), each timed by the wall clock after a CUDA
synchronize, as `dmavk generate --bench` times its steps; stream_ms is the same steps'
time between CUDA events on the stream (kernels and the gaps between their launches).
attn_implementation "sdpa" (or --attn eager); the weights' dtype as stored (or --dtype).
Peak memory: torch.cuda.max_memory_allocated over the context's prefill and steps, weights
included (bench/gpu.sh also samples nvidia-smi for both sides).
"""
import argparse
import json
import os
import statistics
import sys
import time

DTYPES = ("float16", "bfloat16", "float32")


def lengths(s):
    out = []
    for x in s.split(","):
        x = x.strip()
        mul = 1024 if x[-1] in "kK" else 1
        out.append(int(x.rstrip("kK")) * mul)
    return out


def make(args):
    import torch
    from transformers import DogeConfig, DogeForCausalLM

    fields = dict(
        vocab_size=32768, hidden_size=768, intermediate_size=1536, num_hidden_layers=24,
        num_attention_heads=6, num_key_value_heads=3, head_dim=128, keep_window_size=2048,
        max_position_embeddings=2048,
        rope_parameters={"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0},
        tie_word_embeddings=True, is_moe=False, hidden_act="silu", rms_norm_eps=1e-6,
        attention_bias=False, mlp_bias=False, bos_token_id=0, eos_token_id=1, pad_token_id=2,
    )
    try:
        cfg = DogeConfig(**fields)
    except (TypeError, ValueError):  # a strict config without a head_dim field (768 / 6 is 128 anyway)
        del fields["head_dim"]
        cfg = DogeConfig(**fields)
    model = DogeForCausalLM(cfg)
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # a tied lm_head is the embedding itself
            if name.endswith(".A"):
                a = torch.randn(p.shape, generator=gen)
                p.copy_(torch.sign(a) * (0.5 + a.abs()))
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            elif p.dim() == 1:  # norm weights, residual gates
                p.fill_(1.0)
            else:
                raise SystemExit(f"doge.py: unexpected parameter {name} {tuple(p.shape)}")
    model = model.to(getattr(torch, args.dtype))
    if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        model.lm_head.weight = model.model.embed_tokens.weight
    model.save_pretrained(args.make)
    n = sum(p.numel() for p in model.parameters())
    print(f"doge.py: {args.make}: {n / 1e6:.1f}M parameters, {args.dtype}, transformers "
          f"{__import__('transformers').__version__}, torch {torch.__version__}", file=sys.stderr)


def bench(args):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
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
            # The prefill once untimed (this length's kernels, the clocks up), then the
            # median of three, as dmavk generate --bench.
            times = []
            for i in range(4):
                out = None
                sync()
                t0 = time.perf_counter()
                out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
                sync()
                if i > 0:
                    times.append(time.perf_counter() - t0)
            prefill = statistics.median(times)
            pkv = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            wall, stream = [], []
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
                stream.append(a.elapsed_time(b) / 1e3)
            w = statistics.median(wall)
            rows.append({
                "device": torch.cuda.get_device_name(), "context": L, "attn": args.attn,
                "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
                "prefill_ms": prefill * 1e3, "prefill_tokens_per_s": L / prefill,
                "decode_step_ms": w * 1e3, "decode_tokens_per_s": 1 / w, "decode_stream_ms": statistics.median(stream) * 1e3,
                "steps": args.steps,
                "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
                "peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
                "keep_window_size": cfg.keep_window_size, "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size,
                "transformers": __import__("transformers").__version__, "torch": torch.__version__,
            })
            del out, pkv
    return rows


def load_rows(paths):
    rows = {}
    for p in paths.split(","):
        try:
            for r in json.load(open(p)):
                rows[r["context"]] = r
        except (OSError, ValueError) as e:
            print(f"doge.py: {p}: {e}", file=sys.stderr)
    return rows


def smi(d, side, L):
    """nvidia-smi's peak for one side and context, above the level before it (MiB), or ''."""
    try:
        return open(os.path.join(d, f"{side}_{L}.mib")).read().strip() + " (nvidia-smi)"
    except OSError:
        return ""


def join(dm_paths, hf_paths, smi_dir=None):
    dm, hf = load_rows(dm_paths), load_rows(hf_paths)
    print("| card | context | side | prefill tok/s | decode tok/s | decode step ms | decode GPU ms | host us/step (share) | peak GPU MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for L in sorted(set(dm) | set(hf)):
        d, h = dm.get(L), hf.get(L)
        card = (h or d)["device"]
        if d:
            mem = f"{d['peak_device_mib']:.0f} buffers"
            if smi_dir and smi(smi_dir, "dmavk", L):
                mem += "; " + smi(smi_dir, "dmavk", L)
            print(f"| {card} | {L} | dmavk ({d['attention_dtype']} attention, weights {d['weights_dtype']}) | {d['prefill_tokens_per_s']:.0f} | "
                  f"{d['decode_tokens_per_s']:.1f} | {d['decode_step_ms']:.3f} | {d['decode_gpu_ms']:.3f} | "
                  f"{d['decode_host_us']:.0f} ({100 * d['decode_host_share']:.1f}%) | {mem} |")
        if h:
            mem = f"{h['peak_allocated_mib']:.0f} allocated, {h['peak_reserved_mib']:.0f} reserved"
            if smi_dir and smi(smi_dir, "hf", L):
                mem += "; " + smi(smi_dir, "hf", L)
            print(f"| {card} | {L} | transformers {h['transformers']} ({h['attn']}, {h['dtype']}) | {h['prefill_tokens_per_s']:.0f} | "
                  f"{h['decode_tokens_per_s']:.1f} | {h['decode_step_ms']:.3f} | stream {h['decode_stream_ms']:.3f} | | {mem} |")
        if d and h:
            print(f"| | {L} | dmavk / transformers | {d['prefill_tokens_per_s'] / h['prefill_tokens_per_s']:.2f}x | "
                  f"{d['decode_tokens_per_s'] / h['decode_tokens_per_s']:.2f}x | | | | |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make", metavar="DIR", help="write a Doge-160M-shaped model with random weights there")
    ap.add_argument("--seed", type=int, default=7, help="with --make: the weights' seed")
    ap.add_argument("--model", help="a Doge model directory (e.g. from --make)")
    ap.add_argument("--contexts", default="2K,32K")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--dtype", default=None, choices=("auto",) + DTYPES,
                    help="the weights' dtype (--make: default float16; a run: default auto, as stored)")
    ap.add_argument("--json", help="write the rows there (else print them)")
    ap.add_argument("--join", nargs=2, metavar=("DMAVK_JSONS", "HF_JSONS"),
                    help="print the table of result files (comma-separated lists)")
    ap.add_argument("--smi", metavar="DIR", help="with --join: nvidia-smi peaks, DIR/{dmavk,hf}_<context>.mib")
    a = ap.parse_args()
    if a.join:
        join(*a.join, a.smi)
        return
    if a.make:
        a.dtype = a.dtype or "float16"
        if a.dtype == "auto":
            ap.error("--make needs a dtype")
        make(a)
        return
    if not a.model:
        ap.error("--model, --make or --join is required")
    a.dtype = a.dtype or "auto"
    rows = bench(a)
    if a.json:
        json.dump(rows, open(a.json, "w"), indent=2)
    else:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
