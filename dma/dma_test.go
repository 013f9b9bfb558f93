package dma_test

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/internal/bf16"
	"github.com/dmavk/dmavk/internal/check"
	"github.com/dmavk/dmavk/internal/f16"
	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/stretchr/testify/require"
)

// open returns a dma.Device on the test device (validation on, messages fail the test).
func open(t testing.TB) *dma.Device {
	t.Helper()
	in := vktest.Instance(t)
	pd, err := in.Choose()
	require.NoError(t, err)
	d, err := dma.OpenOn(in, pd, dma.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

func seed(t testing.TB) *rand.Rand {
	s := rand.Uint64()
	t.Logf("seed %d", s)
	return rand.New(rand.NewPCG(s, 1))
}

// TestForwardAgainstReference runs the selftest suite: every mode and dtype over
// awkward shapes, against package ref.
func TestForwardAgainstReference(t *testing.T) {
	d := open(t)
	rng := seed(t)
	for _, c := range check.Suite(false) {
		t.Run(strings.ReplaceAll(c.Name(), " ", "_"), func(t *testing.T) {
			o := check.Run(context.Background(), d, c, rng)
			require.NoError(t, o.Err)
			require.Truef(t, o.Pass, "rel err %.3g (tol %.3g), lse err %.3g", o.Rel, o.Tol, o.LSEAbs)
			t.Logf("rel err %.2e, lse err %.2e", o.Rel, o.LSEAbs)
		})
	}
}

func tensor(t testing.TB, d *dma.Device, dt dma.DType, s dma.Shape, data []float32) *dma.Tensor {
	t.Helper()
	x, err := d.NewTensor(dt, s, dma.BLHD)
	require.NoError(t, err)
	t.Cleanup(func() { x.Close() })
	if data == nil {
		data = make([]float32, s.Elems())
		for i := range data {
			data[i] = float32(math.Sin(float64(i)))
		}
	}
	require.NoError(t, x.Upload(context.Background(), data))
	return x
}

func TestBadInput(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	q := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 8, H: 4, D: 32}, nil)
	k := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 8, H: 2, D: 32}, nil)
	v := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 8, H: 2, D: 32}, nil)
	k3 := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 8, H: 3, D: 32}, nil)
	v3 := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 8, H: 3, D: 32}, nil)
	v9 := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 9, H: 2, D: 32}, nil)
	q16 := tensor(t, d, dma.Float16, dma.Shape{B: 1, L: 8, H: 4, D: 32}, nil)
	qbf := tensor(t, d, dma.BFloat16, dma.Shape{B: 1, L: 8, H: 4, D: 32}, nil)
	w, err := d.NewWeights(1, 2, 8)
	require.NoError(t, err)
	defer w.Close()
	wBad, err := d.NewWeights(1, 3, 8)
	require.NoError(t, err)
	defer wBad.Close()
	row := dma.Options{Mode: dma.ModeRow, Window: 4, Causal: true, Weights: w}
	cases := []struct {
		name     string
		q, k, v  *dma.Tensor
		opt      dma.Options
		contains string
	}{
		{"H%Hkv", q, k3, v3, row, "H % Hkv"},
		{"k/v shapes", q, k, v9, row, "same shape"},
		{"dtypes", q16, k, v, row, "dtypes differ"},
		{"dtypes bf16", qbf, k, v, row, "dtypes differ"},
		{"w < 0", q, k, v, dma.Options{Mode: dma.ModeRow, Window: -1, Weights: w}, "window -1 must be at least 1 in mode row (or 0: every key)"},
		{"no weights", q, k, v, dma.Options{Mode: dma.ModeRow, Window: 4}, "needs Weights"},
		{"weights shape", q, k, v, dma.Options{Mode: dma.ModeRow, Window: 4, Weights: wBad}, "do not fit"},
		{"mask outside explicit", q, k, v, dma.Options{Mode: dma.ModeNone, Mask: &dma.Mask{}}, "ModeExplicit"},
		{"softcap", q, k, v, dma.Options{Mode: dma.ModeNone, Softcap: -1}, "softcap"},
		{"scale", q, k, v, dma.Options{Mode: dma.ModeNone, Scale: float32(math.Inf(1))}, "scale"},
		{"nil", nil, k, v, row, "q is nil"},
		{"mode", q, k, v, dma.Options{Mode: 9}, "unknown mode"},
		{"weight params", q, k, v, dma.Options{Mode: dma.ModeRow, Window: 4, WeightParams: &dma.WeightParams{Hb: 2, Wdt: make([]float32, 5), A: make([]float32, 2)}}, "Wdt has 5"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := d.Forward(ctx, c.q, c.k, c.v, c.opt)
			require.Nil(t, res)
			require.ErrorContains(t, err, c.contains)
		})
	}
	_, err = d.NewTensor(dma.Float32, dma.Shape{B: 1, L: 0, H: 1, D: 8}, dma.BLHD)
	require.ErrorContains(t, err, "at least 1")
	_, err = d.NewTensor(dma.Float32, dma.Shape{B: 1 << 20, L: 1 << 20, H: 1, D: 8}, dma.BLHD)
	require.Error(t, err)
	require.ErrorContains(t, q.Upload(ctx, make([]float32, 3)), "3 values")
	// A mask of 5 heads is only wrong for a given problem.
	m, err := d.NewMask(ctx, dma.MaskShape{B: 1, H: 5, Lq: 8, Lk: 8}, make([]bool, 5*64))
	require.NoError(t, err)
	defer m.Close()
	_, err = d.Forward(ctx, q, k, v, dma.Options{Mode: dma.ModeExplicit, Mask: m})
	require.ErrorContains(t, err, "mask heads is 5")
}

// TestOverDeviceLimit asks for a problem whose plan would not fit one binding.
func TestOverDeviceLimit(t *testing.T) {
	d := open(t)
	limit := d.VK().Caps().MaxStorageBufferRange
	// K of Lk*Hkv*D*4 bytes > limit.
	lk := int(uint64(limit)/(4*256)) + 1
	if uint64(lk)*256*4 > 1<<33 {
		t.Skipf("maxStorageBufferRange %d is too large to exceed cheaply", limit)
	}
	k, err := d.NewTensor(dma.Float32, dma.Shape{B: 1, L: lk, H: 1, D: 256}, dma.BLHD)
	if err != nil {
		t.Skipf("cannot allocate %d keys: %v", lk, err)
	}
	defer k.Close()
	q := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 1, H: 1, D: 256}, nil)
	_, err = d.Forward(context.Background(), q, k, k, dma.Options{Mode: dma.ModeNone})
	require.ErrorContains(t, err, "maxStorageBufferRange")
}

// TestNaNStaysInItsRows: a NaN in one key's value reaches only rows that keep it.
func TestNaNStaysInItsRows(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	const L, w = 40, 4
	s := dma.Shape{B: 1, L: L, H: 1, D: 32}
	vals := make([]float32, s.Elems())
	for i := range vals {
		vals[i] = float32(math.Cos(float64(i)))
	}
	const bad = 10
	vals[bad*32+3] = float32(math.NaN())
	q := tensor(t, d, dma.Float32, s, nil)
	k := tensor(t, d, dma.Float32, s, nil)
	v := tensor(t, d, dma.Float32, s, vals)
	wt, err := d.NewWeights(1, 1, L)
	require.NoError(t, err)
	defer wt.Close()
	weights := make([]float32, L)
	for i := range weights {
		weights[i] = float32(i % 7) // key 10 has weight 3: evicted once 4 later keys beat it
	}
	require.NoError(t, wt.Upload(ctx, weights))
	res, err := d.Forward(ctx, q, k, v, dma.Options{Mode: dma.ModeRow, Window: w, Causal: true, Weights: wt})
	require.NoError(t, err)
	defer res.Close()
	o, err := res.O.Download(ctx)
	require.NoError(t, err)
	for i := 0; i < L; i++ {
		// Row i keeps key 10 iff 10 <= i and fewer than w keys of [0, i] beat it.
		beat := 0
		for j := 0; j <= i; j++ {
			if j != bad && (weights[j] > weights[bad] || (weights[j] == weights[bad] && j > bad)) {
				beat++
			}
		}
		keeps := bad <= i && beat < w
		nan := false
		for dd := 0; dd < 32; dd++ {
			nan = nan || math.IsNaN(float64(o[i*32+dd]))
		}
		require.Equalf(t, keeps, nan, "row %d: keeps key %d = %v, NaN = %v", i, bad, keeps, nan)
	}
}

// TestTensorDTypes: Upload rounds to the storage dtype (nearest, ties to even; NaN and
// infinities kept), Download widens exactly, in both layouts; the raw 16-bit calls move
// bits untouched and refuse the other dtypes.
func TestTensorDTypes(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	s := dma.Shape{B: 2, L: 3, H: 2, D: 8}
	vals := make([]float32, s.Elems())
	for i := range vals {
		vals[i] = float32(math.Sin(float64(i)) * math.Pow(10, float64(i%7-3)))
	}
	special := []float32{0, 1, -2, float32(math.Inf(1)), float32(math.Inf(-1)),
		math.Float32frombits(0x3f808000), // bf16 tie: even below
		math.Float32frombits(0x3f818000), // bf16 tie: even above
		math.Float32frombits(0x3f801001), // fp16 just above its tie
		math.MaxFloat32, 1e-40}
	copy(vals, special)
	vals[len(vals)-1] = float32(math.NaN())
	for _, dt := range []dma.DType{dma.Float32, dma.Float16, dma.BFloat16} {
		for _, l := range []dma.Layout{dma.BLHD, dma.BHLD} {
			x, err := d.NewTensor(dt, s, l)
			require.NoError(t, err)
			defer x.Close()
			require.NoError(t, x.Upload(ctx, vals))
			got, err := x.Download(ctx)
			require.NoError(t, err)
			for i, v := range vals {
				want := v
				switch dt {
				case dma.Float16:
					want = f16.ToFloat32(f16.FromFloat32(v))
				case dma.BFloat16:
					want = bf16.Round(v)
				}
				if math.IsNaN(float64(v)) {
					require.Truef(t, math.IsNaN(float64(got[i])), "%v %v: NaN came back as %v", dt, l, got[i])
					continue
				}
				require.Equalf(t, math.Float32bits(want), math.Float32bits(got[i]), "%v %v: element %d = %v: got %v, want %v", dt, l, i, v, got[i], want)
			}
		}
	}
	bits := make([]uint16, s.Elems())
	for i := range bits {
		bits[i] = uint16(i*2654435761>>7) &^ 0x4000 // no NaN: bits survive any path
	}
	bt := tensor(t, d, dma.BFloat16, s, nil)
	require.NoError(t, bt.UploadBF16(ctx, bits))
	back, err := bt.DownloadBF16(ctx)
	require.NoError(t, err)
	require.Equal(t, bits, back)
	widened, err := bt.Download(ctx)
	require.NoError(t, err)
	for i, b := range bits {
		require.Equal(t, uint32(b)<<16, math.Float32bits(widened[i]))
	}
	ht := tensor(t, d, dma.Float16, s, nil)
	require.ErrorContains(t, ht.UploadBF16(ctx, bits), "UploadBF16 on a float16 tensor")
	require.ErrorContains(t, bt.UploadHalf(ctx, bits), "UploadHalf on a bfloat16 tensor")
	_, err = bt.DownloadHalf(ctx)
	require.ErrorContains(t, err, "DownloadHalf on a bfloat16 tensor")
	_, err = ht.DownloadBF16(ctx)
	require.ErrorContains(t, err, "DownloadBF16 on a float16 tensor")
	require.ErrorContains(t, bt.UploadBF16(ctx, bits[:3]), "3 values")
	require.Equal(t, 2, dma.BFloat16.Size())
	require.Equal(t, "bfloat16", dma.BFloat16.String())
}

func TestMain(m *testing.M) { os.Exit(m.Run()) }

// TestForwardDecodeRoute: a few query rows over many keys take the decode kernels and
// match the reference; many rows do not.
func TestForwardDecodeRoute(t *testing.T) {
	d := open(t)
	rng := seed(t)
	for _, c := range []check.Case{
		{DType: dma.Float16, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 2, Lk: 4200, H: 4, Hkv: 2, D: 64, Window: 50, Padding: true},
		{DType: dma.Float32, Mode: dma.ModeNone, Causal: true, B: 2, Lq: 1, Lk: 4096, H: 2, Hkv: 2, D: 32},
		// Backward after a decode-route forward (its O and LSE).
		{DType: dma.Float32, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 3, Lk: 4100, H: 2, Hkv: 1, D: 32, Window: 30,
			Weights: check.WeightsParams, Form: dma.FormExp, Backward: true},
	} {
		o := check.Run(context.Background(), d, c, rng)
		require.NoError(t, o.Err)
		require.Truef(t, o.Pass, "%s: rel err %.3g (tol %.3g)", c.Name(), o.Rel, o.Tol)
		require.True(t, strings.HasPrefix(o.Path, "decode"), "%s: path %s", c.Name(), o.Path)
	}
	c := check.Case{DType: dma.Float32, Mode: dma.ModeRow, Causal: true, B: 1, Lq: 5, Lk: 4096, H: 2, Hkv: 2, D: 32, Window: 40}
	o := check.Run(context.Background(), d, c, rng)
	require.NoError(t, o.Err)
	require.True(t, o.Pass)
	require.NotEqual(t, "decode", o.Path, "5 rows take the prefill kernels")
}
