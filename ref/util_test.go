package ref_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dmavk/dmavk/ref"
	"github.com/stretchr/testify/require"
)

// keptLists turns the keep mask of (b, h) into one list of kept keys per
// row, so expectations read like the spec's sets. Empty rows are []int{}.
func keptLists(keep []bool, s ref.Shape, b, h int) [][]int {
	rows := make([][]int, s.Lq)
	for i := range rows {
		rows[i] = []int{}
		for j := 0; j < s.Lk; j++ {
			if keep[((b*s.H+h)*s.Lq+i)*s.Lk+j] {
				rows[i] = append(rows[i], j)
			}
		}
	}
	return rows
}

// numGrad returns the central difference of f with respect to every element
// of x, restoring x as it goes.
func numGrad(x []float64, f func() float64) []float64 {
	const eps = 1e-6
	g := make([]float64, len(x))
	for i := range x {
		old := x[i]
		x[i] = old + eps
		fp := f()
		x[i] = old - eps
		fm := f()
		x[i] = old
		g[i] = (fp - fm) / (2 * eps)
	}
	return g
}

// dotAll is sum(a .* b), the loss whose gradient with respect to a is b.
func dotAll(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// repeatHeads expands a [B, L, Hkv, D] tensor to [B, L, H, D] by copying kv
// head h/g into head h: GQA written out as plain multi-head attention.
func repeatHeads(t *ref.Tensor4, h int) *ref.Tensor4 {
	g := h / t.H
	r := ref.NewTensor4(t.B, t.L, h, t.D)
	for b := 0; b < t.B; b++ {
		for l := 0; l < t.L; l++ {
			for hh := 0; hh < h; hh++ {
				copy(r.Row(b, l, hh), t.Row(b, l, hh/g))
			}
		}
	}
	return r
}

// repeatDelta expands [B][Hkv][Lk] weights to [B][H][Lk] the same way.
func repeatDelta(delta []float64, b, hkv, h, lk int) []float64 {
	g := h / hkv
	r := make([]float64, b*h*lk)
	for bb := 0; bb < b; bb++ {
		for hh := 0; hh < h; hh++ {
			copy(r[(bb*h+hh)*lk:][:lk], delta[(bb*hkv+hh/g)*lk:][:lk])
		}
	}
	return r
}

func requireNoNaN(t *testing.T, name string, x []float64) {
	t.Helper()
	for i, v := range x {
		require.False(t, math.IsNaN(v), "%s[%d] is NaN", name, i)
	}
}

func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)) }
