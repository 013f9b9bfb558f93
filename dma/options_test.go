package dma_test

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/ref"
	"github.com/stretchr/testify/require"
)

// randTensor uploads random values in [-1, 1) into a new float32 tensor and returns both.
func randTensor(t *testing.T, d *dma.Device, rng *rand.Rand, s dma.Shape) (*dma.Tensor, []float32) {
	t.Helper()
	data := make([]float32, s.Elems())
	for i := range data {
		data[i] = 2*rng.Float32() - 1
	}
	x, err := d.TensorFrom(context.Background(), dma.Float32, s, dma.BLHD, data)
	require.NoError(t, err)
	t.Cleanup(func() { x.Close() })
	return x, data
}

func refTensor(s dma.Shape, data []float32) *ref.Tensor4 {
	r := ref.NewTensor4(s.B, s.L, s.H, s.D)
	for i, x := range data {
		r.Data[i] = float64(x)
	}
	return r
}

func download(t *testing.T, x *dma.Tensor) []float32 {
	t.Helper()
	got, err := x.Download(context.Background())
	require.NoError(t, err)
	return got
}

func downloadLSE(t *testing.T, l *dma.LSE) []float32 {
	t.Helper()
	got, err := l.Download(context.Background())
	require.NoError(t, err)
	return got
}

// requireBits fails unless a and b are the same float32 values, bit for bit.
func requireBits(t *testing.T, a, b []float32, what string) {
	t.Helper()
	require.Equal(t, len(a), len(b), what)
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("%s: element %d: %v != %v", what, i, a[i], b[i])
		}
	}
}

// TestZeroOptions: the zero Options is dense attention over every key without
// causality (flash_attn_func's and torch SDPA's default), Causal alone makes it causal,
// and weights without a window bias the scores of every key: each as the reference
// computes it, and bit for bit what mode none gives.
func TestZeroOptions(t *testing.T) {
	d := open(t)
	rng := seed(t)
	ctx := context.Background()
	qs, ks := dma.Shape{B: 2, L: 37, H: 4, D: 32}, dma.Shape{B: 2, L: 45, H: 2, D: 32}
	q, qd := randTensor(t, d, rng, qs)
	k, kd := randTensor(t, d, rng, ks)
	v, vd := randTensor(t, d, rng, ks)
	w, err := d.NewWeights(ks.B, ks.H, ks.L)
	require.NoError(t, err)
	defer w.Close()
	wd := make([]float32, ks.B*ks.H*ks.L)
	delta := make([]float64, len(wd))
	for i := range wd {
		wd[i] = rng.Float32()
		delta[i] = float64(wd[i])
	}
	require.NoError(t, w.Upload(ctx, wd))
	for _, c := range []struct {
		name   string
		opt    dma.Options
		causal bool
		delta  []float64
	}{
		{"zero", dma.Options{}, false, nil},
		{"causal", dma.Options{Causal: true}, true, nil},
		{"weights, no window", dma.Options{Causal: true, Weights: w}, true, delta},
		{"shared, no window", dma.Options{Mode: dma.ModeShared, Weights: w}, false, delta},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := d.Forward(ctx, q, k, v, c.opt)
			require.NoError(t, err)
			defer res.Close()
			o := download(t, res.O)
			ro, rlse, err := ref.Forward(refTensor(qs, qd), refTensor(ks, kd), refTensor(ks, vd), c.delta, ks.H,
				ref.Options{Mode: ref.ModeNone, Causal: c.causal})
			require.NoError(t, err)
			maxO := 0.0
			for _, x := range ro.Data {
				maxO = max(maxO, math.Abs(x))
			}
			for i, x := range ro.Data {
				require.InDeltaf(t, x, float64(o[i]), 1e-5*maxO, "O[%d]", i)
			}
			lse := downloadLSE(t, res.LSE)
			for i, x := range rlse {
				require.InDeltaf(t, x, float64(lse[i]), 1e-5*math.Max(1, math.Abs(x)), "LSE[%d]", i)
			}
			none := c.opt
			none.Mode = dma.ModeNone
			want, err := d.Forward(ctx, q, k, v, none)
			require.NoError(t, err)
			defer want.Close()
			requireBits(t, o, download(t, want.O), "O against mode none")
			// Backward takes the same Options.
			dO, _ := randTensor(t, d, rng, qs)
			g, err := d.Backward(ctx, q, k, v, res, dO, c.opt, dma.BackwardOptions{Deterministic: true})
			require.NoError(t, err)
			defer g.Close()
			gw, err := d.Backward(ctx, q, k, v, want, dO, none, dma.BackwardOptions{Deterministic: true})
			require.NoError(t, err)
			defer gw.Close()
			requireBits(t, download(t, g.DQ), download(t, gw.DQ), "dQ against mode none")
			requireBits(t, download(t, g.DV), download(t, gw.DV), "dV against mode none")
		})
	}
}

// TestWindowBeyondKeys: a window of Lk keys or more, however large, is mode none exactly
// (nothing is sized by it) on every path: prefill, Forward's decode route, Backward,
// and the KV cache's steps.
func TestWindowBeyondKeys(t *testing.T) {
	d := open(t)
	rng := seed(t)
	ctx := context.Background()
	windows := []int{300, 301, 1e9, math.MaxInt32, math.MaxInt}
	for _, shape := range []struct {
		name   string
		lq, lk int
	}{{"prefill", 300, 300}, {"decode route", 2, 4100}} {
		qs, ks := dma.Shape{B: 1, L: shape.lq, H: 4, D: 32}, dma.Shape{B: 1, L: shape.lk, H: 2, D: 32}
		q, _ := randTensor(t, d, rng, qs)
		k, _ := randTensor(t, d, rng, ks)
		v, _ := randTensor(t, d, rng, ks)
		dO, _ := randTensor(t, d, rng, qs)
		wd := make([]float32, ks.H*ks.L)
		for i := range wd {
			wd[i] = rng.Float32()
		}
		w, err := d.NewWeights(1, ks.H, ks.L)
		require.NoError(t, err)
		defer w.Close()
		require.NoError(t, w.Upload(ctx, wd))
		none := dma.Options{Mode: dma.ModeNone, Causal: true, Weights: w}
		want, err := d.Forward(ctx, q, k, v, none)
		require.NoError(t, err)
		defer want.Close()
		wantO := download(t, want.O)
		var wantDQ []float32
		if shape.lq == shape.lk {
			g, err := d.Backward(ctx, q, k, v, want, dO, none, dma.BackwardOptions{Deterministic: true})
			require.NoError(t, err)
			wantDQ = download(t, g.DQ)
			g.Close()
		}
		for _, mode := range []dma.Mode{dma.ModeRow, dma.ModeShared} {
			for _, win := range windows {
				if win < shape.lk {
					continue
				}
				opt := dma.Options{Mode: mode, Window: win, Causal: true, Weights: w}
				res, err := d.Forward(ctx, q, k, v, opt)
				require.NoErrorf(t, err, "%s, mode %v, window %d", shape.name, mode, win)
				require.Equal(t, want.Path, res.Path)
				requireBits(t, download(t, res.O), wantO, "O")
				if wantDQ != nil {
					g, err := d.Backward(ctx, q, k, v, res, dO, opt, dma.BackwardOptions{Deterministic: true})
					require.NoErrorf(t, err, "Backward, mode %v, window %d", mode, win)
					requireBits(t, download(t, g.DQ), wantDQ, "dQ")
					g.Close()
				}
				res.Close()
			}
		}
	}
	// The KV cache: 300 keys, Attend and recorded steps with windows of 300 and more.
	const lk = 300
	c, err := d.NewKVCache(dma.KVCacheConfig{Sequences: 1, Capacity: lk + 1, KVHeads: 2, HeadDim: 32, DType: dma.Float32})
	require.NoError(t, err)
	defer c.Close()
	ks := dma.Shape{B: 1, L: lk, H: 2, D: 32}
	k, _ := randTensor(t, d, rng, ks)
	v, _ := randTensor(t, d, rng, ks)
	w, err := d.NewWeights(1, 2, lk)
	require.NoError(t, err)
	defer w.Close()
	require.NoError(t, w.Upload(ctx, make([]float32, 2*lk)))
	require.NoError(t, c.Append(ctx, 0, k, v, w))
	q, _ := randTensor(t, d, rng, dma.Shape{B: 1, L: 2, H: 4, D: 32})
	want, err := c.Attend(ctx, 0, q, dma.Options{Mode: dma.ModeNone, Causal: true})
	require.NoError(t, err)
	defer want.Close()
	wantO := download(t, want.O)
	out, err := c.NewResult(q)
	require.NoError(t, err)
	defer out.Close()
	for _, mode := range []dma.Mode{dma.ModeRow, dma.ModeShared} {
		for _, win := range windows {
			opt := dma.Options{Mode: mode, Window: win, Causal: true}
			res, err := c.Attend(ctx, 0, q, opt)
			require.NoErrorf(t, err, "Attend, mode %v, window %d", mode, win)
			requireBits(t, download(t, res.O), wantO, "Attend O")
			res.Close()
			require.NoErrorf(t, c.AttendInto(ctx, 0, q, out, opt), "AttendInto, mode %v, window %d", mode, win)
			requireBits(t, download(t, out.O), wantO, "AttendInto O")
		}
	}
}

// TestHeadDimAtCreation: a head dimension no kernel takes is refused when the tensor
// (or cache) is made, with the values that are supported and why.
func TestHeadDimAtCreation(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	for _, dim := range []int{60, 300, 12, 4, 264} {
		_, err := d.NewTensor(dma.Float16, dma.Shape{B: 1, L: 3, H: 1, D: dim}, dma.BLHD)
		require.ErrorContainsf(t, err, "unsupported: every kernel takes a multiple of 8 up to 256", "D=%d", dim)
		require.ErrorContains(t, err, "dma: NewTensor: shape [B=1 L=3 H=1 D=")
		_, err = d.TensorFrom(ctx, dma.Float32, dma.Shape{B: 1, L: 1, H: 1, D: dim}, dma.BLHD, make([]float32, dim))
		require.ErrorContains(t, err, "multiple of 8 up to 256")
		_, err = d.NewKVCache(dma.KVCacheConfig{Sequences: 1, Capacity: 4, KVHeads: 1, HeadDim: dim, DType: dma.Float16})
		require.ErrorContains(t, err, "dma: NewKVCache: head dim D=")
	}
	for _, dim := range []int{8, 96, 256} {
		x, err := d.NewTensor(dma.Float16, dma.Shape{B: 1, L: 3, H: 1, D: dim}, dma.BLHD)
		require.NoError(t, err, "D=%d", dim)
		x.Close()
	}
}

// TestTensorFrom: one call makes and fills a tensor, in either layout and any dtype.
func TestTensorFrom(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	s := dma.Shape{B: 2, L: 3, H: 2, D: 8}
	data := make([]float32, s.Elems())
	for i := range data {
		data[i] = float32(i) / 4
	}
	for _, dt := range []dma.DType{dma.Float32, dma.Float16, dma.BFloat16} {
		for _, l := range []dma.Layout{dma.BLHD, dma.BHLD} {
			x, err := d.TensorFrom(ctx, dt, s, l, data)
			require.NoError(t, err)
			require.Equal(t, dt, x.DType())
			require.Equal(t, l, x.Layout())
			require.Equal(t, data, download(t, x)) // i/4 up to 24: exact in every dtype
			x.Close()
		}
	}
	_, err := d.TensorFrom(ctx, dma.Float32, s, dma.BLHD, data[:5])
	require.EqualError(t, err, "dma: TensorFrom: 5 values for shape [B=2 L=3 H=2 D=8] (96 elements)")
}

// TestKVCacheTakesForwardOptions: a cache step accepts the Options of the prefill's
// Forward, weights included (the cache has its own), and gives what it gives without
// them; masks, biases and key padding are still refused.
func TestKVCacheTakesForwardOptions(t *testing.T) {
	d := open(t)
	rng := seed(t)
	ctx := context.Background()
	const lk = 50
	ks := dma.Shape{B: 1, L: lk, H: 2, D: 32}
	k, _ := randTensor(t, d, rng, ks)
	v, _ := randTensor(t, d, rng, ks)
	wp := &dma.WeightParams{Hb: 2, Wdt: make([]float32, 2*32*2), A: []float32{0.3, -0.2}}
	for i := range wp.Wdt {
		wp.Wdt[i] = rng.Float32() - 0.5
	}
	w, err := d.DynamicWeights(ctx, v, wp)
	require.NoError(t, err)
	defer w.Close()
	c, err := d.NewKVCache(dma.KVCacheConfig{Sequences: 1, Capacity: lk, KVHeads: 2, HeadDim: 32, DType: dma.Float32})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Append(ctx, 0, k, v, w))
	q, _ := randTensor(t, d, rng, dma.Shape{B: 1, L: 1, H: 4, D: 32})
	plain := dma.Options{Window: 8, Causal: true}
	want, err := c.Attend(ctx, 0, q, plain)
	require.NoError(t, err)
	defer want.Close()
	for _, opt := range []dma.Options{
		{Window: 8, Causal: true, WeightParams: wp},
		{Window: 8, Causal: true, Weights: w},
	} {
		res, err := c.Attend(ctx, 0, q, opt)
		require.NoError(t, err)
		requireBits(t, download(t, res.O), download(t, want.O), "O")
		res.Close()
	}
	kp, err := d.NewKeyPadding(ctx, 1, lk, make([]bool, lk))
	require.NoError(t, err)
	defer kp.Close()
	_, err = c.Attend(ctx, 0, q, dma.Options{Window: 8, Causal: true, KeyPadding: kp})
	require.ErrorContains(t, err, "takes no Mask, Bias or KeyPadding")
}
