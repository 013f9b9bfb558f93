package ref

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// RandTensor4 returns a [b, l, h, d] tensor of values drawn uniformly from
// [-scale, scale).
func RandTensor4(rng *rand.Rand, b, l, h, d int, scale float64) *Tensor4 {
	t := NewTensor4(b, l, h, d)
	t.Data = RandSlice(rng, len(t.Data), scale)
	return t
}

// RandSlice returns n values drawn uniformly from [-scale, scale).
func RandSlice(rng *rand.Rand, n int, scale float64) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = scale * (2*rng.Float64() - 1)
	}
	return x
}

// MaxAbsDiff returns max_i |a_i - b_i|. Equal values count as no
// difference, so matching infinities (an empty row's lse = -inf) compare
// equal, and so do two NaNs (a NaN row where the reference has one); an
// infinity against anything else, or a NaN against a number, gives +Inf.
// It panics if the lengths differ.
func MaxAbsDiff(a, b []float64) float64 {
	if len(a) != len(b) {
		panic(fmt.Sprintf("ref: MaxAbsDiff of lengths %d and %d", len(a), len(b)))
	}
	var m float64
	for i := range a {
		if a[i] == b[i] || math.IsNaN(a[i]) && math.IsNaN(b[i]) {
			continue
		}
		d := math.Abs(a[i] - b[i])
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		m = max(m, d)
	}
	return m
}

// relErrTiny keeps RelErr finite when b is all zeros.
const relErrTiny = 1e-30

// RelErr returns MaxAbsDiff(a, b) / max(max_i |b_i|, tiny), b being the
// reference. Infinite and NaN entries of b are left out of the denominator.
// It panics if the lengths differ.
func RelErr(a, b []float64) float64 {
	var m float64
	for _, x := range b {
		if !math.IsInf(x, 0) && !math.IsNaN(x) {
			m = max(m, math.Abs(x))
		}
	}
	return MaxAbsDiff(a, b) / max(m, relErrTiny)
}

// ToFloat32Slice returns x converted to float32, element by element.
func ToFloat32Slice(x []float64) []float32 {
	y := make([]float32, len(x))
	for i, v := range x {
		y[i] = float32(v)
	}
	return y
}

// FromFloat32 returns x converted to float64, element by element.
func FromFloat32(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

// Round32 returns x with every element rounded to the nearest float32, for
// feeding the reference exactly the inputs a float32 GPU path sees.
func Round32(x []float64) []float64 {
	return FromFloat32(ToFloat32Slice(x))
}
