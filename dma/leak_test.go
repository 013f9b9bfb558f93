package dma_test

import (
	"context"
	"testing"
	"time"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/internal/memprobe"
	"github.com/stretchr/testify/require"
)

// kvLeakBound is the RSS growth allowed after warm-up. Anything a step or a cache keeps
// by mistake exceeds it many times over: a cycle creates a cache (four device buffers and
// its scratch), a dozen small tensors and results, and records several programs, each
// with descriptor sets and command buffers, so the 4,000 steps and 160 caches of the
// test would leave tens of MiB if any of them stayed.
const kvLeakBound = 20 << 20

// TestKVCacheLeaks: thousands of decode steps through every KV-cache call (Append,
// AppendAttendInto and AttendInto recorded and reused, Attend, AttendBatch, Reset) over
// caches created and closed leave the process no larger. Skipped with -short and under
// the race detector (whose shadow memory grows by itself).
func TestKVCacheLeaks(t *testing.T) {
	if testing.Short() {
		t.Skip("leak test skipped with -short")
	}
	if raceEnabled {
		t.Skip("leak test skipped under the race detector")
	}
	d := open(t)
	ctx := context.Background()
	const h, hkv, dim, capacity, prefill, steps = 4, 2, 32, 64, 36, 24
	newTensor := func(l, heads int) (*dma.Tensor, error) {
		x, err := d.NewTensor(dma.Float16, dma.Shape{B: 1, L: l, H: heads, D: dim}, dma.BLHD)
		if err != nil {
			return nil, err
		}
		return x, x.Upload(ctx, make([]float32, l*heads*dim))
	}
	cycle := func() error {
		c, err := d.NewKVCache(dma.KVCacheConfig{Sequences: 2, Capacity: capacity, KVHeads: hkv, HeadDim: dim, DType: dma.Float16})
		if err != nil {
			return err
		}
		defer c.Close()
		var closers []interface{ Close() error }
		defer func() {
			for _, x := range closers {
				x.Close()
			}
		}()
		var ts [5]*dma.Tensor // prefill k, v; step q, k, v
		for i, shape := range [][2]int{{prefill, hkv}, {prefill, hkv}, {1, h}, {1, hkv}, {1, hkv}} {
			if ts[i], err = newTensor(shape[0], shape[1]); err != nil {
				return err
			}
			closers = append(closers, ts[i])
		}
		wp, err := d.NewWeights(1, hkv, prefill)
		if err != nil {
			return err
		}
		closers = append(closers, wp)
		ws, err := d.NewWeights(1, hkv, 1)
		if err != nil {
			return err
		}
		closers = append(closers, ws)
		out, err := c.NewResult(ts[2])
		if err != nil {
			return err
		}
		closers = append(closers, out)
		opt := dma.Options{Mode: dma.ModeRow, Window: 8, Causal: true}
		for seq := range 2 {
			if err := c.Append(ctx, seq, ts[0], ts[1], wp); err != nil {
				return err
			}
		}
		for s := range steps {
			if err := ws.Upload(ctx, []float32{float32(s % 5), float32(s % 3)}); err != nil {
				return err
			}
			if err := c.AppendAttendInto(ctx, 0, ts[3], ts[4], ws, ts[2], out, opt); err != nil {
				return err
			}
			if s%4 == 0 {
				if err := c.Append(ctx, 1, ts[3], ts[4], ws); err != nil {
					return err
				}
				if err := c.AttendInto(ctx, 1, ts[2], out, opt); err != nil {
					return err
				}
				res, err := c.Attend(ctx, 1, ts[2], opt)
				if err != nil {
					return err
				}
				res.Close()
				rs, err := c.AttendBatch(ctx, []int{0, 1}, []*dma.Tensor{ts[2], ts[2]}, opt)
				if err != nil {
					return err
				}
				for _, r := range rs {
					r.Close()
				}
			}
		}
		return c.Reset(1)
	}
	const cycles, warm = 200, 40
	var before int64
	start := time.Now()
	for i := range cycles {
		if i == warm {
			var err error
			before, err = memprobe.SettledRSS()
			if err != nil {
				t.Skipf("no RSS: %v", err)
			}
		}
		require.NoError(t, cycle(), "cycle %d", i)
	}
	after, err := memprobe.SettledRSS()
	require.NoError(t, err)
	growth := after - before
	t.Logf("%d cycles (%d steps) in %v: RSS %.1f MiB -> %.1f MiB (%+.2f MiB)", cycles-warm, (cycles-warm)*steps, time.Since(start).Round(time.Millisecond),
		float64(before)/(1<<20), float64(after)/(1<<20), float64(growth)/(1<<20))
	require.LessOrEqualf(t, growth, int64(kvLeakBound), "RSS grew by %.1f MiB", float64(growth)/(1<<20))
}
