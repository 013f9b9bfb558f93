package ref_test

import (
	"math"
	"testing"

	"github.com/dmavk/dmavk/ref"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSoftplusSigmoid(t *testing.T) {
	assert.Equal(t, math.Ln2, ref.Softplus(0))
	assert.Equal(t, 1000.0, ref.Softplus(1000), "no overflow for large x")
	assert.Equal(t, 0.0, ref.Softplus(-1000), "underflows to 0, not NaN")
	assert.InDelta(t, math.Exp(-30), ref.Softplus(-30), 1e-25, "log1p keeps small values accurate")
	assert.InDelta(t, math.Log(4), ref.Softplus(math.Log(3)), 1e-15) // log(1+3)
	assert.Equal(t, 0.5, ref.Sigmoid(0))
	assert.Equal(t, 1.0, ref.Sigmoid(1000))
	assert.Equal(t, 0.0, ref.Sigmoid(-1000))
	assert.InDelta(t, 0.75, ref.Sigmoid(math.Log(3)), 1e-15) // 3/(3+1)
}

// handV is V of batch 1 with Lk = 3 keys, Hkv = 2 heads and D = 1, so
// Vf[j] = [V[j,head 0], V[j,head 1]] = [1,1], [0,1], [2,1].
func handV() *ref.Tensor4 {
	v := ref.NewTensor4(1, 3, 2, 1)
	copy(v.Data, []float64{1, 1, 0, 1, 2, 1})
	return v
}

func TestDynamicWeightsByHand(t *testing.T) {
	// Two bias heads. Column 0 of Wdt is [ln3, 1] with bdt = -1, so
	// dt[j,0] = ln3*Vf[j,0] + Vf[j,1] - 1 = ln3, 0, 2ln3 and
	// softplus(dt) = ln(1+3), ln(1+1), ln(1+9) = ln4, ln2, ln10.
	// Column 1 is [0, 0] with bdt = 0: dt = 0, softplus = ln2 for every key.
	p := ref.WeightParams{
		Wdt: []float64{math.Log(3), 0, 1, 0}, // row-major [Hkv*D=2][Hb=2]
		Bdt: []float64{-1, 0},
		A:   []float64{0.5, 2},
		Hb:  2,
	}
	s2, s10 := math.Sqrt2, math.Sqrt(10)

	p.Form = ref.FormExp
	// head 0: exp(0.5*ln4) = 2, exp(0.5*ln2) = √2, exp(0.5*ln10) = √10
	// head 1: exp(2*ln2) = 4 for every key
	want := []float64{2, s2, s10, 4, 4, 4}
	got := ref.DynamicWeights64(handV(), p)
	require.Len(t, got, 6)
	assert.InDeltaSlice(t, want, got, 1e-14)

	p.Form = ref.FormLinear
	// head 0: 0.5*ln4 = ln2, 0.5*ln2, 0.5*ln10; head 1: 2*ln2
	want = []float64{math.Ln2, math.Ln2 / 2, math.Log(10) / 2, 2 * math.Ln2, 2 * math.Ln2, 2 * math.Ln2}
	assert.InDeltaSlice(t, want, ref.DynamicWeights64(handV(), p), 1e-14)

	p.Bdt = nil // no bdt: dt[0,0] = ln3 + 1, softplus = ln(1 + 3e)
	assert.InDelta(t, 0.5*math.Log(1+3*math.E), ref.DynamicWeights64(handV(), p)[0], 1e-14)
}

func TestDynamicWeightsAZeroIsExactlyOne(t *testing.T) {
	rng := newRNG(2)
	v := ref.RandTensor4(rng, 2, 5, 2, 3, 3)
	p := ref.WeightParams{Wdt: ref.RandSlice(rng, 6*4, 2), Bdt: ref.RandSlice(rng, 4, 1), A: make([]float64, 4), Hb: 4}
	for _, x := range ref.DynamicWeights(v, p) {
		require.Equal(t, 1.0, x)
	}
	p.Form = ref.FormLinear
	for _, x := range ref.DynamicWeights(v, p) {
		require.Equal(t, 0.0, x)
	}
}

func TestDynamicWeightsRoundsThroughFloat32(t *testing.T) {
	rng := newRNG(3)
	v := ref.RandTensor4(rng, 2, 7, 2, 3, 1)
	p := ref.WeightParams{Wdt: ref.RandSlice(rng, 6*2, 1), A: ref.RandSlice(rng, 2, 1), Hb: 2}
	d64 := ref.DynamicWeights64(v, p)
	d32 := ref.DynamicWeights(v, p)
	assert.Equal(t, ref.Round32(d64), d32)
	assert.NotEqual(t, d64, d32, "random weights are not float32 numbers")
}

func TestDynamicWeightsPanicsOnBadParams(t *testing.T) {
	v := handV()
	assert.Panics(t, func() { ref.DynamicWeights(v, ref.WeightParams{Wdt: make([]float64, 3), A: []float64{1}, Hb: 1}) })
	assert.Panics(t, func() { ref.DynamicWeights(v, ref.WeightParams{Wdt: make([]float64, 2), A: []float64{1, 2}, Hb: 1}) })
	assert.Panics(t, func() {
		ref.DynamicWeights(v, ref.WeightParams{Wdt: make([]float64, 2), A: []float64{1}, Bdt: []float64{1, 2}, Hb: 1})
	})
}

// TestWeightsBackwardFD checks WeightsBackward alone against central
// differences of loss = sum(delta .* G).
func TestWeightsBackwardFD(t *testing.T) {
	for _, form := range []ref.WeightForm{ref.FormExp, ref.FormLinear} {
		t.Run(form.String(), func(t *testing.T) {
			rng := newRNG(4)
			const b, lk, hkv, d, hb = 2, 4, 2, 3, 4
			v := ref.RandTensor4(rng, b, lk, hkv, d, 1)
			p := ref.WeightParams{
				Wdt: ref.RandSlice(rng, hkv*d*hb, 0.7), Bdt: ref.RandSlice(rng, hb, 0.5),
				A: ref.RandSlice(rng, hb, 1), Hb: hb, Form: form,
			}
			g := ref.RandSlice(rng, b*hb*lk, 1)
			loss := func() float64 { return dotAll(ref.DynamicWeights64(v, p), g) }

			dA, dWdt, dBdt, dV := ref.WeightsBackward(v, p, g)
			assert.Less(t, ref.RelErr(dA, numGrad(p.A, loss)), 1e-6, "dA")
			assert.Less(t, ref.RelErr(dWdt, numGrad(p.Wdt, loss)), 1e-6, "dWdt")
			assert.Less(t, ref.RelErr(dBdt, numGrad(p.Bdt, loss)), 1e-6, "dBdt")
			assert.Less(t, ref.RelErr(dV.Data, numGrad(v.Data, loss)), 1e-6, "dV")

			p.Bdt = nil
			_, _, dBdt, _ = ref.WeightsBackward(v, p, g)
			assert.Nil(t, dBdt, "no bdt, no gradient")
		})
	}
}
