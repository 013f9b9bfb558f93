#!/usr/bin/env bash
# dmavk beside transformers on a Doge-160M-shaped model (hidden 768, 24 layers, 6 / 3
# heads of 128, keep_window_size 2048, random fp16 weights), on the lent NVIDIA GPU, in one
# device call: prefill and decode tokens/s at 2K and 32K context, a decode step's host
# cost, peak GPU memory (nvidia-smi, sampled every 50 ms, above the idle level). Build the
# CLI first (go build -o .gpu/dmavk ./cmd/dmavk); results go to $OUT, the table is
# printed.
#
#   bench/doge.sh                 # fp16 checkpoint, dmavk --half (fp16 attention, tensor cores)
#   HALF= bench/doge.sh           # dmavk in float32 from the fp16 weights
set -uo pipefail
. bench/gpu_env.sh
OUT=${OUT:-/tmp/doge-bench}
MODEL=${MODEL:-/tmp/doge160m}
CONTEXTS=${CONTEXTS:-2K,32K}
HALF=${HALF---half}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# peak NAME CMD...: runs CMD while sampling the GPU's used memory; records the peak above
# the level before it in $OUT/mem_NAME.txt (MiB).
peak() {
	local name=$1
	shift
	local idle
	idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
	nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 50 >"/tmp/mem_$name.log" &
	local sampler=$!
	"$@"
	local rc=$?
	kill "$sampler" 2>/dev/null
	wait "$sampler" 2>/dev/null
	echo $(($(sort -n "/tmp/mem_$name.log" | tail -1) - idle)) >"$OUT/mem_$name.txt"
	return $rc
}

# One process per context length, so that each peak is that length's own.
$D generate --random 160m --dtype float16 --save "$MODEL" --bench --contexts 256 --steps 4 >/dev/null 2>"$OUT/dmavk.err" || { cat "$OUT/dmavk.err"; exit 1; }
IFS=, read -r -a LENS <<<"$CONTEXTS"
for L in "${LENS[@]}"; do
	peak "dmavk_$L" timeout 240 $D generate --model "$MODEL" $HALF --bench --contexts "$L" --steps 64 --json >"$OUT/dmavk_$L.json" 2>>"$OUT/dmavk.err"
	peak "hf_$L" timeout 300 python3 bench/peers/doge.py --model "$MODEL" --contexts "$L" --steps 32 --json "$OUT/hf_$L.json" 2>>"$OUT/hf.err"
done
python3 - "$OUT" "${LENS[@]}" <<'PY'
import json, sys
out, lens = sys.argv[1], sys.argv[2:]
def ctx(s): return int(s.rstrip("kK")) * (1024 if s[-1] in "kK" else 1)
dm, hf, mem = [], [], {}
for s in lens:
    for side, rows in (("dmavk", dm), ("hf", hf)):
        try:
            rows += json.load(open(f"{out}/{side}_{s}.json"))
            mem[f"{side}_{ctx(s)}"] = open(f"{out}/mem_{side}_{s}.txt").read().strip() + " (nvidia-smi)"
        except (OSError, ValueError) as e:
            print(f"{side} {s}: {e}", file=sys.stderr)
json.dump(dm, open(f"{out}/dmavk.json", "w"), indent=2)
json.dump(hf, open(f"{out}/hf.json", "w"), indent=2)
json.dump(mem, open(f"{out}/mem.json", "w"), indent=2)
PY
python3 bench/peers/doge.py --join "$OUT/dmavk.json" "$OUT/hf.json" --mem "$OUT/mem.json" | tee "$OUT/joined.md"
tail -3 "$OUT/dmavk.err" "$OUT/hf.err"
