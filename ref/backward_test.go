package ref_test

import (
	"math"
	"testing"

	"github.com/dmavk/dmavk/ref"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBackwardByHand(t *testing.T) {
	// handQKV in mode row (see TestForwardByHand), with dO = [1,0] on row 1
	// only. Row 1 keeps keys 0 and 1 with P = 1/2 each and o1 = [2,3]:
	//	dot(dO,o1) = 2, dot(dO,v0) = 1, dot(dO,v1) = 3
	//	dS10 = (1-2)/2 = -1/2,  dS11 = (3-2)/2 = 1/2
	//	dQ1 = -k0/2 + k1/2 = [0, 1/2]
	//	dK0 = -q1/2 = [0,-1/2],  dK1 = q1/2 = [0, 1/2]
	//	dV0 = dV1 = dO/2 = [1/2, 0]
	//	dDelta = [-1/2, 1/2, 0]
	q, k, v, delta := handQKV()
	opts := ref.Options{Mode: ref.ModeRow, Window: 2, Causal: true, Scale: 1}
	o, lse, err := ref.Forward(q, k, v, delta, 1, opts)
	require.NoError(t, err)
	dO := ref.NewTensor4(1, 3, 1, 2)
	dO.Set(0, 1, 0, 0, 1)
	g, err := ref.Backward(q, k, v, delta, 1, opts, o, lse, dO)
	require.NoError(t, err)
	assert.InDeltaSlice(t, []float64{0, 0, 0, 0.5, 0, 0}, g.DQ.Data, 1e-14)
	assert.InDeltaSlice(t, []float64{0, -0.5, 0, 0.5, 0, 0}, g.DK.Data, 1e-14)
	assert.InDeltaSlice(t, []float64{0.5, 0, 0.5, 0, 0, 0}, g.DV.Data, 1e-14)
	assert.InDeltaSlice(t, []float64{-0.5, 0.5, 0}, g.DDelta, 1e-14)
}

// fdCase is one attention problem for the finite-difference checks.
type fdCase struct {
	name                  string
	b, lq, lk, h, hkv, d  int
	hbKV                  bool // Hb = Hkv, else Hb = H
	noDelta               bool // pass nil weights (none/explicit only)
	pad, explicitMaskBias bool
	opts                  ref.Options
}

var fdCases = []fdCase{
	{name: "row causal GQA Hb=Hkv", b: 2, lq: 6, lk: 6, h: 4, hkv: 2, d: 3, hbKV: true,
		opts: ref.Options{Mode: ref.ModeRow, Window: 3, Causal: true}},
	{name: "row causal softcap Hb=H", b: 2, lq: 6, lk: 6, h: 4, hkv: 2, d: 3,
		opts: ref.Options{Mode: ref.ModeRow, Window: 2, Causal: true, Softcap: 1.5}},
	{name: "row MQA non-causal Lq<Lk", b: 1, lq: 3, lk: 7, h: 3, hkv: 1, d: 4, hbKV: true,
		opts: ref.Options{Mode: ref.ModeRow, Window: 2}},
	{name: "shared causal softcap padded", b: 2, lq: 5, lk: 7, h: 4, hkv: 2, d: 3, hbKV: true, pad: true,
		opts: ref.Options{Mode: ref.ModeShared, Window: 4, Causal: true, Softcap: 2}},
	{name: "shared Hb=H", b: 1, lq: 6, lk: 6, h: 2, hkv: 2, d: 2,
		opts: ref.Options{Mode: ref.ModeShared, Window: 3, Causal: true, Scale: 0.7}},
	{name: "none Lq>Lk empty rows softcap padded", b: 2, lq: 6, lk: 4, h: 4, hkv: 2, d: 3, pad: true,
		opts: ref.Options{Mode: ref.ModeNone, Causal: true, Softcap: 1}},
	{name: "none non-causal", b: 1, lq: 4, lk: 5, h: 2, hkv: 1, d: 5, hbKV: true,
		opts: ref.Options{Mode: ref.ModeNone}},
	{name: "explicit mask bias delta softcap", b: 2, lq: 5, lk: 6, h: 4, hkv: 2, d: 3, explicitMaskBias: true,
		opts: ref.Options{Mode: ref.ModeExplicit, Causal: true, Softcap: 1.5}},
	{name: "explicit no delta", b: 1, lq: 5, lk: 5, h: 2, hkv: 1, d: 3, noDelta: true, explicitMaskBias: true,
		opts: ref.Options{Mode: ref.ModeExplicit}},
}

// setup draws the inputs of c; the scale of 1.5 makes the softmax and the
// softcap far from linear.
func (c fdCase) setup(seed uint64) (q, k, v *ref.Tensor4, delta []float64, hb int, opts ref.Options) {
	rng := newRNG(seed)
	q = ref.RandTensor4(rng, c.b, c.lq, c.h, c.d, 1.5)
	k = ref.RandTensor4(rng, c.b, c.lk, c.hkv, c.d, 1.5)
	v = ref.RandTensor4(rng, c.b, c.lk, c.hkv, c.d, 1)
	hb = c.h
	if c.hbKV {
		hb = c.hkv
	}
	if !c.noDelta {
		delta = ref.RandSlice(rng, c.b*hb*c.lk, 1)
	}
	opts = c.opts
	if c.pad {
		opts.KeyPadding = make([][]bool, c.b)
		for b := range opts.KeyPadding {
			opts.KeyPadding[b] = make([]bool, c.lk)
			for j := range opts.KeyPadding[b] {
				opts.KeyPadding[b][j] = j != 1+b // a different hole per batch
			}
		}
	}
	if c.explicitMaskBias {
		m := ref.NewBroadcast4Bool(c.b, c.hkv, c.lq, c.lk)
		for i := range m.Data {
			m.Data[i] = rng.Float64() < 0.7
		}
		opts.Mask = m
		bias := ref.NewBroadcast4(1, c.h, c.lq, c.lk)
		copy(bias.Data, ref.RandSlice(rng, len(bias.Data), 1))
		opts.Bias = bias
	}
	return q, k, v, delta, hb, opts
}

func TestBackwardFiniteDifferences(t *testing.T) {
	for n, c := range fdCases {
		t.Run(c.name, func(t *testing.T) {
			q, k, v, delta, hb, opts := c.setup(uint64(100 + n))
			s := ref.ShapeOf(q, k)
			keep0, err := ref.Keep(delta, hb, s, opts)
			require.NoError(t, err)
			gO := ref.RandTensor4(newRNG(uint64(200+n)), c.b, c.lq, c.h, c.d, 1)

			loss := func() float64 {
				o, _, err := ref.Forward(q, k, v, delta, hb, opts)
				require.NoError(t, err)
				return dotAll(o.Data, gO.Data)
			}
			o, lse, err := ref.Forward(q, k, v, delta, hb, opts)
			require.NoError(t, err)
			g, err := ref.Backward(q, k, v, delta, hb, opts, o, lse, gO)
			require.NoError(t, err)
			for _, x := range [][]float64{g.DQ.Data, g.DK.Data, g.DV.Data} {
				requireNoNaN(t, "grad", x)
			}

			assert.Less(t, ref.RelErr(g.DQ.Data, numGrad(q.Data, loss)), 1e-6, "dQ")
			assert.Less(t, ref.RelErr(g.DK.Data, numGrad(k.Data, loss)), 1e-6, "dK")
			assert.Less(t, ref.RelErr(g.DV.Data, numGrad(v.Data, loss)), 1e-6, "dV")
			if delta == nil {
				assert.Nil(t, g.DDelta)
				return
			}
			// Differentiating through delta is only meaningful while the
			// selection stays put: check that it does at every probe.
			lossStable := func() float64 {
				keep, err := ref.Keep(delta, hb, s, opts)
				require.NoError(t, err)
				require.Equal(t, keep0, keep, "a perturbation of delta changed the selection")
				return loss()
			}
			assert.Less(t, ref.RelErr(g.DDelta, numGrad(delta, lossStable)), 1e-6, "dDelta")
		})
	}
}

func TestBackwardGQASumsOverGroup(t *testing.T) {
	// GQA gradients are those of the repeated-head problem summed per group.
	c := fdCases[0]
	q, k, v, delta, hb, opts := c.setup(300)
	gO := ref.RandTensor4(newRNG(301), c.b, c.lq, c.h, c.d, 1)
	o, lse, err := ref.Forward(q, k, v, delta, hb, opts)
	require.NoError(t, err)
	g, err := ref.Backward(q, k, v, delta, hb, opts, o, lse, gO)
	require.NoError(t, err)

	kr, vr, dr := repeatHeads(k, c.h), repeatHeads(v, c.h), repeatDelta(delta, c.b, c.hkv, c.h, c.lk)
	gr, err := ref.Backward(q, kr, vr, dr, c.h, opts, o, lse, gO)
	require.NoError(t, err)
	assert.Less(t, ref.MaxAbsDiff(g.DQ.Data, gr.DQ.Data), 1e-14)
	gg := c.h / c.hkv
	for b := 0; b < c.b; b++ {
		for j := 0; j < c.lk; j++ {
			for h := 0; h < c.h; h++ {
				for x := 0; x < c.d; x++ {
					g.DK.Set(b, j, h/gg, x, g.DK.At(b, j, h/gg, x)-gr.DK.At(b, j, h, x))
					g.DV.Set(b, j, h/gg, x, g.DV.At(b, j, h/gg, x)-gr.DV.At(b, j, h, x))
				}
				g.DDelta[(b*c.hkv+h/gg)*c.lk+j] -= gr.DDelta[(b*c.h+h)*c.lk+j]
			}
		}
	}
	zero := make([]float64, len(g.DK.Data))
	assert.Less(t, ref.MaxAbsDiff(g.DK.Data, zero), 1e-14)
	assert.Less(t, ref.MaxAbsDiff(g.DV.Data, zero), 1e-14)
	assert.Less(t, ref.MaxAbsDiff(g.DDelta, make([]float64, len(g.DDelta))), 1e-14)
}

func TestBackwardErrors(t *testing.T) {
	q, k, v, delta := handQKV()
	opts := ref.Options{Mode: ref.ModeNone}
	o, lse, err := ref.Forward(q, k, v, delta, 1, opts)
	require.NoError(t, err)
	_, err = ref.Backward(q, k, v, delta, 1, opts, o, lse[:2], o)
	assert.Error(t, err, "short lse")
	_, err = ref.Backward(q, k, v, delta, 1, opts, o, lse, ref.NewTensor4(1, 3, 1, 3))
	assert.Error(t, err, "dO shape")
	_, err = ref.Backward(q, k, v, delta, 1, opts, nil, lse, o)
	assert.Error(t, err, "nil o")
}

// TestEndToEndFiniteDifferences checks the whole composition
// V, A, Wdt, bdt -> delta -> attention -> loss = sum(O .* G): the gradients
// of A, Wdt and bdt, and the total dV (attention term plus weights term).
func TestEndToEndFiniteDifferences(t *testing.T) {
	const b, lq, lk, h, hkv, d = 2, 5, 6, 4, 2, 3
	seed := uint64(400)
	for _, form := range []ref.WeightForm{ref.FormExp, ref.FormLinear} {
		for _, hb := range []int{h, hkv} {
			for _, opts := range []ref.Options{
				{Mode: ref.ModeNone, Causal: true},
				{Mode: ref.ModeRow, Window: 3, Causal: true, Softcap: 2},
				{Mode: ref.ModeShared, Window: 4, Causal: true},
			} {
				seed++
				rng := newRNG(seed)
				q := ref.RandTensor4(rng, b, lq, h, d, 1.5)
				k := ref.RandTensor4(rng, b, lk, hkv, d, 1.5)
				v := ref.RandTensor4(rng, b, lk, hkv, d, 1)
				p := ref.WeightParams{
					Wdt: ref.RandSlice(rng, hkv*d*hb, 0.7), Bdt: ref.RandSlice(rng, hb, 0.5),
					A: ref.RandSlice(rng, hb, 1), Hb: hb, Form: form,
				}
				gO := ref.RandTensor4(rng, b, lq, h, d, 1)
				s := ref.ShapeOf(q, k)
				keep0, err := ref.Keep(ref.DynamicWeights64(v, p), hb, s, opts)
				require.NoError(t, err)

				loss := func() float64 {
					delta := ref.DynamicWeights64(v, p)
					keep, err := ref.Keep(delta, hb, s, opts)
					require.NoError(t, err)
					require.Equal(t, keep0, keep, "a perturbation changed the selection")
					o, _, err := ref.Forward(q, k, v, delta, hb, opts)
					require.NoError(t, err)
					return dotAll(o.Data, gO.Data)
				}

				delta := ref.DynamicWeights64(v, p)
				o, lse, err := ref.Forward(q, k, v, delta, hb, opts)
				require.NoError(t, err)
				g, err := ref.Backward(q, k, v, delta, hb, opts, o, lse, gO)
				require.NoError(t, err)
				dA, dWdt, dBdt, dVw := ref.WeightsBackward(v, p, g.DDelta)
				dV := make([]float64, len(v.Data))
				for i := range dV {
					dV[i] = g.DV.Data[i] + dVw.Data[i]
				}

				name := form.String() + " Hb=" + map[bool]string{true: "H", false: "Hkv"}[hb == h] + " " + opts.Mode.String()
				assert.Less(t, ref.RelErr(dA, numGrad(p.A, loss)), 1e-6, "%s dA", name)
				assert.Less(t, ref.RelErr(dWdt, numGrad(p.Wdt, loss)), 1e-6, "%s dWdt", name)
				assert.Less(t, ref.RelErr(dBdt, numGrad(p.Bdt, loss)), 1e-6, "%s dBdt", name)
				assert.Less(t, ref.RelErr(dV, numGrad(v.Data, loss)), 1e-6, "%s dV total", name)
				assert.Greater(t, ref.MaxAbsDiff(dVw.Data, make([]float64, len(dV))), 1e-3,
					"%s: the weights term of dV is not negligible, so the check means something", name)
			}
		}
	}
}

func TestBackwardEmptyRowsGiveZero(t *testing.T) {
	c := fdCases[5] // Lq > Lk, causal: rows 0 and 1 keep nothing
	q, k, v, delta, hb, opts := c.setup(500)
	o, lse, err := ref.Forward(q, k, v, delta, hb, opts)
	require.NoError(t, err)
	require.True(t, math.IsInf(lse[0], -1))
	gO := ref.RandTensor4(newRNG(501), c.b, c.lq, c.h, c.d, 1)
	g, err := ref.Backward(q, k, v, delta, hb, opts, o, lse, gO)
	require.NoError(t, err)
	for b := 0; b < c.b; b++ {
		for h := 0; h < c.h; h++ {
			for i := 0; i < c.lq-c.lk; i++ {
				assert.Equal(t, make([]float64, c.d), g.DQ.Row(b, i, h))
			}
		}
	}
}
