package dma_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/vk"
	"github.com/stretchr/testify/require"
)

// TestRecordedStepMatchesAppendAttendInto: decode steps recorded into programs of the
// caller's own (re-recorded when the phase changes: none, first selection, carried
// thresholds) give the bits of AppendAttendInto on a twin cache.
func TestRecordedStepMatchesAppendAttendInto(t *testing.T) {
	d := open(t)
	rng := seed(t)
	ctx := context.Background()
	const h, hkv, dim, prefill, steps = 4, 2, 32, 20, 12
	for _, dt := range []dma.DType{dma.Float32, dma.BFloat16} {
		t.Run(fmt.Sprint(dt), func(t *testing.T) {
			opt := dma.Options{Mode: dma.ModeRow, Window: 24, Causal: true}
			s := newSeqData(rng, prefill+steps, h, hkv, hkv, dim)
			caches := make([]*dma.KVCache, 2)
			for i := range caches {
				c, err := d.NewKVCache(dma.KVCacheConfig{Sequences: 1, Capacity: prefill + steps, KVHeads: hkv, HeadDim: dim, DType: dt})
				require.NoError(t, err)
				defer c.Close()
				w, err := d.NewWeights(1, hkv, prefill)
				require.NoError(t, err)
				defer w.Close()
				require.NoError(t, w.Upload(ctx, s.weightCols(0, prefill)))
				require.NoError(t, c.Append(ctx, 0, tensor(t, d, dt, dma.Shape{B: 1, L: prefill, H: hkv, D: dim}, rows(s.k, hkv, dim, 0, prefill)),
					tensor(t, d, dt, dma.Shape{B: 1, L: prefill, H: hkv, D: dim}, rows(s.v, hkv, dim, 0, prefill)), w))
				caches[i] = c
			}
			k := tensor(t, d, dt, dma.Shape{B: 1, L: 1, H: hkv, D: dim}, nil)
			v := tensor(t, d, dt, dma.Shape{B: 1, L: 1, H: hkv, D: dim}, nil)
			q := tensor(t, d, dt, dma.Shape{B: 1, L: 1, H: h, D: dim}, nil)
			w, err := d.NewWeights(1, hkv, 1)
			require.NoError(t, err)
			defer w.Close()
			outs := make([]*dma.Result, 2)
			for i := range outs {
				outs[i], err = caches[i].NewResult(q)
				require.NoError(t, err)
				defer outs[i].Close()
			}
			step, err := caches[1].NewRecordedStep(0, k, v, w, q, outs[1], opt)
			require.NoError(t, err)
			defer step.Close()
			var prog *vk.Program
			var phase dma.StepPhase
			phases := 0
			defer func() {
				if prog != nil {
					prog.Close()
				}
			}()
			for i := prefill; i < prefill+steps; i++ {
				require.NoError(t, k.Upload(ctx, rows(s.k, hkv, dim, i, i+1)))
				require.NoError(t, v.Upload(ctx, rows(s.v, hkv, dim, i, i+1)))
				require.NoError(t, q.Upload(ctx, rows(s.q, h, dim, i, i+1)))
				require.NoError(t, w.Upload(ctx, s.weightCols(i, i+1)))
				require.NoError(t, caches[0].AppendAttendInto(ctx, 0, k, v, w, q, outs[0], opt))
				ph, err := step.Prepare(ctx)
				require.NoError(t, err)
				if prog == nil || ph != phase {
					if prog != nil {
						prog.Close()
					}
					prog, err = d.VK().Record(step.Record)
					require.NoError(t, err)
					phase = ph
					phases++
				}
				err = prog.Submit(ctx)
				step.Commit(err)
				require.NoError(t, err)
				want, err := outs[0].O.Download(ctx)
				require.NoError(t, err)
				got, err := outs[1].O.Download(ctx)
				require.NoError(t, err)
				require.Equal(t, bits(want), bits(got), "step %d", i)
				require.Equal(t, i+1, caches[1].Len(0))
			}
			require.Equal(t, 3, phases, "none, first selection, carried thresholds")
			_, err = step.Prepare(ctx)
			require.ErrorContains(t, err, "capacity")
		})
	}
}

// BenchmarkRecordedStepPrepare: the host's part of a recorded decode step per layer
// (Prepare's checks and parameter writes, Commit), without the submission.
func BenchmarkRecordedStepPrepare(b *testing.B) {
	d := open(b)
	ctx := context.Background()
	const h, hkv, dim, keys = 6, 3, 128, 3000
	c, err := d.NewKVCache(dma.KVCacheConfig{Sequences: 1, Capacity: keys + 1, KVHeads: hkv, HeadDim: dim, DType: dma.Float16})
	require.NoError(b, err)
	defer c.Close()
	kv := tensor(b, d, dma.Float16, dma.Shape{B: 1, L: keys, H: hkv, D: dim}, nil)
	w, err := d.NewWeights(1, hkv, keys)
	require.NoError(b, err)
	defer w.Close()
	require.NoError(b, w.Upload(ctx, make([]float32, hkv*keys)))
	require.NoError(b, c.Append(ctx, 0, kv, kv, w))
	k := tensor(b, d, dma.Float16, dma.Shape{B: 1, L: 1, H: hkv, D: dim}, nil)
	w1, err := d.NewWeights(1, hkv, 1)
	require.NoError(b, err)
	defer w1.Close()
	q := tensor(b, d, dma.Float16, dma.Shape{B: 1, L: 1, H: h, D: dim}, nil)
	out, err := c.NewResult(q)
	require.NoError(b, err)
	defer out.Close()
	st, err := c.NewRecordedStep(0, k, k, w1, q, out, dma.Options{Mode: dma.ModeRow, Window: 2048, Causal: true})
	require.NoError(b, err)
	defer st.Close()
	notRun := fmt.Errorf("not submitted")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := st.Prepare(ctx); err != nil {
			b.Fatal(err)
		}
		st.Commit(notRun) // the sequence keeps its length
	}
}
