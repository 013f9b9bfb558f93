package ref_test

import (
	"math"
	"testing"

	"github.com/dmavk/dmavk/ref"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	nan    = math.NaN()
	posInf = math.Inf(1)
	negInf = math.Inf(-1)
)

func TestBetterNonFinite(t *testing.T) {
	negNaN := math.Copysign(math.NaN(), -1)
	assert.True(t, ref.Better(nan, 0, posInf, 5), "NaN above +inf")
	assert.False(t, ref.Better(posInf, 5, nan, 0))
	assert.True(t, ref.Better(negNaN, 0, posInf, 5), "a NaN's sign does not matter")
	assert.True(t, ref.Better(nan, 3, negNaN, 1), "NaNs are equal: the later key first")
	assert.False(t, ref.Better(negNaN, 1, nan, 3))
	assert.True(t, ref.Better(posInf, 0, math.MaxFloat64, 5), "+inf above every finite weight")
	assert.True(t, ref.Better(-math.MaxFloat64, 0, negInf, 5), "-inf below every finite weight")
	assert.True(t, ref.Better(negInf, 5, negInf, 0), "equal infinities: the later key first")
	assert.True(t, ref.Better(nan, 0, nan, 0) == false, "a key does not rank above itself")

	w := []float64{1, nan, posInf, negInf, nan, 0, math.Copysign(0, -1), -2}
	all := []int{0, 1, 2, 3, 4, 5, 6, 7}
	assert.Equal(t, []int{4, 1, 2, 0, 6, 5, 7, 3}, ref.TopW(w, all, 8))
	assert.Equal(t, []int{4, 1, 2}, ref.TopW(w, all, 3))
}

func TestKeepNonFiniteWeights(t *testing.T) {
	// Row mode, w = 1: the NaN at key 2 wins every row that sees it until the
	// NaN at key 5 (later) takes over; the +inf at key 4 never beats a NaN.
	w := []float64{1, 3, nan, 0, posInf, nan, 9}
	row := ref.Options{Mode: ref.ModeRow, Window: 1, Causal: true}
	assert.Equal(t, [][]int{{0}, {1}, {2}, {2}, {2}, {5}, {5}}, keep1(t, w, 7, row))
	// Shared, w = 2: the two NaNs over every key.
	shared := ref.Options{Mode: ref.ModeShared, Window: 2, Causal: true}
	assert.Equal(t, [][]int{{}, {}, {2}, {2}, {2}, {2, 5}, {2, 5}}, keep1(t, w, 7, shared))
	// -inf ranks last: kept only while the row has room for it.
	w = []float64{negInf, 2, 1, 3}
	row.Window = 2
	assert.Equal(t, [][]int{{0}, {0, 1}, {1, 2}, {1, 3}}, keep1(t, w, 4, row))
}

// nonFiniteProblem is a small GQA problem (B 1, Lq = Lk = 10, H 2, Hkv 1,
// D 4, mode row, w 3, causal) with finite random inputs.
type nonFiniteProblem struct {
	q, k, v *ref.Tensor4
	delta   []float64
	opts    ref.Options
}

func newNonFiniteProblem() nonFiniteProblem {
	rng := newRNG(11)
	return nonFiniteProblem{
		q:     ref.RandTensor4(rng, 1, 10, 2, 4, 1),
		k:     ref.RandTensor4(rng, 1, 10, 1, 4, 1),
		v:     ref.RandTensor4(rng, 1, 10, 1, 4, 1),
		delta: ref.RandSlice(rng, 10, 1),
		opts:  ref.Options{Mode: ref.ModeRow, Window: 3, Causal: true},
	}
}

func (p nonFiniteProblem) clone() nonFiniteProblem {
	p.q, p.k, p.v = p.q.Clone(), p.k.Clone(), p.v.Clone()
	p.delta = append([]float64(nil), p.delta...)
	return p
}

func (p nonFiniteProblem) forward(t *testing.T) (*ref.Tensor4, []float64) {
	t.Helper()
	o, lse, err := ref.Forward(p.q, p.k, p.v, p.delta, 1, p.opts)
	require.NoError(t, err)
	return o, lse
}

func (p nonFiniteProblem) keeps(t *testing.T, h, i, j int) bool {
	t.Helper()
	keep, err := ref.Keep(p.delta, 1, ref.ShapeOf(p.q, p.k), p.opts)
	require.NoError(t, err)
	return keep[(h*p.q.L+i)*p.k.L+j]
}

// requireRows checks o and lse of every (head, row) of a non-finite problem
// against the same problem made finite (clean, whose selection must be the
// same): NaN o and lse where nanRow says so, NaN in the o elements that
// nanElem names (lse clean), the clean values everywhere else.
func requireRows(t *testing.T, o *ref.Tensor4, lse []float64, cleanO *ref.Tensor4, cleanLSE []float64, nanRow func(h, i int) bool, nanElem func(h, i, d int) bool) {
	t.Helper()
	for h := 0; h < o.H; h++ {
		for i := 0; i < o.L; i++ {
			l, want := lse[h*o.L+i], cleanLSE[h*o.L+i]
			row := o.Row(0, i, h)
			if nanRow(h, i) {
				require.True(t, math.IsNaN(l), "head %d row %d: lse %v, want NaN", h, i, l)
				for _, x := range row {
					require.True(t, math.IsNaN(x), "head %d row %d: o %v, want NaN", h, i, row)
				}
				continue
			}
			if math.IsInf(want, -1) {
				require.True(t, math.IsInf(l, -1), "head %d row %d: lse %v, want -inf", h, i, l)
			} else {
				require.InDelta(t, want, l, 1e-12, "head %d row %d: lse", h, i)
			}
			for d, x := range row {
				if nanElem(h, i, d) {
					require.True(t, math.IsNaN(x), "head %d row %d: o %v, want NaN at %d", h, i, row, d)
				} else {
					require.InDelta(t, cleanO.At(0, i, h, d), x, 1e-12, "head %d row %d: o %v", h, i, row)
				}
			}
		}
	}
}

// partlyKept returns a key that some rows keep and some row after it does
// not, the interesting case for containment.
func partlyKept(t *testing.T, p nonFiniteProblem) int {
	t.Helper()
	for j := 0; j < p.k.L; j++ {
		kept, dropped := false, false
		for i := j; i < p.q.L; i++ {
			if p.keeps(t, 0, i, j) {
				kept = true
			} else {
				dropped = true
			}
		}
		if kept && dropped {
			return j
		}
	}
	t.Fatal("no key is kept by some rows only")
	return 0
}
func never(h, i int) bool { return false }

func noElem(h, i, d int) bool { return false }

func TestForwardNonFiniteRows(t *testing.T) {
	base := newNonFiniteProblem()
	cleanO, cleanLSE := base.forward(t)

	t.Run("nan weight", func(t *testing.T) {
		// Key 4 ranks first wherever it is a candidate: rows 4..9 keep it.
		for _, x := range []float64{nan, posInf} {
			p := base.clone()
			p.delta[4] = x
			o, lse := p.forward(t)
			twin := base.clone()
			twin.delta[4] = 1e9 // ranks as x does among these weights
			for i := 4; i < 10; i++ {
				require.True(t, twin.keeps(t, 0, i, 4))
			}
			cleanO, cleanLSE := twin.forward(t)
			requireRows(t, o, lse, cleanO, cleanLSE, func(h, i int) bool { return i >= 4 }, noElem)
		}
	})
	t.Run("nan query", func(t *testing.T) {
		p := base.clone()
		p.q.Set(0, 6, 1, 2, nan)
		o, lse := p.forward(t)
		requireRows(t, o, lse, cleanO, cleanLSE, func(h, i int) bool { return h == 1 && i == 6 }, noElem)
	})
	j := partlyKept(t, base)
	t.Run("nan key", func(t *testing.T) {
		p := base.clone()
		p.k.Set(0, j, 0, 1, nan)
		o, lse := p.forward(t)
		requireRows(t, o, lse, cleanO, cleanLSE, func(h, i int) bool { return base.keeps(t, h, i, j) }, noElem)
	})
	t.Run("nan value", func(t *testing.T) {
		p := base.clone()
		p.v.Set(0, j, 0, 2, nan)
		o, lse := p.forward(t)
		requireRows(t, o, lse, cleanO, cleanLSE, never, func(h, i, d int) bool { return d == 2 && base.keeps(t, h, i, j) })
	})
	t.Run("-inf weights", func(t *testing.T) {
		// Keys 0 and 1 at -inf: row 0 keeps only key 0, row 1 keys {0, 1},
		// row 2 keys {0, 1, 2}; a NaN in v_1 reaches none of them (P = 0).
		p := base.clone()
		p.delta[0], p.delta[1] = negInf, negInf
		p.v.Set(0, 1, 0, 3, nan)
		o, lse := p.forward(t)
		for h := 0; h < 2; h++ {
			for i := 0; i < 2; i++ {
				assert.True(t, math.IsInf(lse[h*10+i], -1), "head %d row %d", h, i)
				assert.Equal(t, []float64{0, 0, 0, 0}, o.Row(0, i, h), "head %d row %d", h, i)
			}
			assert.Equal(t, p.v.Row(0, 2, 0), o.Row(0, 2, h), "row 2: key 2 takes all")
			assert.False(t, math.IsNaN(lse[h*10+2]))
		}
	})
	t.Run("empty row with nan query", func(t *testing.T) {
		// Lq > Lk, causal: rows 0 and 1 keep no key, whatever their query.
		p := base.clone()
		p.k = ref.NewTensor4(1, 8, 1, 4)
		copy(p.k.Data, base.k.Data)
		p.v = ref.NewTensor4(1, 8, 1, 4)
		copy(p.v.Data, base.v.Data)
		p.delta = p.delta[:8]
		p.q.Set(0, 0, 0, 0, nan)
		p.q.Set(0, 1, 1, 0, posInf)
		o, lse := p.forward(t)
		for h := 0; h < 2; h++ {
			for i := 0; i < 2; i++ {
				assert.True(t, math.IsInf(lse[h*10+i], -1), "head %d row %d", h, i)
				assert.Equal(t, []float64{0, 0, 0, 0}, o.Row(0, i, h), "head %d row %d", h, i)
			}
		}
	})
	t.Run("softcap caps infinite weights", func(t *testing.T) {
		// tanh(+-inf) = +-1: with a softcap an infinite weight gives a finite score.
		p := base.clone()
		p.opts.Softcap = 2
		p.delta[4] = posInf
		o, lse := p.forward(t)
		for i, x := range lse {
			require.False(t, math.IsNaN(x) || math.IsInf(x, 0), "lse[%d] = %v", i, x)
		}
		requireNoNaN(t, "o", o.Data)
	})
}

// requireGrad checks one gradient of a non-finite problem: NaN exactly where
// nanAt says, the clean twin's value elsewhere.
func requireGrad(t *testing.T, name string, got, clean []float64, nanAt func(e int) bool) {
	t.Helper()
	for e := range got {
		if nanAt(e) {
			require.True(t, math.IsNaN(got[e]), "%s[%d] = %v, want NaN", name, e, got[e])
		} else {
			require.InDelta(t, clean[e], got[e], 1e-12, "%s[%d]", name, e)
		}
	}
}

func TestBackwardNonFinite(t *testing.T) {
	base := newNonFiniteProblem()
	dO := ref.RandTensor4(newRNG(12), 1, 10, 2, 4, 1)
	grads := func(p nonFiniteProblem) *ref.Grads {
		o, lse := p.forward(t)
		g, err := ref.Backward(p.q, p.k, p.v, p.delta, 1, p.opts, o, lse, dO)
		require.NoError(t, err)
		return g
	}
	clean := grads(base)
	const D = 4
	// keptBy reports whether key j is kept by row i of some head in rows(h, i).
	keptBy := func(p nonFiniteProblem, j int, rows func(h, i int) bool) bool {
		for h := 0; h < 2; h++ {
			for i := 0; i < 10; i++ {
				if rows(h, i) && p.keeps(t, h, i, j) {
					return true
				}
			}
		}
		return false
	}

	t.Run("nan query", func(t *testing.T) {
		// Row 6 of head 1 is NaN: its dQ, and dK, dV, dDelta of its keys.
		p := base.clone()
		p.q.Set(0, 6, 1, 2, nan)
		g := grads(p)
		bad := func(h, i int) bool { return h == 1 && i == 6 }
		keyBad := func(e int) bool { return keptBy(base, e/D, bad) }
		requireGrad(t, "dQ", g.DQ.Data, clean.DQ.Data, func(e int) bool { return e/D == 6*2+1 })
		requireGrad(t, "dK", g.DK.Data, clean.DK.Data, keyBad)
		requireGrad(t, "dV", g.DV.Data, clean.DV.Data, keyBad)
		requireGrad(t, "dDelta", g.DDelta, clean.DDelta, func(j int) bool { return keptBy(base, j, bad) })
	})
	t.Run("nan value", func(t *testing.T) {
		// The rows keeping key j have o NaN, lse finite: dQ of those rows, dK
		// and dDelta of their keys are NaN; dV is finite.
		j := partlyKept(t, base)
		p := base.clone()
		p.v.Set(0, j, 0, 0, nan)
		g := grads(p)
		bad := func(h, i int) bool { return base.keeps(t, h, i, j) }
		requireGrad(t, "dQ", g.DQ.Data, clean.DQ.Data, func(e int) bool { return bad((e/D)%2, e/D/2) })
		requireGrad(t, "dK", g.DK.Data, clean.DK.Data, func(e int) bool { return keptBy(base, e/D, bad) })
		requireGrad(t, "dDelta", g.DDelta, clean.DDelta, func(j int) bool { return keptBy(base, j, bad) })
		for e, x := range g.DV.Data {
			require.False(t, math.IsNaN(x), "dV[%d]", e)
		}
	})
	t.Run("-inf weight with nan value", func(t *testing.T) {
		// Key 1 at -inf with a NaN value is kept by rows 1 and 2 with P = 0:
		// no gradient sees the NaN.
		p := base.clone()
		p.delta[1] = negInf
		p.v.Set(0, 1, 0, 0, nan)
		g := grads(p)
		for _, x := range [][]float64{g.DQ.Data, g.DK.Data, g.DV.Data, g.DDelta} {
			requireNoNaN(t, "grad", x)
		}
	})
}
