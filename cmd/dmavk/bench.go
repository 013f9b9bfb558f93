package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dmavk/dmavk/dma"
)

func init() {
	register(&command{
		name:  "bench",
		short: "time DMA forward passes (GPU timestamps per stage) over a sweep of lengths",
		usage: "[--lengths 4096,8192] [--b 1] [--h 8] [--hkv 8] [--d 128] [--window 2048] [--mode row] [--dtype float16] [--reps 10] [--json]",
		run:   runBench,
	})
}

// benchRow is one measured configuration.
type benchRow struct {
	Device      string  `json:"device"`
	B           int     `json:"b"`
	L           int     `json:"l"`
	H           int     `json:"h"`
	Hkv         int     `json:"hkv"`
	D           int     `json:"d"`
	Window      int     `json:"window"`
	Mode        string  `json:"mode"`
	DType       string  `json:"dtype"`
	GPUMillis   float64 `json:"gpu_ms"`       // median over reps, selection + attention
	SelMillis   float64 `json:"selection_ms"` // median
	AttnMillis  float64 `json:"attention_ms"` // median
	WallMillis  float64 `json:"wall_ms"`      // median, host view of the whole call
	SelShare    float64 `json:"selection_share"`
	KeptTFLOPs  float64 `json:"kept_tflops"` // 4 * D * (kept pairs) / GPU time
	KeptPairs   int64   `json:"kept_pairs"`
	PeakShare   float64 `json:"peak_share,omitempty"` // kept TFLOP/s over the measured matrix peak
	Repetitions int     `json:"reps"`
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		mult := 1
		if strings.HasSuffix(f, "K") || strings.HasSuffix(f, "k") {
			mult, f = 1024, f[:len(f)-1]
		}
		n, err := strconv.Atoi(f)
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
	lengths := fs.String("lengths", "4K,8K,16K", "sequence lengths (Lq = Lk), comma-separated; K = 1024")
	b := fs.Int("b", 1, "batch")
	h := fs.Int("h", 8, "query heads")
	hkv := fs.Int("hkv", 0, "kv heads (0: same as --h)")
	d := fs.Int("d", 128, "head dimension")
	window := fs.Int("window", 2048, "keys kept per row")
	mode := fs.String("mode", "row", "row, shared or none")
	dtype := fs.String("dtype", "float16", "float16 or float32")
	reps := fs.Int("reps", 10, "timed repetitions per configuration (after 2 warm-ups)")
	asJSON := fs.Bool("json", false, "print JSON rows")
	peak := fs.Bool("peak", false, "first measure the device's matrix peak (dmavk peak) and report each row's share of it")
	if err := parseFlags(c, fs, args, stdout); err != nil {
		return err
	}
	ls, err := parseInts(*lengths)
	if err != nil {
		return usageError{err}
	}
	m, err := dma.ParseMode(*mode)
	if err != nil || m == dma.ModeExplicit {
		return usagef("--mode %q: row, shared or none", *mode)
	}
	dt := dma.Float16
	if *dtype == "float32" {
		dt = dma.Float32
	} else if *dtype != "float16" {
		return usagef("--dtype %q: float16 or float32", *dtype)
	}
	if *hkv == 0 {
		*hkv = *h
	}
	if *reps < 1 {
		return usagef("--reps must be at least 1")
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
	for _, L := range ls {
		fmt.Fprintf(os.Stderr, "bench: L=%d ...\n", L)
		row, err := benchOne(ctx, dev, rng, *b, L, *h, *hkv, *d, *window, m, dt, *reps)
		if err != nil {
			return fmt.Errorf("L=%d: %w", L, err)
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
	if pk.MatmulTFLOP > 0 {
		fmt.Fprintf(stdout, "measured peak: %.1f TFLOP/s (%s matmul), copy %.0f GB/s\n", pk.MatmulTFLOP, pk.MatmulPath, pk.CopyGBs)
	}
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "B\tL\tH/Hkv\tD\tw\tGPU ms\tselection ms\tattention ms\tselection share\tkept TFLOP/s\t% of peak\twall ms\t")
	for _, r := range rows {
		share := "-"
		if r.PeakShare > 0 {
			share = fmt.Sprintf("%.1f%%", 100*r.PeakShare)
		}
		fmt.Fprintf(tw, "%d\t%d\t%d/%d\t%d\t%d\t%.3f\t%.3f\t%.3f\t%.1f%%\t%.2f\t%s\t%.2f\t\n", r.B, r.L, r.H, r.Hkv, r.D, r.Window,
			r.GPUMillis, r.SelMillis, r.AttnMillis, 100*r.SelShare, r.KeptTFLOPs, share, r.WallMillis)
	}
	return tw.Flush()
}

func benchOne(ctx context.Context, dev *dma.Device, rng *rand.Rand, b, L, h, hkv, d, w int, m dma.Mode, dt dma.DType, reps int) (benchRow, error) {
	row := benchRow{Device: dev.Name(), B: b, L: L, H: h, Hkv: hkv, D: d, Window: w, Mode: m.String(), DType: dt.String(), Repetitions: reps}
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
	q, err := mk(dma.Shape{B: b, L: L, H: h, D: d})
	if err != nil {
		return row, err
	}
	k, err := mk(dma.Shape{B: b, L: L, H: hkv, D: d})
	if err != nil {
		return row, err
	}
	v, err := mk(dma.Shape{B: b, L: L, H: hkv, D: d})
	if err != nil {
		return row, err
	}
	wt, err := dev.NewWeights(b, hkv, L)
	if err != nil {
		return row, err
	}
	closers = append(closers, wt)
	if err := wt.Upload(ctx, random(b*hkv*L)); err != nil {
		return row, err
	}
	opt := dma.Options{Mode: m, Window: w, Causal: true}
	if m != dma.ModeNone {
		opt.Weights = wt
	}
	var gpu, sel, attn, wall []float64
	for i := 0; i < reps+2; i++ {
		start := time.Now()
		res, prof, err := dev.ForwardProfiled(ctx, q, k, v, opt)
		if err != nil {
			return row, err
		}
		el := time.Since(start)
		res.Close()
		if i < 2 {
			continue // warm-up: pipeline creation, first-touch of memory
		}
		gpu = append(gpu, ms(prof.Total()))
		sel = append(sel, ms(prof.Selection))
		attn = append(attn, ms(prof.Attention))
		wall = append(wall, ms(el))
	}
	row.GPUMillis, row.SelMillis, row.AttnMillis, row.WallMillis = median(gpu), median(sel), median(attn), median(wall)
	if row.GPUMillis > 0 {
		row.SelShare = row.SelMillis / row.GPUMillis
	}
	// Kept (row, key) pairs of causal attention: row p keeps min(p+1, w) keys (w = all in mode none).
	for p := 0; p < L; p++ {
		kept := p + 1
		if m != dma.ModeNone && kept > w {
			kept = w
		}
		row.KeptPairs += int64(kept)
	}
	row.KeptPairs *= int64(b * h)
	if row.GPUMillis > 0 {
		row.KeptTFLOPs = 4 * float64(d) * float64(row.KeptPairs) / (row.GPUMillis * 1e-3) / 1e12
	}
	return row, nil
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
