package ref_test

import (
	"math"
	"testing"

	"github.com/dmavk/dmavk/ref"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTensor4Layout(t *testing.T) {
	x := ref.NewTensor4(2, 3, 4, 5)
	require.Len(t, x.Data, 120)
	x.Set(1, 2, 3, 4, 7)
	assert.Equal(t, 7.0, x.Data[119], "last element is (1,2,3,4) in [B,L,H,D] order")
	x.Set(1, 0, 2, 1, 5)
	assert.Equal(t, 5.0, x.Data[((1*3+0)*4+2)*5+1])
	assert.Equal(t, 5.0, x.At(1, 0, 2, 1))
	row := x.Row(1, 0, 2)
	assert.Equal(t, []float64{0, 5, 0, 0, 0}, row)
	assert.Equal(t, 5, cap(row), "a row must not be able to grow into its neighbour")
	c := x.Clone()
	c.Set(1, 0, 2, 1, 9)
	assert.Equal(t, 5.0, x.At(1, 0, 2, 1), "Clone copies the data")
	assert.Panics(t, func() { x.At(0, 3, 0, 0) })
}

func TestBroadcast4(t *testing.T) {
	m := ref.NewBroadcast4(1, 2, 1, 3) // broadcasts over batch and rows
	m.Set(0, 1, 0, 2, 4)
	assert.Equal(t, 4.0, m.At(5, 1, 7, 2))
	assert.Equal(t, 0.0, m.At(5, 0, 7, 2))
	mb := ref.NewBroadcast4Bool(2, 1, 1, 1)
	mb.Set(1, 0, 0, 0, true)
	assert.True(t, mb.At(1, 3, 9, 9))
	assert.False(t, mb.At(0, 3, 9, 9))
}

func TestHelpers(t *testing.T) {
	inf := math.Inf(-1)
	assert.Equal(t, 0.5, ref.MaxAbsDiff([]float64{1, 2, inf}, []float64{1, 2.5, inf}))
	assert.True(t, math.IsInf(ref.MaxAbsDiff([]float64{inf}, []float64{0}), 1))
	assert.True(t, math.IsInf(ref.MaxAbsDiff([]float64{math.NaN()}, []float64{0}), 1))
	assert.True(t, math.IsInf(ref.MaxAbsDiff([]float64{0}, []float64{math.NaN()}), 1))
	assert.Equal(t, 0.0, ref.MaxAbsDiff([]float64{math.NaN()}, []float64{math.NaN()}), "NaN where the reference has NaN")
	assert.Equal(t, 0.125, ref.RelErr([]float64{1, 4.5, math.NaN()}, []float64{1, 4, math.NaN()}), "NaN left out of the scale")
	// relative to the largest finite |b|: 0.5 / 4
	assert.Equal(t, 0.125, ref.RelErr([]float64{1, 4.5, inf}, []float64{1, 4, inf}))
	assert.Equal(t, 0.0, ref.RelErr([]float64{0}, []float64{0}))
	assert.Panics(t, func() { ref.MaxAbsDiff([]float64{1}, nil) })

	x := []float64{1.0 / 3, 2}
	f := ref.ToFloat32Slice(x)
	assert.Equal(t, []float32{float32(1.0 / 3), 2}, f)
	assert.Equal(t, []float64{float64(float32(1.0 / 3)), 2}, ref.FromFloat32(f))
	assert.Equal(t, ref.FromFloat32(f), ref.Round32(x))

	r := ref.RandTensor4(newRNG(1), 2, 3, 2, 4, 0.5)
	require.Len(t, r.Data, 48)
	for _, v := range r.Data {
		assert.True(t, v >= -0.5 && v < 0.5)
	}
}
