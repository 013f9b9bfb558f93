package dma_test

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/ref"
	"github.com/stretchr/testify/require"
)

// TestKVCacheForward: chunks of queries over a prefix of a cached sequence (appended in
// pieces, in the second sequence of the cache, so its rows start past the first's)
// give, bit for bit, Device.Forward's O and LSE over copies of the same keys and
// weights, on whichever kernel Forward takes; in float32 they also match the float64
// reference.
func TestKVCacheForward(t *testing.T) {
	d := open(t)
	rng := seed(t)
	ctx := context.Background()
	type chunk struct{ keys, rows int }
	cases := []struct {
		name        string
		dt          dma.DType
		h, hkv, hb  int
		dim, window int
		mode        dma.Mode
		causal      bool
		n           int   // keys of the sequence
		appends     []int // appended in pieces of these sizes
		chunks      []chunk
		path        string // the kernel the case must take ("" any)
	}{
		{name: "row", dt: dma.Float32, h: 4, hkv: 2, hb: 2, dim: 32, window: 24, mode: dma.ModeRow, causal: true, n: 250, appends: []int{100, 150},
			chunks: []chunk{{250, 50}, {100, 100}, {137, 37}, {250, 1}, {61, 61}}},
		{name: "row/Hb=H/w=1", dt: dma.Float32, h: 4, hkv: 1, hb: 4, dim: 40, window: 1, mode: dma.ModeRow, causal: true, n: 90, appends: []int{90},
			chunks: []chunk{{90, 33}, {57, 57}}},
		{name: "shared", dt: dma.Float32, h: 2, hkv: 2, hb: 2, dim: 32, window: 30, mode: dma.ModeShared, causal: true, n: 130, appends: []int{7, 123},
			chunks: []chunk{{130, 65}, {64, 20}}},
		{name: "none", dt: dma.Float32, h: 2, hkv: 1, hb: 1, dim: 32, mode: dma.ModeNone, causal: true, n: 77, appends: []int{77},
			chunks: []chunk{{77, 13}}},
		{name: "row/w>=keys", dt: dma.Float32, h: 2, hkv: 1, hb: 1, dim: 32, window: 500, mode: dma.ModeRow, causal: true, n: 120, appends: []int{120},
			chunks: []chunk{{120, 70}}},
		{name: "row/not causal", dt: dma.Float32, h: 2, hkv: 1, hb: 1, dim: 32, window: 9, mode: dma.ModeRow, n: 50, appends: []int{50},
			chunks: []chunk{{50, 20}}},
		{name: "row/fp16", dt: dma.Float16, h: 4, hkv: 2, hb: 2, dim: 64, window: 40, mode: dma.ModeRow, causal: true, n: 333, appends: []int{200, 133},
			chunks: []chunk{{333, 133}, {200, 200}, {290, 90}}},
		{name: "row/bf16", dt: dma.BFloat16, h: 2, hkv: 2, hb: 2, dim: 32, window: 16, mode: dma.ModeRow, causal: true, n: 100, appends: []int{100},
			chunks: []chunk{{100, 35}}},
		{name: "decode route", dt: dma.Float16, h: 2, hkv: 1, hb: 1, dim: 32, window: 64, mode: dma.ModeRow, causal: true, n: 4200, appends: []int{4100, 100},
			chunks: []chunk{{4150, 3}}, path: "decode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const seq = 1
			c, err := d.NewKVCache(dma.KVCacheConfig{Sequences: 2, Capacity: tc.n + 5, KVHeads: tc.hkv, HeadDim: tc.dim, BiasHeads: tc.hb, DType: tc.dt})
			require.NoError(t, err)
			defer c.Close()
			s := newSeqData(rng, tc.n, tc.h, tc.hkv, tc.hb, tc.dim)
			// The first sequence holds other keys, so that a wrong offset reads them.
			other := newSeqData(rng, 20, tc.h, tc.hkv, tc.hb, tc.dim)
			appendKeys := func(seq int, s *seqData, a, b int) {
				w, err := d.NewWeights(1, tc.hb, b-a)
				require.NoError(t, err)
				defer w.Close()
				require.NoError(t, w.Upload(ctx, s.weightCols(a, b)))
				kvShape := dma.Shape{B: 1, L: b - a, H: tc.hkv, D: tc.dim}
				require.NoError(t, c.Append(ctx, seq, tensor(t, d, tc.dt, kvShape, rows(s.k, tc.hkv, tc.dim, a, b)),
					tensor(t, d, tc.dt, kvShape, rows(s.v, tc.hkv, tc.dim, a, b)), w))
			}
			appendKeys(0, other, 0, other.n)
			at := 0
			for _, n := range tc.appends {
				appendKeys(seq, s, at, at+n)
				at += n
			}
			require.Equal(t, tc.n, c.Len(seq))
			opt := dma.Options{Mode: tc.mode, Window: tc.window, Causal: tc.causal}
			for _, ch := range tc.chunks {
				a := ch.keys - ch.rows // first query position
				q := tensor(t, d, tc.dt, dma.Shape{B: 1, L: ch.rows, H: tc.h, D: tc.dim}, rows(s.q, tc.h, tc.dim, a, ch.keys))
				got, err := c.Forward(ctx, seq, ch.keys, q, opt)
				require.NoError(t, err)
				gotO, err := got.O.Download(ctx)
				require.NoError(t, err)
				gotLSE, err := got.LSE.Download(ctx)
				require.NoError(t, err)
				got.Close()
				if tc.path != "" {
					require.Equal(t, tc.path, got.Path)
				}
				// ForwardInto: the same bits in a result of the caller's.
				into, err := d.NewResult(q)
				require.NoError(t, err)
				require.NoError(t, c.ForwardInto(ctx, seq, ch.keys, q, into, opt))
				intoO, err := into.O.Download(ctx)
				require.NoError(t, err)
				intoLSE, err := into.LSE.Download(ctx)
				require.NoError(t, err)
				require.Equal(t, got.Path, into.Path)
				into.Close()
				require.Equal(t, bits(gotO), bits(intoO), "ForwardInto's O")
				require.Equal(t, bits(gotLSE), bits(intoLSE), "ForwardInto's LSE")

				w, err := d.NewWeights(1, tc.hb, ch.keys)
				require.NoError(t, err)
				require.NoError(t, w.Upload(ctx, s.weightCols(0, ch.keys)))
				fo := opt
				fo.Weights = w
				kvShape := dma.Shape{B: 1, L: ch.keys, H: tc.hkv, D: tc.dim}
				want, err := d.Forward(ctx, q, tensor(t, d, tc.dt, kvShape, rows(s.k, tc.hkv, tc.dim, 0, ch.keys)),
					tensor(t, d, tc.dt, kvShape, rows(s.v, tc.hkv, tc.dim, 0, ch.keys)), fo)
				require.NoError(t, err)
				wantO, err := want.O.Download(ctx)
				require.NoError(t, err)
				wantLSE, err := want.LSE.Download(ctx)
				require.NoError(t, err)
				require.Equal(t, want.Path, got.Path)
				want.Close()
				w.Close()
				msg := fmt.Sprintf("keys %d rows %d (path %s)", ch.keys, ch.rows, got.Path)
				require.Equal(t, bits(wantO), bits(gotO), "O: "+msg)
				require.Equal(t, bits(wantLSE), bits(gotLSE), "LSE: "+msg)
				if tc.dt == dma.Float32 {
					refCheck(t, s, a, ch.keys, tc.mode, tc.window, tc.causal, gotO, gotLSE, msg)
				}
			}
		})
	}
}

// refCheck compares O and LSE of s's queries [a, keys) over its keys [0, keys) with the
// float64 reference (float32 inputs: 1e-5 of max |O|).
func refCheck(t *testing.T, s *seqData, a, keys int, mode dma.Mode, window int, causal bool, o, lse []float32, msg string) {
	t.Helper()
	t4 := func(x []float32, l, h int) *ref.Tensor4 {
		r := ref.NewTensor4(1, l, h, s.d)
		for i := range r.Data {
			r.Data[i] = float64(x[i])
		}
		return r
	}
	delta := make([]float64, s.hb*keys)
	for i, x := range s.weightCols(0, keys) {
		delta[i] = float64(x)
	}
	rm := map[dma.Mode]ref.Mode{dma.ModeRow: ref.ModeRow, dma.ModeShared: ref.ModeShared, dma.ModeNone: ref.ModeNone}[mode]
	wo, wl, err := ref.Forward(t4(rows(s.q, s.h, s.d, a, keys), keys-a, s.h), t4(rows(s.k, s.hkv, s.d, 0, keys), keys, s.hkv),
		t4(rows(s.v, s.hkv, s.d, 0, keys), keys, s.hkv), delta, s.hb, ref.Options{Mode: rm, Window: window, Causal: causal})
	require.NoError(t, err)
	maxAbs := 1e-3
	for _, x := range wo.Data {
		maxAbs = max(maxAbs, math.Abs(x))
	}
	for i, x := range wo.Data {
		require.InDeltaf(t, x, float64(o[i]), 1e-5*maxAbs, "reference O[%d]: %s", i, msg)
	}
	for i, x := range wl {
		require.InDeltaf(t, x, float64(lse[i]), 1e-5*(1+math.Abs(x)), "reference LSE[%d]: %s", i, msg)
	}
}

// TestKVCacheForwardErrors: bad arguments get errors naming them, before any GPU work.
func TestKVCacheForwardErrors(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	c, err := d.NewKVCache(dma.KVCacheConfig{Sequences: 2, Capacity: 8, KVHeads: 1, HeadDim: 32, DType: dma.Float32})
	require.NoError(t, err)
	defer c.Close()
	kv := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 5, H: 1, D: 32}, nil)
	w, err := d.NewWeights(1, 1, 5)
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.Upload(ctx, make([]float32, 5)))
	require.NoError(t, c.Append(ctx, 0, kv, kv, w))
	q := func(n int, dt dma.DType) *dma.Tensor {
		return tensor(t, d, dt, dma.Shape{B: 1, L: n, H: 2, D: 32}, nil)
	}
	row := dma.Options{Mode: dma.ModeRow, Window: 2, Causal: true}
	for _, x := range []struct {
		seq, keys int
		q         *dma.Tensor
		opt       dma.Options
		want      string
	}{
		{0, 6, q(1, dma.Float32), row, "keys 6: sequence 0 holds 5"},
		{0, 0, q(1, dma.Float32), row, "keys 0"},
		{1, 1, q(1, dma.Float32), row, "sequence 1 holds 0"},
		{2, 1, q(1, dma.Float32), row, "sequence 2 of 2"},
		{0, 3, q(4, dma.Float32), row, "4 query rows over 3 keys"},
		{0, 5, q(1, dma.Float16), row, "float16"},
		{0, 5, nil, row, "q is nil"},
		{0, 5, q(1, dma.Float32), dma.Options{Mode: dma.ModeExplicit, Causal: true}, "row, shared or none"},
		{0, 5, q(1, dma.Float32), dma.Options{Mode: dma.ModeRow, Window: -1, Causal: true}, "window -1"},
		{0, 5, q(1, dma.Float32), dma.Options{Mode: dma.ModeNone, Causal: true, KeyPadding: &dma.KeyPadding{}}, "KeyPadding"},
	} {
		_, err := c.Forward(ctx, x.seq, x.keys, x.q, x.opt)
		require.ErrorContains(t, err, "dma: KVCache.Forward: ")
		require.ErrorContains(t, err, x.want)
	}
	res, err := c.Forward(ctx, 0, 5, q(2, dma.Float32), row)
	require.NoError(t, err)
	require.ErrorContains(t, c.ForwardInto(ctx, 0, 5, q(2, dma.Float32), nil, row), "out is nil")
	require.ErrorContains(t, c.ForwardInto(ctx, 0, 5, q(3, dma.Float32), res, row), "result O is")
	res.Close()
	closedQ := q(1, dma.Float32)
	closedQ.Close()
	_, err = c.Forward(ctx, 0, 5, closedQ, row)
	require.ErrorIs(t, err, dma.ErrClosed)
	require.NoError(t, c.Close())
	_, err = c.Forward(ctx, 0, 5, q(1, dma.Float32), row)
	require.ErrorIs(t, err, dma.ErrClosed)
}

// TestKVCacheTruncate: Truncate forgets the keys past n; the next Append writes there.
func TestKVCacheTruncate(t *testing.T) {
	d := open(t)
	rng := seed(t)
	ctx := context.Background()
	const h, hkv, dim = 2, 1, 32
	c, err := d.NewKVCache(dma.KVCacheConfig{Sequences: 1, Capacity: 40, KVHeads: hkv, HeadDim: dim, DType: dma.Float32})
	require.NoError(t, err)
	defer c.Close()
	s, junk := newSeqData(rng, 30, h, hkv, hkv, dim), newSeqData(rng, 30, h, hkv, hkv, dim)
	put := func(s *seqData, a, b int) {
		w, err := d.NewWeights(1, hkv, b-a)
		require.NoError(t, err)
		defer w.Close()
		require.NoError(t, w.Upload(ctx, s.weightCols(a, b)))
		sh := dma.Shape{B: 1, L: b - a, H: hkv, D: dim}
		require.NoError(t, c.Append(ctx, 0, tensor(t, d, dma.Float32, sh, rows(s.k, hkv, dim, a, b)), tensor(t, d, dma.Float32, sh, rows(s.v, hkv, dim, a, b)), w))
	}
	put(s, 0, 20)
	put(junk, 20, 30)
	require.NoError(t, c.Truncate(0, 20))
	require.Equal(t, 20, c.Len(0))
	require.NoError(t, c.Truncate(0, 25)) // longer than it holds: nothing changes
	require.Equal(t, 20, c.Len(0))
	require.ErrorContains(t, c.Truncate(1, 0), "sequence 1 of 1")
	require.ErrorContains(t, c.Truncate(0, -1), "-1 keys")
	put(s, 20, 30)
	opt := dma.Options{Mode: dma.ModeRow, Window: 8, Causal: true}
	q := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 12, H: h, D: dim}, rows(s.q, h, dim, 18, 30))
	got, err := c.Forward(ctx, 0, 30, q, opt)
	require.NoError(t, err)
	defer got.Close()
	o, err := got.O.Download(ctx)
	require.NoError(t, err)
	lse, err := got.LSE.Download(ctx)
	require.NoError(t, err)
	refCheck(t, s, 18, 30, opt.Mode, opt.Window, opt.Causal, o, lse, "after Truncate")
}
