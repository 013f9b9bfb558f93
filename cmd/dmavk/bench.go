package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/vk"
)

func init() {
	register(&command{
		name:  "bench",
		short: "time DMA forward passes (GPU timestamps per stage) over sweeps of shapes",
		usage: "[--sweep NAME | --lengths 4K,8K --b 1 --h 8 --hkv 8 --d 128 --window 2048 --decode] [--cache] [--equal-weights] [--backward [--deterministic]] [--mode row] [--dtype float16|bfloat16|float32] [--reps 10] [--peak] [--json] [--configs]",
		run:   runBench,
	})
}

// benchConfig is one shape to time; bench/peers/sdpa.py reads the same list (--configs).
type benchConfig struct {
	Section string `json:"section"`
	B       int    `json:"b"`
	Lq      int    `json:"lq"`
	Lk      int    `json:"lk"`
	H       int    `json:"h"`
	Hkv     int    `json:"hkv"`
	D       int    `json:"d"`
	Window  int    `json:"window"`
}

// benchRow is one measured configuration.
type benchRow struct {
	benchConfig
	Device     string  `json:"device"`
	Mode       string  `json:"mode"`
	DType      string  `json:"dtype"`
	Path       string  `json:"path"`         // attention kernel: coopmat2, coopmat or portable
	GPUMillis  float64 `json:"gpu_ms"`       // median over reps: weights + selection + attention
	SelMillis  float64 `json:"selection_ms"` // median
	AttnMillis float64 `json:"attention_ms"` // median
	WallMillis float64 `json:"wall_ms"`      // median, host view of the whole call
	SelShare   float64 `json:"selection_share"`
	KeptTFLOPs float64 `json:"kept_tflops"` // 4 * D * (kept pairs) / GPU time
	KeptPairs  int64   `json:"kept_pairs"`
	PeakShare  float64 `json:"peak_share,omitempty"` // kept TFLOP/s over the measured matrix peak
	// WalkDropped is the share of the coopmat2 attention's walked (row, packed entry)
	// pairs that no row keeps, relative to the kept pairs (--profile, mode row prefill).
	WalkDropped float64 `json:"walk_dropped,omitempty"`
	// PassMillis is the median GPU time of every kernel: weights, ord, sort, blocks, tau, attention.
	PassMillis  map[string]float64 `json:"pass_ms"`
	Repetitions int                `json:"reps"`
}

// sweeps are the named configuration lists: the paper's Table 2 (training, inference,
// batch, heads, head dims; w = 2048), DMA beside dense attention at w = 2048 (peers),
// and long contexts.
func sweeps(name string) ([]benchConfig, bool) {
	var cs []benchConfig
	switch name {
	case "table2":
		for _, l := range []int{256, 512, 1024, 2048, 4096, 8192, 16384, 32768} {
			cs = append(cs, benchConfig{"training", 1, l, l, 2, 1, 128, 2048})
		}
		for _, l := range []int{256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536} {
			cs = append(cs, benchConfig{"inference", 1, 1, l, 2, 1, 128, 2048})
		}
		for _, b := range []int{1, 2, 4, 8} {
			cs = append(cs, benchConfig{"batch", b, 4096, 4096, 2, 1, 32, 2048})
		}
		for _, h := range [][2]int{{1, 1}, {2, 1}, {4, 1}, {8, 2}} {
			cs = append(cs, benchConfig{"heads", 1, 4096, 4096, h[0], h[1], 32, 2048})
		}
		for _, d := range []int{32, 64, 96, 128} {
			cs = append(cs, benchConfig{"head dim", 1, 4096, 4096, 2, 1, d, 2048})
		}
	case "peers":
		for _, l := range []int{4096, 8192, 16384} {
			cs = append(cs, benchConfig{"prefill", 1, l, l, 8, 8, 128, 2048})
		}
		cs = append(cs, benchConfig{"prefill", 1, 32768, 32768, 4, 4, 128, 2048})
	case "long":
		for _, l := range []int{131072, 1048576} {
			cs = append(cs, benchConfig{"long", 1, l, l, 8, 8, 128, 2048})
		}
	default:
		return nil, false
	}
	return cs, true
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		mult, num := 1, f
		switch {
		case strings.HasSuffix(f, "K") || strings.HasSuffix(f, "k"):
			mult, num = 1024, f[:len(f)-1]
		case strings.HasSuffix(f, "M") || strings.HasSuffix(f, "m"):
			mult, num = 1024*1024, f[:len(f)-1]
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad length %q", f)
		}
		out = append(out, n*mult)
	}
	return out, nil
}

func median(x []float64) float64 {
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func runBench(args []string, stdout io.Writer) error {
	c := commands["bench"]
	fs := newFlagSet(c, stdout)
	sweep := fs.String("sweep", "", "a named sweep instead of the shape flags: table2 (the paper's Table 2), peers (DMA beside dense attention at w = 2048, H 8 and 4, 4K to 32K), long (128K, 1M)")
	lengths := fs.String("lengths", "4K,8K,16K", "sequence lengths, comma-separated; K = 1024 (Lq = Lk, or Lk with --decode)")
	decode := fs.Bool("decode", false, "one query row (Lq = 1) over Lk keys")
	cache := fs.Bool("cache", false, "rows of at most 4 queries decode through a dma.KVCache: each step appends its tokens and attends in one submission (AppendAttendInto)")
	backward := fs.Bool("backward", false, "time Forward (keeping its plan, Options.SavePlan) + Backward (GPU time of both calls; --profile lists the backward's passes as bwd-...) instead of Forward")
	deterministic := fs.Bool("deterministic", false, "with --backward: the backward's deterministic mode")
	equal := fs.Bool("equal-weights", false, "every dynamic weight 0 (A = 0, the public initialisation): DMA is then sliding-window attention, and in a KV cache every new key joins the best w")
	b := fs.Int("b", 1, "batch")
	h := fs.Int("h", 8, "query heads")
	hkv := fs.Int("hkv", 0, "kv heads (0: same as --h)")
	d := fs.Int("d", 128, "head dimension")
	window := fs.Int("window", 2048, "keys kept per row")
	mode := fs.String("mode", "row", "row, shared or none")
	dtype := fs.String("dtype", "float16", "float16, bfloat16 or float32")
	reps := fs.Int("reps", 10, "timed repetitions per configuration (after 2 warm-ups)")
	warmup := fs.Duration("warmup", 300*time.Millisecond, "keep warming up (untimed repetitions) at least this long: GPUs raise their clocks only under sustained load")
	asJSON := fs.Bool("json", false, "print JSON rows")
	peak := fs.Bool("peak", false, "first measure the device's matrix peak (dmavk peak) and report each row's share of it")
	profile := fs.Bool("profile", false, "also print the GPU time of every kernel (the selection plan pass by pass)")
	printConfigs := fs.Bool("configs", false, "print the configurations as JSON (for bench/peers/sdpa.py --configs) and exit")
	cpuProfile := fs.String("cpuprofile", "", "write a Go CPU profile of the timed calls to this file (where the host time of a call goes)")
	if err := parseFlags(c, fs, args, stdout); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var cfgs []benchConfig
	if *sweep != "" {
		var ok bool
		if cfgs, ok = sweeps(*sweep); !ok {
			return usagef("--sweep %q: table2, peers or long", *sweep)
		}
	} else {
		ls, err := parseInts(*lengths)
		if err != nil {
			return usageError{err}
		}
		if *hkv == 0 {
			*hkv = *h
		}
		for _, l := range ls {
			lq := l
			if *decode {
				lq = 1
			}
			cfgs = append(cfgs, benchConfig{"custom", *b, lq, l, *h, *hkv, *d, *window})
		}
	}
	if *printConfigs {
		return json.NewEncoder(stdout).Encode(cfgs)
	}
	m, err := dma.ParseMode(*mode)
	if err != nil || m == dma.ModeExplicit {
		return usagef("--mode %q: row, shared or none", *mode)
	}
	var dt dma.DType
	switch *dtype {
	case "float16":
		dt = dma.Float16
	case "bfloat16":
		dt = dma.BFloat16
	case "float32":
		dt = dma.Float32
	default:
		return usagef("--dtype %q: float16, bfloat16 or float32", *dtype)
	}
	if *reps < 1 {
		return usagef("--reps must be at least 1")
	}
	if *profile && os.Getenv("DMAVK_PIPELINE_STATS") == "" {
		// The driver's statistics of each kernel (registers, spills...), printed below.
		os.Setenv("DMAVK_PIPELINE_STATS", "1")
	}
	dev, err := dma.Open(dma.Config{})
	if err != nil {
		return err
	}
	defer dev.Close()
	ctx := context.Background()
	var pk peakResult
	if *peak {
		fmt.Fprintln(os.Stderr, "bench: measuring the matrix peak ...")
		if pk, err = measurePeak(ctx, dev.VK(), 4096, 1<<30, 5); err != nil {
			return err
		}
	}
	rng := rand.New(rand.NewPCG(rand.Uint64(), 7))
	var rows []benchRow
	for i, cfg := range cfgs {
		fmt.Fprintf(os.Stderr, "bench: [%d/%d] %s B=%d Lq=%d Lk=%d H=%d/%d D=%d w=%d ...\n", i+1, len(cfgs), cfg.Section, cfg.B, cfg.Lq, cfg.Lk, cfg.H, cfg.Hkv, cfg.D, cfg.Window)
		row, err := benchOne(ctx, dev, rng, cfg, m, dt, benchOptions{reps: *reps, warmup: *warmup, cache: *cache, backward: *backward, deterministic: *deterministic, equalWeights: *equal, walk: *profile})
		if err != nil {
			return fmt.Errorf("%+v: %w", cfg, err)
		}
		if pk.MatmulTFLOP > 0 {
			row.PeakShare = row.KeptTFLOPs / pk.MatmulTFLOP
		}
		rows = append(rows, row)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	fmt.Fprintf(stdout, "%s, %s, mode %s, median of %d\n", dev.Name(), dt, m, *reps)
	if *cache {
		// Measured on NVIDIA (bench/NOTES.md): one step at a time leaves the GPU mostly
		// idle, and the driver then holds the SM clock at its lowest.
		fmt.Fprintln(stdout, "KV-cache rows: one step at a time, the GPU idle between steps (drivers may lower its clock); go test ./dma -bench KVCacheStep also times steps back to back")
	}
	if pk.MatmulTFLOP > 0 {
		fmt.Fprintf(stdout, "measured peak: %.1f TFLOP/s (%s matmul), copy %.0f GB/s\n", pk.MatmulTFLOP, pk.MatmulPath, pk.CopyGBs)
	}
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "section\tB\tLq\tLk\tH/Hkv\tD\tw\tpath\tGPU ms\tselection ms\tattention ms\tselection share\tkept TFLOP/s\t% of peak\twall ms\t")
	for _, r := range rows {
		share := "-"
		if r.PeakShare > 0 {
			share = fmt.Sprintf("%.1f%%", 100*r.PeakShare)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d/%d\t%d\t%d\t%s\t%.3f\t%.3f\t%.3f\t%.1f%%\t%.2f\t%s\t%.2f\t\n", r.Section, r.B, r.Lq, r.Lk, r.H, r.Hkv, r.D, r.Window,
			r.Path, r.GPUMillis, r.SelMillis, r.AttnMillis, 100*r.SelShare, r.KeptTFLOPs, share, r.WallMillis)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if *profile {
		fmt.Fprintln(stdout, "\nper kernel, median ms:")
		for _, r := range rows {
			fmt.Fprintf(stdout, "  %s B=%d Lq=%d Lk=%d H=%d/%d D=%d w=%d:", r.Section, r.B, r.Lq, r.Lk, r.H, r.Hkv, r.D, r.Window)
			for _, name := range []string{"weights", "append", "ord", "sort", "blocks", "tau", "pack", "split", "merge", "attention",
				"bwd-ord", "bwd-sort", "bwd-blocks", "bwd-tau", "bwd-pack", "bwd-check", "bwd-rows", "bwd-keys", "bwd-reduce", "bwd-backward", "weights-bwd"} {
				if t, ok := r.PassMillis[name]; ok {
					fmt.Fprintf(stdout, " %s %.3f", name, t)
				}
			}
			if r.WalkDropped > 0 {
				fmt.Fprintf(stdout, "; walked and dropped %.1f%% of the kept pairs", 100*r.WalkDropped)
			}
			fmt.Fprintln(stdout)
		}
		printPipelineStats(stdout, dev.VK())
	}
	return nil
}

// printPipelineStats prints what the driver says of each compiled kernel, where it says
// anything (VK_KHR_pipeline_executable_properties).
func printPipelineStats(w io.Writer, d *vk.Device) {
	if !d.Caps().PipelineStatistics {
		fmt.Fprintf(w, "\nkernel statistics: %s does not report them\n", d.Caps().Name)
		return
	}
	pipes := d.Pipelines()
	sort.Slice(pipes, func(i, j int) bool { return pipes[i].Name() < pipes[j].Name() })
	fmt.Fprintln(w, "\nkernel statistics (the driver's):")
	for _, p := range pipes {
		stats, err := p.Statistics()
		if err != nil {
			fmt.Fprintf(w, "  %s: %v\n", p.Name(), err)
			continue
		}
		var parts []string
		for _, s := range stats {
			parts = append(parts, fmt.Sprintf("%s %g", s.Name, s.Value))
		}
		fmt.Fprintf(w, "  %s: %s\n", p.Name(), strings.Join(parts, ", "))
	}
}

// benchOptions are the flags that shape every row's measurement.
type benchOptions struct {
	reps          int
	warmup        time.Duration
	cache         bool // decode through a KV cache
	backward      bool // Forward + Backward
	deterministic bool // the backward's deterministic mode
	equalWeights  bool // every weight 0
	walk          bool // count the coopmat2 tiles' walk (benchRow.WalkDropped)
}

func benchOne(ctx context.Context, dev *dma.Device, rng *rand.Rand, cfg benchConfig, m dma.Mode, dt dma.DType, o benchOptions) (benchRow, error) {
	reps, warmup, useCache, backward := o.reps, o.warmup, o.cache, o.backward
	row := benchRow{benchConfig: cfg, Device: dev.Name(), Mode: m.String(), DType: dt.String(), Repetitions: reps}
	// Uniform in [-1, 1) from a xorshift generator: fast enough for 1M-token tensors,
	// and never zeros (which would flatter the arithmetic).
	state := rng.Uint64() | 1
	random := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			state ^= state << 13
			state ^= state >> 7
			state ^= state << 17
			x[i] = float32(int32(state>>32)) / (1 << 31)
		}
		return x
	}
	var closers []interface{ Close() error }
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	mk := func(s dma.Shape) (*dma.Tensor, error) {
		t, err := dev.NewTensor(dt, s, dma.BLHD)
		if err != nil {
			return nil, err
		}
		closers = append(closers, t)
		return t, t.Upload(ctx, random(s.Elems()))
	}
	q, err := mk(dma.Shape{B: cfg.B, L: cfg.Lq, H: cfg.H, D: cfg.D})
	if err != nil {
		return row, err
	}
	k, err := mk(dma.Shape{B: cfg.B, L: cfg.Lk, H: cfg.Hkv, D: cfg.D})
	if err != nil {
		return row, err
	}
	v, err := mk(dma.Shape{B: cfg.B, L: cfg.Lk, H: cfg.Hkv, D: cfg.D})
	if err != nil {
		return row, err
	}
	wt, err := dev.NewWeights(cfg.B, cfg.Hkv, cfg.Lk)
	if err != nil {
		return row, err
	}
	closers = append(closers, wt)
	weights := func(n int) []float32 {
		if o.equalWeights {
			return make([]float32, n)
		}
		return random(n)
	}
	given := weights(cfg.B * cfg.Hkv * cfg.Lk)
	if err := wt.Upload(ctx, given); err != nil {
		return row, err
	}
	opt := dma.Options{Mode: m, Window: cfg.Window, Causal: true}
	if m != dma.ModeNone {
		opt.Weights = wt
	}
	// Through a KV cache, as a decoder runs it: each step appends its Lq tokens (key,
	// value and weight) and attends their query rows in one submission
	// (AppendAttendInto; with one row in mode row, the thresholds carried from the step
	// before). GPU time: the attention (tau, split, merge); pass "append" beside it; wall:
	// the whole step. The cache starts with the
	// keys before the steps, and warm untimed steps (min(Lk/2, 4096) tokens; --warmup does
	// not apply) run first, so the timed steps end at Lk keys.
	var kv *dma.KVCache
	var qs []*dma.Tensor
	var outs []*dma.Result
	var chunkK, chunkV *dma.Tensor
	var chunkW []*dma.Weights // two, alternating: each step's new keys get fresh random weights
	warm := 0
	if useCache && cfg.Lq <= 4 && (m == dma.ModeRow || m == dma.ModeNone) {
		steps := reps + 2
		warm = min(cfg.Lk/2, 4096) / cfg.Lq
		prefill := cfg.Lk - (warm+steps)*cfg.Lq
		if prefill < 1 {
			warm = max((cfg.Lk-1)/cfg.Lq-steps, 0)
			if prefill = cfg.Lk - (warm+steps)*cfg.Lq; prefill < 1 {
				return row, fmt.Errorf("Lk = %d is too short for %d steps of %d tokens", cfg.Lk, steps, cfg.Lq)
			}
		}
		if kv, err = dev.NewKVCache(dma.KVCacheConfig{Sequences: cfg.B, Capacity: cfg.Lk, KVHeads: cfg.Hkv, HeadDim: cfg.D, DType: dt}); err != nil {
			return row, err
		}
		closers = append(closers, kv)
		newWeights := func(n int) (*dma.Weights, error) {
			w, err := dev.NewWeights(1, cfg.Hkv, n)
			if err != nil {
				return nil, err
			}
			closers = append(closers, w)
			return w, w.Upload(ctx, weights(cfg.Hkv*n))
		}
		for b := range cfg.B {
			kb, err := mk(dma.Shape{B: 1, L: prefill, H: cfg.Hkv, D: cfg.D})
			if err != nil {
				return row, err
			}
			vb, err := mk(dma.Shape{B: 1, L: prefill, H: cfg.Hkv, D: cfg.D})
			if err != nil {
				return row, err
			}
			wb, err := newWeights(prefill)
			if err != nil {
				return row, err
			}
			if err := kv.Append(ctx, b, kb, vb, wb); err != nil {
				return row, err
			}
			qb, err := mk(dma.Shape{B: 1, L: cfg.Lq, H: cfg.H, D: cfg.D})
			if err != nil {
				return row, err
			}
			out, err := kv.NewResult(qb)
			if err != nil {
				return row, err
			}
			closers = append(closers, out)
			qs, outs = append(qs, qb), append(outs, out)
		}
		if chunkK, err = mk(dma.Shape{B: 1, L: cfg.Lq, H: cfg.Hkv, D: cfg.D}); err != nil {
			return row, err
		}
		if chunkV, err = mk(dma.Shape{B: 1, L: cfg.Lq, H: cfg.Hkv, D: cfg.D}); err != nil {
			return row, err
		}
		for range 2 {
			w, err := newWeights(cfg.Lq)
			if err != nil {
				return row, err
			}
			chunkW = append(chunkW, w)
		}
	}
	var dO *dma.Tensor
	if backward {
		if dO, err = mk(dma.Shape{B: cfg.B, L: cfg.Lq, H: cfg.H, D: cfg.D}); err != nil {
			return row, err
		}
	}
	// prepare readies the next step outside the timed call: the weights of a KV-cache
	// step's new keys, as a model computes them before the step.
	steps := 0
	prepare := func() error {
		if kv == nil {
			return nil
		}
		steps++
		return chunkW[steps%2].Upload(ctx, weights(cfg.Hkv*cfg.Lq))
	}
	run := func() (*dma.Result, dma.Profile, error) {
		if backward {
			// Forward + Backward as a training step runs them, each profiled by GPU
			// timestamps: the backward's passes are named "bwd-..." (its own rebuild of
			// the selection plan included).
			// The forward keeps its plan and packed keys for the backward, as a
			// training step would (Options.SavePlan).
			opt := opt
			opt.SavePlan = true
			res, fp, err := dev.ForwardProfiled(ctx, q, k, v, opt)
			if err != nil {
				return nil, dma.Profile{}, err
			}
			g, bp, err := dev.BackwardProfiled(ctx, q, k, v, res, dO, opt, dma.BackwardOptions{Deterministic: o.deterministic})
			if err != nil {
				res.Close()
				return nil, dma.Profile{}, err
			}
			res.Path += "+bwd-" + g.Path
			g.Close()
			fp.Weights += bp.Weights
			fp.Selection += bp.Selection
			fp.Attention += bp.Attention
			for _, p := range bp.Passes {
				if !strings.HasPrefix(p.Name, "bwd-") && !strings.HasPrefix(p.Name, "weights-bwd") {
					p.Name = "bwd-" + p.Name
				}
				fp.Passes = append(fp.Passes, p)
			}
			return res, fp, nil
		}
		if kv == nil {
			return dev.ForwardProfiled(ctx, q, k, v, opt)
		}
		// Recorded steps (AppendAttendInto): from the second call with the same tensors
		// on, a step is two parameter writes, a submission and a wait.
		var total dma.Profile
		for b, qb := range qs {
			prof, err := kv.AppendAttendIntoProfiled(ctx, b, chunkK, chunkV, chunkW[steps%2], qb, outs[b], dma.Options{Mode: opt.Mode, Window: opt.Window, Causal: true})
			if err != nil {
				return nil, total, err
			}
			total.Selection += prof.Selection
			total.Attention += prof.Attention
			total.Passes = append(total.Passes, prof.Passes...)
		}
		return &dma.Result{Path: outs[0].Path}, total, nil
	}
	for range warm {
		if err := prepare(); err != nil {
			return row, err
		}
		if _, _, err := run(); err != nil {
			return row, err
		}
	}
	if kv != nil {
		warmup = 0 // warmed up by the steps above
	}
	var gpu, sel, attn, wall []float64
	passes := map[string][]float64{}
	warmStart := time.Now()
	for i := 0; i < reps+2; i++ {
		if i == 2 && time.Since(warmStart) < warmup {
			i-- // still warming up
		}
		if err := prepare(); err != nil {
			return row, err
		}
		start := time.Now()
		res, prof, err := run()
		if err != nil {
			return row, err
		}
		el := time.Since(start)
		row.Path = res.Path
		if kv == nil {
			res.Close() // the cache's steps write into outs, kept for the next repetition
		}
		if i < 2 {
			continue // warm-up: pipeline creation, first-touch of memory
		}
		gpu = append(gpu, ms(prof.Total()))
		sel = append(sel, ms(prof.Selection))
		attn = append(attn, ms(prof.Attention))
		wall = append(wall, ms(el))
		for _, p := range prof.Passes {
			passes[p.Name] = append(passes[p.Name], ms(p.Time))
		}
	}
	row.PassMillis = map[string]float64{}
	for name, t := range passes {
		row.PassMillis[name] = median(t)
	}
	row.GPUMillis, row.SelMillis, row.AttnMillis, row.WallMillis = median(gpu), median(sel), median(attn), median(wall)
	if backward && row.GPUMillis == 0 {
		row.GPUMillis = row.WallMillis // no GPU timestamps on this device: the wall clock, host included
	}
	if row.GPUMillis > 0 {
		row.SelShare = row.SelMillis / row.GPUMillis
	}
	// Kept (row, key) pairs of causal attention: row i at position p = i + Lk - Lq keeps
	// min(p+1, w) keys (all p+1 in mode none).
	for i := 0; i < cfg.Lq; i++ {
		kept := i + cfg.Lk - cfg.Lq + 1
		if m != dma.ModeNone && kept > cfg.Window {
			kept = cfg.Window
		}
		row.KeptPairs += int64(max(kept, 0))
	}
	row.KeptPairs *= int64(cfg.B * cfg.H)
	if row.GPUMillis > 0 && !backward {
		row.KeptTFLOPs = 4 * float64(cfg.D) * float64(row.KeptPairs) / (row.GPUMillis * 1e-3) / 1e12
	}
	if o.walk && row.Path == "coopmat2" && m == dma.ModeRow && kv == nil && cfg.Lq == cfg.Lk {
		caps := dev.VK().Caps()
		if tile, err := kern.AttnCM2Tiling(&caps, cfg.D); err == nil {
			var n kern.WalkCount
			ord := make([]uint32, cfg.Lk)
			for bh := 0; bh < cfg.B*cfg.Hkv; bh++ {
				for j := range ord {
					ord[j] = kern.Ord(given[bh*cfg.Lk+j])
				}
				n = n.Add(kern.CountWalk(ord, cfg.Window, tile.BR, tile.BC))
			}
			row.WalkDropped = n.Dropped()
		}
	}
	return row, nil
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
