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

