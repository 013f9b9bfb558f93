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

// BenchmarkKVCacheStep times one decode step of a long-context model's shape (H 32, Hkv 8, D 128,
// w 2048, fp16, mode row, thresholds carried from the step before) at the lengths of
// DMAVK_BENCH_LK (default 4096; e.g. "65536,262144"), with random weights or, with
// DMAVK_BENCH_EQUAL=1, equal ones (every new key joins the best w):
// ms/step-single is AppendAttendInto's wall time (host included, the GPU idle between
// steps), ms/step-sustained the wall time per step of 200 steps recorded back to back in
// one submission, submitted again and again (the GPU busy throughout, as when a model's
// layers follow one another; GPUs raise their clocks only under such load).
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
	equal := os.Getenv("DMAVK_BENCH_EQUAL") == "1"
	d := open(b)
	ctx := context.Background()
	const h, hkv, dim, w, steps, singles = 32, 8, 128, 2048, 200, 50
	for _, lk := range lks {
		b.Run(fmt.Sprintf("Lk%d", lk), func(b *testing.B) {
			c, err := d.NewKVCache(dma.KVCacheConfig{Sequences: 1, Capacity: lk, KVHeads: hkv, HeadDim: dim, DType: dma.Float16})
			require.NoError(b, err)
			defer c.Close()
			rng := seed(b)
			random := func(n int, s float64) []float32 {
				x := make([]float32, n)
				for i := range x {
					if !equal || s != 4 {
						x[i] = float32(s * rng.NormFloat64())
					}
				}
				return x
			}
			// The cache holds lk - singles - 1 keys; the single steps append one each, a
			// last AttendInto leaves the thresholds for lk - 1 keys, then one more key.
			pre := lk - singles - 1
			appendKeys := func(n int) {
				wt, err := d.NewWeights(1, hkv, n)
				require.NoError(b, err)
				defer wt.Close()
				require.NoError(b, wt.Upload(ctx, random(hkv*n, 4)))
				kv := dma.Shape{B: 1, L: n, H: hkv, D: dim}
				zeros := make([]float32, kv.Elems()) // the values do not change the work
				require.NoError(b, c.Append(ctx, 0, tensor(b, d, dma.Float16, kv, zeros), tensor(b, d, dma.Float16, kv, zeros), wt))
			}
			appendKeys(pre)
			q := tensor(b, d, dma.Float16, dma.Shape{B: 1, L: 1, H: h, D: dim}, random(h*dim, 1))
			out, err := c.NewResult(q)
			require.NoError(b, err)
			defer out.Close()
			opt := dma.Options{Mode: dma.ModeRow, Window: w, Causal: true}
			kt := tensor(b, d, dma.Float16, dma.Shape{B: 1, L: 1, H: hkv, D: dim}, random(hkv*dim, 1))
			vt := tensor(b, d, dma.Float16, dma.Shape{B: 1, L: 1, H: hkv, D: dim}, random(hkv*dim, 1))
			wt, err := d.NewWeights(1, hkv, 1)
			require.NoError(b, err)
			defer wt.Close()
			var single, sustained []float64
			for range singles {
				require.NoError(b, wt.Upload(ctx, random(hkv, 4)))
				start := time.Now()
				require.NoError(b, c.AppendAttendInto(ctx, 0, kt, vt, wt, q, out, opt))
				single = append(single, float64(time.Since(start).Nanoseconds())/1e6)
			}
			appendKeys(1)
			run, free, err := c.SustainedSteps(0, q, out, opt, steps, true)
			require.NoError(b, err)
			defer free()
			warm := time.Now()
			for time.Since(warm) < time.Second {
				_, err := run(ctx)
				require.NoError(b, err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				el, err := run(ctx)
				require.NoError(b, err)
				sustained = append(sustained, float64(el.Nanoseconds())/1e6/steps)
			}
			// The replays did a real step's work: their output is a full select's.
			b.StopTimer()
			got, err := out.O.Download(ctx)
			require.NoError(b, err)
			res, err := c.Attend(ctx, 0, q, opt)
			require.NoError(b, err)
			want, err := res.O.Download(ctx)
			require.NoError(b, err)
			res.Close()
			require.Equal(b, bits(want), bits(got), "the sustained steps' output")
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
