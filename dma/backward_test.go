package dma_test

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/ref"
	"github.com/stretchr/testify/require"
)

type bwdCase struct {
	dt                   dma.DType
	layout, doLayout     dma.Layout
	B, Lq, Lk, H, Hkv, D int
	mode                 dma.Mode
	causal               bool
	w                    int
	softcap              float32
	weights              string // "params", "given", "none"
	hbIsH                bool
	form                 dma.Form
	bdt, pad             bool
}

func (c bwdCase) name() string {
	return fmt.Sprintf("%v/%v/%v/B%d/Lq%d/Lk%d/H%d/Hkv%d/D%d/w%d/causal=%v/softcap=%v/%s/HbIsH=%v/%v/bdt=%v/pad=%v",
		c.mode, c.dt, c.layout, c.B, c.Lq, c.Lk, c.H, c.Hkv, c.D, c.w, c.causal, c.softcap, c.weights, c.hbIsH, c.form, c.bdt, c.pad)
}

func f64s(x []float32) []float64 { return ref.FromFloat32(x) }

// TestBackwardAgainstReference runs Backward end to end (after Forward, through the
// public API) in both modes and checks every gradient against ref.Backward and
// ref.WeightsBackward at the inputs the device holds.
func TestBackwardAgainstReference(t *testing.T) {
	d := open(t)
	cases := []bwdCase{
		{dt: dma.Float32, B: 2, Lq: 37, Lk: 37, H: 4, Hkv: 2, D: 32, mode: dma.ModeRow, causal: true, w: 8,
			weights: "params", hbIsH: true, form: dma.FormExp, bdt: true},
		{dt: dma.BFloat16, layout: dma.BHLD, doLayout: dma.BLHD, B: 1, Lq: 20, Lk: 45, H: 4, Hkv: 2, D: 16,
			mode: dma.ModeRow, causal: true, w: 6, weights: "params", form: dma.FormLinear},
		{dt: dma.Float16, B: 2, Lq: 30, Lk: 30, H: 2, Hkv: 1, D: 24, mode: dma.ModeShared, w: 10, weights: "given", pad: true},
		{dt: dma.Float32, layout: dma.BHLD, doLayout: dma.BHLD, B: 1, Lq: 33, Lk: 20, H: 2, Hkv: 2, D: 8, mode: dma.ModeNone, causal: true, weights: "none"},
		{dt: dma.Float32, B: 1, Lq: 50, Lk: 50, H: 3, Hkv: 1, D: 16, mode: dma.ModeRow, causal: true, w: 2, softcap: 2,
			weights: "given", hbIsH: true},
		{dt: dma.Float32, B: 1, Lq: 17, Lk: 17, H: 2, Hkv: 1, D: 8, mode: dma.ModeRow, causal: true, w: 100,
			weights: "params", form: dma.FormExp, bdt: true}, // w >= L: mode none
	}
	for _, c := range cases {
		t.Run(c.name(), func(t *testing.T) {
			for _, det := range []bool{false, true} {
				runBwdCase(t, d, c, det)
			}
		})
	}
}

func runBwdCase(t *testing.T, d *dma.Device, c bwdCase, det bool) {
	ctx := context.Background()
	rng := seed(t)
	qs := dma.Shape{B: c.B, L: c.Lq, H: c.H, D: c.D}
	ks := dma.Shape{B: c.B, L: c.Lk, H: c.Hkv, D: c.D}
	upload := func(s dma.Shape, l dma.Layout) (*dma.Tensor, *ref.Tensor4) {
		x, err := d.NewTensor(c.dt, s, l)
		require.NoError(t, err)
		t.Cleanup(func() { x.Close() })
		vals := make([]float32, s.Elems())
		for i := range vals {
			vals[i] = float32(2*rng.Float64() - 1)
		}
		require.NoError(t, x.Upload(ctx, vals))
		back, err := x.Download(ctx) // the rounded values the device holds
		require.NoError(t, err)
		r := ref.NewTensor4(s.B, s.L, s.H, s.D)
		r.Data = f64s(back)
		return x, r
	}
	q, rq := upload(qs, c.layout)
	k, rk := upload(ks, c.layout)
	v, rv := upload(ks, c.layout)
	dO, rdO := upload(qs, c.doLayout)

	hb := c.Hkv
	if c.hbIsH {
		hb = c.H
	}
	opt := dma.Options{Mode: c.mode, Window: c.w, Causal: c.causal, Softcap: c.softcap}
	var wp *dma.WeightParams
	switch c.weights {
	case "params":
		wp = &dma.WeightParams{Hb: hb, Form: c.form, Wdt: make([]float32, c.Hkv*c.D*hb), A: make([]float32, hb)}
		for i := range wp.Wdt {
			wp.Wdt[i] = float32(0.3 * (2*rng.Float64() - 1))
		}
		for i := range wp.A {
			wp.A[i] = float32(2*rng.Float64() - 1)
		}
		if c.bdt {
			wp.Bdt = []float32{0.5, -0.25, 1, 0}[:hb]
		}
		opt.WeightParams = wp
	case "given":
		w, err := d.NewWeights(c.B, hb, c.Lk)
		require.NoError(t, err)
		t.Cleanup(func() { w.Close() })
		vals := make([]float32, c.B*hb*c.Lk)
		for i := range vals {
			vals[i] = float32(2*rng.Float64() - 1)
		}
		require.NoError(t, w.Upload(ctx, vals))
		opt.Weights = w
	}
	var padding [][]bool
	if c.pad {
		flat := make([]bool, c.B*c.Lk)
		padding = make([][]bool, c.B)
		for b := range c.B {
			padding[b] = flat[b*c.Lk : (b+1)*c.Lk]
			for j := range padding[b] {
				padding[b][j] = rng.IntN(4) != 0
			}
		}
		kp, err := d.NewKeyPadding(ctx, c.B, c.Lk, flat)
		require.NoError(t, err)
		t.Cleanup(func() { kp.Close() })
		opt.KeyPadding = kp
	}

	res, err := d.Forward(ctx, q, k, v, opt)
	require.NoError(t, err)
	defer res.Close()
	g, err := d.Backward(ctx, q, k, v, res, dO, opt, dma.BackwardOptions{Deterministic: det})
	require.NoError(t, err)
	defer g.Close()

	// The reference at the device's inputs and forward outputs.
	oF, err := res.O.Download(ctx)
	require.NoError(t, err)
	ro := ref.NewTensor4(c.B, c.Lq, c.H, c.D)
	ro.Data = f64s(oF)
	lseF, err := res.LSE.Download(ctx)
	require.NoError(t, err)
	var delta []float64
	switch {
	case res.Weights != nil:
		w, err := res.Weights.Download(ctx)
		require.NoError(t, err)
		delta = f64s(w)
	case opt.Weights != nil:
		w, err := opt.Weights.Download(ctx)
		require.NoError(t, err)
		delta = f64s(w)
	}
	rmode := ref.Mode(c.mode)
	ropt := ref.Options{Window: c.w, Mode: rmode, Causal: c.causal, Scale: float64(float32(1 / math.Sqrt(float64(c.D)))),
		Softcap: float64(c.softcap), KeyPadding: padding}
	want, err := ref.Backward(rq, rk, rv, delta, hb, ropt, ro, f64s(lseF), rdO)
	require.NoError(t, err)
	wantDV := want.DV.Data
	var wA, wW, wB, absA, absB []float64
	if wp != nil {
		rwp := ref.WeightParams{Wdt: f64s(wp.Wdt), A: f64s(wp.A), Hb: hb, Form: ref.WeightForm(wp.Form)}
		if wp.Bdt != nil {
			rwp.Bdt = f64s(wp.Bdt)
		}
		var dvTerm *ref.Tensor4
		wA, wW, wB, dvTerm = ref.WeightsBackward(rv, rwp, want.DDelta)
		// dA and dBdt are sums over all keys of terms whose sign is dDelta's (delta,
		// softplus and sigmoid are positive; A is one number per head): with |dDelta|
		// the sums are those of the terms' magnitudes, the scale of float32's error
		// when the terms cancel.
		absDD := make([]float64, len(want.DDelta))
		for i, x := range want.DDelta {
			absDD[i] = math.Abs(x)
		}
		absA, _, absB, _ = ref.WeightsBackward(rv, rwp, absDD)
		wantDV = make([]float64, len(want.DV.Data))
		for i := range wantDV {
			wantDV[i] = want.DV.Data[i] + dvTerm.Data[i]
		}
	}

	// Float32 arithmetic against float64 at identical inputs (see internal/kern's
	// bwdTol): 2e-5 of the largest entry, whatever the storage dtype.
	const tol = 2e-5
	cmp := func(name string, got []float32, want []float64, scale ...[]float64) {
		t.Helper()
		require.Len(t, got, len(want), name)
		rel := ref.RelErr(f64s(got), want)
		for _, s := range scale {
			m := 0.0
			for _, x := range append(s, want...) {
				m = max(m, math.Abs(x))
			}
			rel = ref.MaxAbsDiff(f64s(got), want) / m
		}
		require.LessOrEqualf(t, rel, tol, "%s (deterministic=%v): relative error", name, det)
		t.Logf("%s rel err %.2e", name, rel)
	}
	for _, x := range []struct {
		name string
		t    *dma.Tensor
		want []float64
	}{{"dQ", g.DQ, want.DQ.Data}, {"dK", g.DK, want.DK.Data}, {"dV", g.DV, wantDV}} {
		require.Equal(t, dma.Float32, x.t.DType())
		got, err := x.t.Download(ctx)
		require.NoError(t, err)
		cmp(x.name, got, x.want)
	}
	if delta == nil {
		require.Nil(t, g.DDelta, "no weights: no dDelta")
	} else {
		got, err := g.DDelta.Download(ctx)
		require.NoError(t, err)
		cmp("dDelta", got, want.DDelta)
	}
	if wp != nil {
		cmp("dA", g.DA, wA, absA)
		cmp("dWdt", g.DWdt, wW)
		if wp.Bdt != nil {
			cmp("dBdt", g.DBdt, wB, absB)
		} else {
			require.Nil(t, g.DBdt)
		}
	} else {
		require.Nil(t, g.DA)
	}
}

// TestBackwardDeterministic: with Deterministic, two calls give the same bits.
func TestBackwardDeterministic(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	qs := dma.Shape{B: 1, L: 150, H: 8, D: 32}
	ks := dma.Shape{B: 1, L: 150, H: 2, D: 32}
	q := tensor(t, d, dma.BFloat16, qs, nil)
	k := tensor(t, d, dma.BFloat16, ks, nil)
	v := tensor(t, d, dma.BFloat16, ks, nil)
	dO := tensor(t, d, dma.BFloat16, qs, nil)
	wp := &dma.WeightParams{Hb: 2, Wdt: make([]float32, 2*32*2), A: []float32{0.5, -0.5}}
	for i := range wp.Wdt {
		wp.Wdt[i] = float32(math.Cos(float64(i))) / 8
	}
	opt := dma.Options{Mode: dma.ModeRow, Window: 40, Causal: true, WeightParams: wp}
	res, err := d.Forward(ctx, q, k, v, opt)
	require.NoError(t, err)
	defer res.Close()
	var first [][]float32
	for run := range 2 {
		g, err := d.Backward(ctx, q, k, v, res, dO, opt, dma.BackwardOptions{Deterministic: true})
		require.NoError(t, err)
		var got [][]float32
		for _, x := range []*dma.Tensor{g.DQ, g.DK, g.DV} {
			vals, err := x.Download(ctx)
			require.NoError(t, err)
			got = append(got, vals)
		}
		dd, err := g.DDelta.Download(ctx)
		require.NoError(t, err)
		got = append(got, dd, g.DA, g.DWdt)
		g.Close()
		if run == 0 {
			first = got
			continue
		}
		for i := range got {
			for j := range got[i] {
				if math.Float32bits(got[i][j]) != math.Float32bits(first[i][j]) {
					t.Fatalf("output %d (dQ, dK, dV, dDelta, dA, dWdt) element %d: %v then %v", i, j, first[i][j], got[i][j])
				}
			}
		}
	}
}

func TestBackwardBadInput(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	qs := dma.Shape{B: 1, L: 8, H: 2, D: 16}
	q := tensor(t, d, dma.Float32, qs, nil)
	k := tensor(t, d, dma.Float32, qs, nil)
	v := tensor(t, d, dma.Float32, qs, nil)
	opt := dma.Options{Mode: dma.ModeNone, Causal: true}
	res, err := d.Forward(ctx, q, k, v, opt)
	require.NoError(t, err)
	defer res.Close()
	dO := tensor(t, d, dma.Float32, qs, nil)
	dO16 := tensor(t, d, dma.Float16, qs, nil)
	dOshort := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 7, H: 2, D: 16}, nil)
	wp := &dma.WeightParams{Hb: 2, Wdt: make([]float32, 2*16*2), A: make([]float32, 2)}
	for _, c := range []struct {
		name     string
		res      *dma.Result
		dO       *dma.Tensor
		opt      dma.Options
		contains string
	}{
		{"nil res", nil, dO, opt, "Result of Forward"},
		{"nil dO", res, nil, opt, "dO"},
		{"dO dtype", res, dO16, opt, "dO is float16"},
		{"dO shape", res, dOshort, opt, "dO is"},
		{"params without res.Weights", res, dO, dma.Options{Mode: dma.ModeNone, WeightParams: wp}, "res.Weights"},
		{"bad options", res, dO, dma.Options{Mode: 7}, "dma: Backward: unknown mode"},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, err := d.Backward(ctx, q, k, v, c.res, c.dO, c.opt, dma.BackwardOptions{})
			require.Nil(t, g)
			require.ErrorContains(t, err, c.contains)
		})
	}
}

// BenchmarkBackward times Backward (both modes) after one Forward: mode row, causal,
// fp16, L = 2048, w = 256, H = 8, Hkv = 2, D = 64 (the plan is rebuilt in every call).
func BenchmarkBackward(b *testing.B) {
	d := open(b)
	ctx := context.Background()
	qs := dma.Shape{B: 1, L: 2048, H: 8, D: 64}
	ks := dma.Shape{B: 1, L: 2048, H: 2, D: 64}
	q, k, v, dO := tensor(b, d, dma.Float16, qs, nil), tensor(b, d, dma.Float16, ks, nil), tensor(b, d, dma.Float16, ks, nil), tensor(b, d, dma.Float16, qs, nil)
	w, err := d.NewWeights(1, 2, ks.L)
	require.NoError(b, err)
	defer w.Close()
	vals := make([]float32, 2*ks.L)
	for i := range vals {
		vals[i] = float32(math.Sin(float64(i) * 1.7))
	}
	require.NoError(b, w.Upload(ctx, vals))
	opt := dma.Options{Mode: dma.ModeRow, Window: 256, Causal: true, Weights: w}
	res, err := d.Forward(ctx, q, k, v, opt)
	require.NoError(b, err)
	defer res.Close()
	for _, det := range []bool{false, true} {
		b.Run(fmt.Sprintf("deterministic=%v", det), func(b *testing.B) {
			for b.Loop() {
				g, err := d.Backward(ctx, q, k, v, res, dO, opt, dma.BackwardOptions{Deterministic: det})
				require.NoError(b, err)
				g.Close()
			}
		})
	}
}

// TestBackwardSavedPlan: Backward over a Result that kept its plan (Options.SavePlan)
// gives the bits of Backward that builds the plan again (deterministic mode), on every
// path the device has for the cases (coopmat2 for 16-bit where available, portable for
// float32), in modes row, shared and none; a Result of other options is refused; and
// Device.Close frees a plan whose Result is left open.
func TestBackwardSavedPlan(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	for _, c := range []struct {
		dt     dma.DType
		mode   dma.Mode
		w      int
		causal bool
	}{
		{dma.Float16, dma.ModeRow, 24, true},
		{dma.Float16, dma.ModeShared, 24, true},
		{dma.Float16, dma.ModeNone, 0, true},
		{dma.BFloat16, dma.ModeRow, 30, true},
		{dma.Float32, dma.ModeRow, 24, true},
	} {
		t.Run(fmt.Sprintf("%v/%v", c.dt, c.mode), func(t *testing.T) {
			qs := dma.Shape{B: 2, L: 150, H: 4, D: 32}
			ks := dma.Shape{B: 2, L: 150, H: 2, D: 32}
			q := tensor(t, d, c.dt, qs, nil)
			k := tensor(t, d, c.dt, ks, nil)
			v := tensor(t, d, c.dt, ks, nil)
			dO := tensor(t, d, c.dt, qs, nil)
			w, err := d.NewWeights(2, 2, 150)
			require.NoError(t, err)
			t.Cleanup(func() { w.Close() })
			vals := make([]float32, 2*2*150)
			for i := range vals {
				vals[i] = float32(math.Sin(float64(7 * i)))
			}
			require.NoError(t, w.Upload(ctx, vals))
			opt := dma.Options{Mode: c.mode, Window: c.w, Causal: c.causal, Weights: w}
			grads := func(res *dma.Result) ([][]float32, string) {
				g, err := d.Backward(ctx, q, k, v, res, dO, opt, dma.BackwardOptions{Deterministic: true})
				require.NoError(t, err)
				defer g.Close()
				var got [][]float32
				for _, x := range []*dma.Tensor{g.DQ, g.DK, g.DV} {
					vals, err := x.Download(ctx)
					require.NoError(t, err)
					got = append(got, vals)
				}
				dd, err := g.DDelta.Download(ctx)
				require.NoError(t, err)
				return append(got, dd), g.Path
			}
			res, err := d.Forward(ctx, q, k, v, opt)
			require.NoError(t, err)
			defer res.Close()
			want, path := grads(res)
			saveOpt := opt
			saveOpt.SavePlan = true
			kept, err := d.Forward(ctx, q, k, v, saveOpt)
			require.NoError(t, err)
			defer kept.Close()
			got, keptPath := grads(kept)
			require.Equal(t, path, keptPath)
			t.Logf("backward path %s", path)
			for i := range got {
				for j := range got[i] {
					if math.Float32bits(got[i][j]) != math.Float32bits(want[i][j]) {
						t.Fatalf("output %d (dQ, dK, dV, dDelta) element %d: %v with the saved plan, %v without", i, j, got[i][j], want[i][j])
					}
				}
			}
			// The saved plan's Backward builds no plan and packs nothing.
			for _, x := range []struct {
				res  *dma.Result
				want bool
			}{{res, true}, {kept, false}} {
				g, prof, err := d.BackwardProfiled(ctx, q, k, v, x.res, dO, opt, dma.BackwardOptions{})
				require.NoError(t, err)
				g.Close()
				if len(prof.Passes) == 0 {
					break // no timestamps on this device
				}
				t.Logf("saved plan %v: passes %v", !x.want, prof.Passes)
				names := map[string]bool{}
				for _, p := range prof.Passes {
					names[p.Name] = true
				}
				require.Equalf(t, x.want, names["ord"], "passes %v (saved plan: %v)", prof.Passes, !x.want)
				if path == "coopmat2" && c.mode != dma.ModeNone {
					require.Equalf(t, x.want, names["bwd-pack"], "passes %v (saved plan: %v)", prof.Passes, !x.want)
				}
			}
			other := opt
			other.Window = 7
			if c.mode == dma.ModeNone {
				other.Causal = false
			}
			_, err = d.Backward(ctx, q, k, v, kept, dO, other, dma.BackwardOptions{})
			require.ErrorContains(t, err, "SavePlan")
		})
	}
	// A device closed with a saved plan's Result still open frees it.
	d2 := open(t)
	s := dma.Shape{B: 1, L: 70, H: 2, D: 32}
	q := tensor(t, d2, dma.Float16, s, nil)
	w, err := d2.NewWeights(1, 2, 70)
	require.NoError(t, err)
	require.NoError(t, w.Upload(ctx, make([]float32, 140)))
	res, err := d2.Forward(ctx, q, q, q, dma.Options{Mode: dma.ModeRow, Window: 9, Causal: true, Weights: w, SavePlan: true})
	require.NoError(t, err)
	require.NoError(t, d2.Close())
	require.NoError(t, res.Close())
}

// TestBackwardSavedPlanConcurrent: Backward calls running at once over one Result with a
// saved plan read it (and its packed keys) without writing it: the same bits each; a
// Close of the Result meanwhile frees the plan only when they end.
func TestBackwardSavedPlanConcurrent(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	qs := dma.Shape{B: 1, L: 120, H: 4, D: 32}
	ks := dma.Shape{B: 1, L: 120, H: 2, D: 32}
	q := tensor(t, d, dma.Float16, qs, nil)
	k := tensor(t, d, dma.Float16, ks, nil)
	v := tensor(t, d, dma.Float16, ks, nil)
	dO := tensor(t, d, dma.Float16, qs, nil)
	w, err := d.NewWeights(1, 2, 120)
	require.NoError(t, err)
	t.Cleanup(func() { w.Close() })
	vals := make([]float32, 240)
	for i := range vals {
		vals[i] = float32(math.Cos(float64(5 * i)))
	}
	require.NoError(t, w.Upload(ctx, vals))
	opt := dma.Options{Mode: dma.ModeRow, Window: 20, Causal: true, Weights: w, SavePlan: true}
	res, err := d.Forward(ctx, q, k, v, opt)
	require.NoError(t, err)
	const n = 4
	out := make([][]float32, n)
	errs := make([]error, n)
	done := make(chan int)
	for i := range n {
		go func() {
			defer func() { done <- i }()
			g, err := d.Backward(ctx, q, k, v, res, dO, opt, dma.BackwardOptions{Deterministic: true})
			if err != nil {
				errs[i] = err
				return
			}
			defer g.Close()
			out[i], errs[i] = g.DK.Download(ctx)
		}()
	}
	<-done
	res.Close() // the calls still running keep the plan
	for range n - 1 {
		<-done
	}
	var first []float32
	for i := range n {
		if errs[i] != nil {
			require.ErrorIs(t, errs[i], dma.ErrClosed) // started after the Close
			continue
		}
		if first == nil {
			first = out[i]
		}
		for j := range out[i] {
			if math.Float32bits(out[i][j]) != math.Float32bits(first[j]) {
				t.Fatalf("call %d: dK[%d] = %v, the first call's: %v", i, j, out[i][j], first[j])
			}
		}
	}
	require.NotNil(t, first, "every call failed")
	_, err = d.Backward(ctx, q, k, v, res, dO, opt, dma.BackwardOptions{})
	require.ErrorIs(t, err, dma.ErrClosed)
}
