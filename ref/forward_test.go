package ref_test

import (
	"math"
	"testing"

	"github.com/dmavk/dmavk/ref"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// handQKV is a problem small enough to work out on paper: B = H = Hkv = 1,
// L = 3, D = 2.
//
//	q0 = [1,0]  k0 = [0,0]        v0 = [1,2]   delta = [1, 0, 0.5]
//	q1 = [0,1]  k1 = [0,1]        v1 = [3,4]
//	q2 = [1,1]  k2 = [0.5, ln3]   v2 = [5,6]
//
// With scale 1, s_ij = q_i·k_j + delta_j:
//
//	s00 = 1
//	s10 = 1, s11 = 1
//	s20 = 1, s21 = 1, s22 = 0.5 + ln3 + 0.5 = 1 + ln3
func handQKV() (q, k, v *ref.Tensor4, delta []float64) {
	q, k, v = ref.NewTensor4(1, 3, 1, 2), ref.NewTensor4(1, 3, 1, 2), ref.NewTensor4(1, 3, 1, 2)
	copy(q.Data, []float64{1, 0, 0, 1, 1, 1})
	copy(k.Data, []float64{0, 0, 0, 1, 0.5, math.Log(3)})
	copy(v.Data, []float64{1, 2, 3, 4, 5, 6})
	return q, k, v, []float64{1, 0, 0.5}
}

func TestForwardByHand(t *testing.T) {
	q, k, v, delta := handQKV()

	// Mode row, w = 2, causal. Row 0 keeps {0}; row 1 keeps {0,1} (only two
	// candidates); row 2 ranks key 0 (1) > key 2 (0.5) > key 1 (0), keeps
	// {0,2}: scores 1 and 1+ln3, so P = [1/4, 3/4].
	//	o0 = v0 = [1,2]                   lse0 = 1
	//	o1 = (v0+v1)/2 = [2,3]            lse1 = 1 + ln2
	//	o2 = v0/4 + 3v2/4 = [4,5]         lse2 = 1 + ln4
	o, lse, err := ref.Forward(q, k, v, delta, 1, ref.Options{Mode: ref.ModeRow, Window: 2, Causal: true, Scale: 1})
	require.NoError(t, err)
	assert.InDeltaSlice(t, []float64{1, 2, 2, 3, 4, 5}, o.Data, 1e-14)
	assert.InDeltaSlice(t, []float64{1, 1 + math.Ln2, 1 + math.Log(4)}, lse, 1e-14)

	// Mode none: row 2 keeps all three, exp-weights 1 : 1 : 3.
	//	o2 = (v0 + v1 + 3v2)/5 = [19/5, 24/5]   lse2 = 1 + ln5
	o, lse, err = ref.Forward(q, k, v, delta, 1, ref.Options{Mode: ref.ModeNone, Causal: true, Scale: 1})
	require.NoError(t, err)
	assert.InDeltaSlice(t, []float64{1, 2, 2, 3, 3.8, 4.8}, o.Data, 1e-14)
	assert.InDeltaSlice(t, []float64{1, 1 + math.Ln2, 1 + math.Log(5)}, lse, 1e-14)
}

func TestForwardDefaultScale(t *testing.T) {
	// D = 4, so scale = 1/2: s = [q·k0/2, q·k1/2] = [2, 0].
	q, k, v := ref.NewTensor4(1, 1, 1, 4), ref.NewTensor4(1, 2, 1, 4), ref.NewTensor4(1, 2, 1, 4)
	copy(q.Data, []float64{1, 1, 1, 1})
	copy(k.Data, []float64{1, 1, 1, 1, 0, 0, 0, 0})
	_, lse, err := ref.Forward(q, k, v, nil, 0, ref.Options{Mode: ref.ModeNone})
	require.NoError(t, err)
	assert.InDelta(t, math.Log(math.Exp(2)+1), lse[0], 1e-14)
}

func TestForwardSoftcapByHand(t *testing.T) {
	// One row, two keys, D = 1, scale 1, softcap 1. Raw scores are 0 and
	// atanh(ln2); capped, tanh gives 0 and ln2, so P = [1/3, 2/3].
	//	o = 0/3 + 2*3/3 = 2,  lse = ln(1 + 2) = ln3
	q, k, v := ref.NewTensor4(1, 1, 1, 1), ref.NewTensor4(1, 2, 1, 1), ref.NewTensor4(1, 2, 1, 1)
	q.Data[0] = 1
	copy(k.Data, []float64{0, math.Atanh(math.Ln2)})
	copy(v.Data, []float64{0, 3})
	o, lse, err := ref.Forward(q, k, v, nil, 0, ref.Options{Mode: ref.ModeNone, Scale: 1, Softcap: 1})
	require.NoError(t, err)
	assert.InDelta(t, 2, o.Data[0], 1e-14)
	assert.InDelta(t, math.Log(3), lse[0], 1e-14)

	// The weight goes in before the cap: delta = [atanh(ln2), 0] with
	// q·k = 0 caps the same way.
	q.Data[0] = 0
	o, lse, err = ref.Forward(q, k, v, []float64{0, math.Atanh(math.Ln2)}, 1, ref.Options{Mode: ref.ModeNone, Scale: 1, Softcap: 1})
	require.NoError(t, err)
	assert.InDelta(t, 2, o.Data[0], 1e-14)
	assert.InDelta(t, math.Log(3), lse[0], 1e-14)
}

// slidingWindow is an independent oracle: causal attention where row i sees
// keys p_i-w+1 .. p_i, with plain scores scale*q·k and no weights.
func slidingWindow(q, k, v *ref.Tensor4, w int, scale float64) (*ref.Tensor4, []float64) {
	o := ref.NewTensor4(q.B, q.L, q.H, q.D)
	lse := make([]float64, q.B*q.H*q.L)
	for b := 0; b < q.B; b++ {
		for h := 0; h < q.H; h++ {
			kh := h * k.H / q.H
			for i := 0; i < q.L; i++ {
				p := i + k.L - q.L
				lo := max(0, p-w+1)
				if p < 0 {
					lse[(b*q.H+h)*q.L+i] = math.Inf(-1)
					continue
				}
				s := make([]float64, p-lo+1)
				m := math.Inf(-1)
				for j := lo; j <= p; j++ {
					for d := 0; d < q.D; d++ {
						s[j-lo] += scale * q.At(b, i, h, d) * k.At(b, j, kh, d)
					}
					m = math.Max(m, s[j-lo])
				}
				var z float64
				for _, x := range s {
					z += math.Exp(x - m)
				}
				for j := lo; j <= p; j++ {
					pj := math.Exp(s[j-lo]-m) / z
					for d := 0; d < q.D; d++ {
						o.Set(b, i, h, d, o.At(b, i, h, d)+pj*v.At(b, j, kh, d))
					}
				}
				lse[(b*q.H+h)*q.L+i] = m + math.Log(z)
			}
		}
	}
	return o, lse
}

func TestForwardAZeroIsSlidingWindow(t *testing.T) {
	rng := newRNG(6)
	for _, c := range []struct{ lq, lk, w int }{
		{8, 8, 3}, {8, 8, 1}, {8, 8, 8}, {8, 8, 20}, {3, 8, 2}, {8, 5, 2}, {1, 9, 4},
	} {
		const b, h, hkv, d = 2, 4, 2, 3
		q := ref.RandTensor4(rng, b, c.lq, h, d, 1)
		k := ref.RandTensor4(rng, b, c.lk, hkv, d, 1)
		v := ref.RandTensor4(rng, b, c.lk, hkv, d, 1)
		wantO, wantLSE := slidingWindow(q, k, v, c.w, 1/math.Sqrt(d))
		for _, form := range []ref.WeightForm{ref.FormExp, ref.FormLinear} {
			for _, hb := range []int{h, hkv} {
				p := ref.WeightParams{Wdt: ref.RandSlice(rng, hkv*d*hb, 1), A: make([]float64, hb), Hb: hb, Form: form}
				delta := ref.DynamicWeights(v, p) // all 1 (exp) or all 0 (linear)
				o, lse, err := ref.Forward(q, k, v, delta, hb, ref.Options{Mode: ref.ModeRow, Window: c.w, Causal: true})
				require.NoError(t, err)
				assert.Less(t, ref.MaxAbsDiff(o.Data, wantO.Data), 1e-14, "%+v %v hb=%d", c, form, hb)
				// A weight of 1 on every key shifts every score, so lse, by 1.
				shift := 0.0
				if form == ref.FormExp {
					shift = 1
				}
				for i := range lse {
					assert.InDelta(t, wantLSE[i]+shift, lse[i], 1e-13)
				}
				if c.lq > c.lk {
					assert.True(t, math.IsInf(lse[0], -1), "row 0 keeps no key")
				}
			}
		}
	}
}

func TestForwardEmptyRows(t *testing.T) {
	rng := newRNG(7)
	// Lq > Lk, causal: rows 0..2 have p_i < 0.
	q := ref.RandTensor4(rng, 1, 5, 2, 4, 1)
	k := ref.RandTensor4(rng, 1, 2, 1, 4, 1)
	v := ref.RandTensor4(rng, 1, 2, 1, 4, 1)
	delta := ref.RandSlice(rng, 2, 1)
	for _, opts := range []ref.Options{
		{Mode: ref.ModeRow, Window: 1, Causal: true},
		{Mode: ref.ModeShared, Window: 1, Causal: true},
		{Mode: ref.ModeNone, Causal: true, Softcap: 5},
		{Mode: ref.ModeExplicit, Causal: true},
	} {
		o, lse, err := ref.Forward(q, k, v, delta, 1, opts)
		require.NoError(t, err)
		requireNoNaN(t, "o", o.Data)
		for h := 0; h < 2; h++ {
			for i := 0; i < 3; i++ {
				assert.True(t, math.IsInf(lse[h*5+i], -1), "mode %v: lse of empty row is -inf", opts.Mode)
				assert.Equal(t, []float64{0, 0, 0, 0}, o.Row(0, i, h), "mode %v: o of empty row is 0", opts.Mode)
			}
			assert.False(t, math.IsInf(lse[h*5+4], 0))
		}
	}

	// Rows emptied by an explicit mask, and a row whose only key has a -inf
	// bias, are empty too.
	m := ref.NewBroadcast4Bool(1, 1, 5, 1)
	m.Data[4] = true
	bias := ref.NewBroadcast4(1, 1, 1, 2)
	bias.Data[0] = math.Inf(-1)
	o, lse, err := ref.Forward(q, k, v, nil, 0, ref.Options{Mode: ref.ModeExplicit, Mask: m, Bias: bias})
	require.NoError(t, err)
	requireNoNaN(t, "o", o.Data)
	assert.True(t, math.IsInf(lse[3], -1))
	assert.Equal(t, v.Row(0, 1, 0), o.Row(0, 4, 0), "key 0 is biased away; key 1 takes all")
	_, lse, err = ref.Forward(q, k.Clone(), v, nil, 0, ref.Options{Mode: ref.ModeExplicit, Causal: true, Bias: bias})
	require.NoError(t, err)
	assert.True(t, math.IsInf(lse[3], -1), "row 3 keeps only key 0, whose score is -inf")
}

func TestForwardGQAIsRepeatedHeads(t *testing.T) {
	rng := newRNG(8)
	for _, hkv := range []int{1, 2} { // MQA and GQA
		const b, lq, lk, h, d = 2, 5, 7, 4, 3
		q := ref.RandTensor4(rng, b, lq, h, d, 1)
		k := ref.RandTensor4(rng, b, lk, hkv, d, 1)
		v := ref.RandTensor4(rng, b, lk, hkv, d, 1)
		delta := ref.RandSlice(rng, b*hkv*lk, 1) // Hb = Hkv
		opts := ref.Options{Mode: ref.ModeRow, Window: 3, Causal: true, Softcap: 2}
		o, lse, err := ref.Forward(q, k, v, delta, hkv, opts)
		require.NoError(t, err)
		kr, vr, dr := repeatHeads(k, h), repeatHeads(v, h), repeatDelta(delta, b, hkv, h, lk)
		or, lser, err := ref.Forward(q, kr, vr, dr, h, opts)
		require.NoError(t, err)
		assert.Equal(t, or.Data, o.Data, "Hkv=%d", hkv)
		assert.Equal(t, lser, lse, "Hkv=%d", hkv)
		// Hb = H with the weights repeated is the same call again.
		o2, _, err := ref.Forward(q, k, v, dr, h, opts)
		require.NoError(t, err)
		assert.Equal(t, o.Data, o2.Data)
	}
}

func TestForwardExplicitBiasIsDelta(t *testing.T) {
	rng := newRNG(9)
	const b, lq, lk, h, hkv, d = 2, 4, 6, 4, 2, 3
	q := ref.RandTensor4(rng, b, lq, h, d, 1)
	k := ref.RandTensor4(rng, b, lk, hkv, d, 1)
	v := ref.RandTensor4(rng, b, lk, hkv, d, 1)
	// A [B, Hkv, 1, Lk] bias is the same thing as weights with Hb = Hkv.
	bias := ref.NewBroadcast4(b, hkv, 1, lk)
	copy(bias.Data, ref.RandSlice(rng, len(bias.Data), 1))
	o1, lse1, err := ref.Forward(q, k, v, nil, 0, ref.Options{Mode: ref.ModeExplicit, Causal: true, Bias: bias})
	require.NoError(t, err)
	o2, lse2, err := ref.Forward(q, k, v, bias.Data, hkv, ref.Options{Mode: ref.ModeNone, Causal: true})
	require.NoError(t, err)
	assert.Equal(t, o2.Data, o1.Data)
	assert.Equal(t, lse2, lse1)
	// In explicit mode, weights and bias add up.
	half := make([]float64, len(bias.Data))
	for i, x := range bias.Data {
		half[i] = x / 2
	}
	hb := &ref.Broadcast4{B: b, H: hkv, Lq: 1, Lk: lk, Data: half}
	o3, _, err := ref.Forward(q, k, v, half, hkv, ref.Options{Mode: ref.ModeExplicit, Causal: true, Bias: hb})
	require.NoError(t, err)
	assert.Less(t, ref.MaxAbsDiff(o3.Data, o1.Data), 1e-15)
}

func TestForwardExplicitBiasByHand(t *testing.T) {
	// Lq = Lk = 2, D = 1, q = 0, so s = bias. A [1, 1, Lq, Lk] bias
	//	[[0, ln3], [ln3, 0]]
	// gives row 0 P = [1/4, 3/4] and row 1 P = [3/4, 1/4]; with v = [0, 4]
	// o = [3, 1], and lse = ln4 for both rows.
	q, k, v := ref.NewTensor4(1, 2, 1, 1), ref.NewTensor4(1, 2, 1, 1), ref.NewTensor4(1, 2, 1, 1)
	copy(k.Data, []float64{1, 2})
	copy(v.Data, []float64{0, 4})
	bias := ref.NewBroadcast4(1, 1, 2, 2)
	copy(bias.Data, []float64{0, math.Log(3), math.Log(3), 0})
	o, lse, err := ref.Forward(q, k, v, nil, 0, ref.Options{Mode: ref.ModeExplicit, Bias: bias})
	require.NoError(t, err)
	assert.InDeltaSlice(t, []float64{3, 1}, o.Data, 1e-14)
	assert.InDeltaSlice(t, []float64{math.Log(4), math.Log(4)}, lse, 1e-14)
}

func TestForwardPaddedKeysHaveNoEffect(t *testing.T) {
	rng := newRNG(10)
	const b, l, h, hkv, d = 2, 6, 2, 2, 3
	q := ref.RandTensor4(rng, b, l, h, d, 1)
	k := ref.RandTensor4(rng, b, l, hkv, d, 1)
	v := ref.RandTensor4(rng, b, l, hkv, d, 1)
	delta := ref.RandSlice(rng, b*hkv*l, 1)
	delta[2] = 100 // padded key 2 of batch 0 would win every selection
	pad := [][]bool{{true, true, false, true, true, false}, {true, true, true, true, true, true}}
	for _, mode := range []ref.Mode{ref.ModeRow, ref.ModeShared, ref.ModeNone, ref.ModeExplicit} {
		opts := ref.Options{Mode: mode, Window: 2, Causal: true, KeyPadding: pad}
		if mode == ref.ModeExplicit {
			opts.Window = 0
		}
		o1, lse1, err := ref.Forward(q, k, v, delta, hkv, opts)
		require.NoError(t, err)
		k2, v2, d2 := k.Clone(), v.Clone(), append([]float64(nil), delta...)
		for _, j := range []int{2, 5} {
			for hh := 0; hh < hkv; hh++ {
				for x := 0; x < d; x++ {
					k2.Set(0, j, hh, x, 1e3)
					v2.Set(0, j, hh, x, -1e3)
				}
				d2[hh*l+j] = -7
			}
		}
		o2, lse2, err := ref.Forward(q, k2, v2, d2, hkv, opts)
		require.NoError(t, err)
		assert.Equal(t, o1.Data, o2.Data, "mode %v", mode)
		assert.Equal(t, lse1, lse2, "mode %v", mode)
	}
}

func TestForwardLargeWindowIsModeNone(t *testing.T) {
	rng := newRNG(11)
	q := ref.RandTensor4(rng, 1, 5, 2, 3, 1)
	k := ref.RandTensor4(rng, 1, 5, 2, 3, 1)
	v := ref.RandTensor4(rng, 1, 5, 2, 3, 1)
	delta := ref.RandSlice(rng, 10, 1)
	o1, _, err := ref.Forward(q, k, v, delta, 2, ref.Options{Mode: ref.ModeNone, Causal: true})
	require.NoError(t, err)
	o2, _, err := ref.Forward(q, k, v, delta, 2, ref.Options{Mode: ref.ModeRow, Window: 5, Causal: true})
	require.NoError(t, err)
	assert.Equal(t, o1.Data, o2.Data)
}

func TestForwardErrors(t *testing.T) {
	q := ref.NewTensor4(1, 2, 2, 4)
	k := ref.NewTensor4(1, 2, 1, 4)
	opts := ref.Options{Mode: ref.ModeNone}
	_, _, err := ref.Forward(q, k, ref.NewTensor4(1, 3, 1, 4), nil, 0, opts)
	assert.Error(t, err, "k and v differ")
	_, _, err = ref.Forward(q, ref.NewTensor4(1, 2, 1, 3), ref.NewTensor4(1, 2, 1, 3), nil, 0, opts)
	assert.Error(t, err, "head dims differ")
	_, _, err = ref.Forward(q, k, &ref.Tensor4{B: 1, L: 2, H: 1, D: 4}, nil, 0, opts)
	assert.Error(t, err, "v has no data")
	_, _, err = ref.Forward(q, k, k, []float64{1}, 1, opts)
	assert.Error(t, err, "delta too short")
	_, _, err = ref.Forward(nil, k, k, nil, 0, opts)
	assert.Error(t, err)
}
