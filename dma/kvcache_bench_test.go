package dma_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dmavk/dmavk/dma"
	"github.com/stretchr/testify/require"
)

// BenchmarkKVCacheStep times one decode step of issue 5's shape (H 32, Hkv 8, D 128,
// w 2048, fp16, mode row) at the lengths of DMAVK_BENCH_LK (default 4096; e.g.
// "65536,262144"): ms/step-single is AttendInto's wall time (host included, the GPU idle
// before each step), ms/step-sustained the wall time per step of 200 steps recorded back
// to back in one submission (the GPU busy throughout, as when a model's layers follow
// one another).
func BenchmarkKVCacheStep(b *testing.B) {
	lks := []int{4096}
	if s := os.Getenv("DMAVK_BENCH_LK"); s != "" {
		lks = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(f)
			require.NoError(b, err)
			lks = append(lks, n)
		}
	}
	d := open(b)
	ctx := context.Background()
	const h, hkv, dim, w, steps = 32, 8, 128, 2048, 200
	for _, lk := range lks {
		b.Run(fmt.Sprintf("Lk%d", lk), func(b *testing.B) {
			c, err := d.NewKVCache(dma.KVCacheConfig{Sequences: 1, Capacity: lk, KVHeads: hkv, HeadDim: dim, DType: dma.Float16})
			require.NoError(b, err)
			defer c.Close()
			zeros := func(n int) []float32 { return make([]float32, n) }
			rng := seed(b)
			ws := make([]float32, hkv*lk)
			for i := range ws {
				ws[i] = float32(rng.NormFloat64())
			}
			wt, err := d.NewWeights(1, hkv, lk)
			require.NoError(b, err)
			defer wt.Close()
			require.NoError(b, wt.Upload(ctx, ws))
			kv := dma.Shape{B: 1, L: lk, H: hkv, D: dim}
			require.NoError(b, c.Append(ctx, 0, tensor(b, d, dma.Float16, kv, zeros(kv.Elems())), tensor(b, d, dma.Float16, kv, zeros(kv.Elems())), wt))
			q := tensor(b, d, dma.Float16, dma.Shape{B: 1, L: 1, H: h, D: dim}, zeros(h*dim))
			out, err := c.NewResult(q)
			require.NoError(b, err)
			defer out.Close()
			opt := dma.Options{Mode: dma.ModeRow, Window: w, Causal: true}
			run, free, err := c.SustainedSteps(0, q, out, opt, steps)
			require.NoError(b, err)
			defer free()
			var single, sustained []float64
			for i := 0; i < b.N; i++ {
				for range 10 {
					start := time.Now()
					require.NoError(b, c.AttendInto(ctx, 0, q, out, opt))
					single = append(single, float64(time.Since(start).Nanoseconds())/1e6)
				}
				el, err := run(ctx)
				require.NoError(b, err)
				sustained = append(sustained, float64(el.Nanoseconds())/1e6/steps)
			}
			b.ReportMetric(medianOf(single), "ms/step-single")
			b.ReportMetric(medianOf(sustained), "ms/step-sustained")
		})
	}
}

func medianOf(x []float64) float64 {
	s := append([]float64(nil), x...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}
