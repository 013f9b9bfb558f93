package check

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/ref"
)

// bwdInputs is what a case's forward leaves for its backward check.
type bwdInputs struct {
	q, k, v    *dma.Tensor
	res        *dma.Result
	opt        dma.Options
	ropt       ref.Options
	qr, kr, vr *ref.Tensor4
	delta      []float64 // the weights the forward used (nil: none)
	hb         int
	o, lse     []float32 // the forward's outputs, which the backward reads
	scoreErr   float64   // float32 rounding of the scores, as compare's
}

// checkBackward runs Backward after the case's forward, in both modes (atomic and
// deterministic), and compares every gradient with ref.Backward at the inputs the
// device holds, its O and LSE included, and with WeightParams the parameters'
// gradients (and dV's term through the weights) with ref.WeightsBackward of the
// device's dDelta. Out keeps the forward's verdict unless the backward fails; Rel and
// MaxAbs become the worst gradient's.
//
// Tolerance: the reference sees exactly what the device reads, so what is left is
// float32 arithmetic, whatever the storage dtype: 2e-5 of the largest entry of each
// gradient, plus the scores' rounding (which moves P relatively as in compare). The
// tensor-core backward (Grads.Path coopmat2 or coopmat) multiplies P and dS rounded to
// the storage type, as the forward's P V does: the dtype's tolerance then (fp16 2e-3,
// bf16 1e-2), plus the scores' rounding. Out.Path gets "+bwd-" and the backward's path.
func checkBackward(ctx context.Context, dev *dma.Device, c Case, out Outcome, in *bwdInputs, rng *rand.Rand) Outcome {
	fail := func(err error) Outcome { out.Err = fmt.Errorf("backward: %w", err); out.Pass = false; return out }
	qs := dma.Shape{B: c.B, L: c.Lq, H: c.H, D: c.D}
	dOd, dOr := randTensor(rng, c.DType, qs, 1)
	dO, err := dev.NewTensor(c.DType, qs, c.Layout)
	if err != nil {
		return fail(err)
	}
	defer dO.Close()
	if err := dO.Upload(ctx, dOd); err != nil {
		return fail(err)
	}
	ro := ref.NewTensor4(c.B, c.Lq, c.H, c.D)
	ro.Data = f64(in.o)
	want, err := ref.Backward(in.qr, in.kr, in.vr, in.delta, in.hb, in.ropt, ro, f64(in.lse), dOr)
	if err != nil {
		return fail(fmt.Errorf("reference: %w", err))
	}
	wp := in.opt.WeightParams
	tol := 2e-5 + 4*in.scoreErr
	// Near-zero references. dS = P (dP - Dsum) cancels when a row's probability sits on
	// one key (whose v is then o: a single kept key, or weights far apart), and float32
	// leaves dP - Dsum with an error of about sqrt(D) eps32 |dO| |v|, times scale |k|
	// (dQ, one per row: the P sum to 1) or scale |q| (dK) and 1 (dDelta), summed over
	// up to G Lq rows for a key. When a reference's largest entry is below 1e-3 of that
	// term size, the error is measured against that bound instead: the exact gradient
	// is then smaller than float32 can resolve.
	const eps32 = 1.0 / (1 << 24)
	sc := 1 / math.Sqrt(float64(c.D))
	dsTerm := maxRowNorm(dOr) * maxRowNorm(in.vr)
	rows := float64(c.Lq) * float64(c.H/c.Hkv)
	cancel := map[string][2]float64{ // term size, and the number of terms per entry
		"dQ": {dsTerm * sc * maxRowNorm(in.kr), 1}, "dK": {dsTerm * sc * maxRowNorm(in.qr), rows}, "dDelta": {dsTerm, rows}}
	out.Tol = tol
	out.Rel, out.MaxAbs = 0, 0
	path := ""
	for _, det := range []bool{false, true} {
		g, err := dev.Backward(ctx, in.q, in.k, in.v, in.res, dO, in.opt, dma.BackwardOptions{Deterministic: det})
		if err != nil {
			return fail(err)
		}
		path = g.Path
		if g.Path == "coopmat2" || g.Path == "coopmat" {
			tol = 2e-3 + 4*in.scoreErr
			if c.DType == dma.BFloat16 {
				tol = 1e-2 + 4*in.scoreErr
			}
			out.Tol = tol
		}
		cmp := func(name string, got []float32, want, scale []float64) error {
			if len(got) != len(want) {
				return fmt.Errorf("%s has %d values, want %d", name, len(got), len(want))
			}
			m, d := 0.0, 0.0
			for i, x := range got {
				// A NaN or an infinity exactly where the reference has one (spec
				// section 7); the finite values are compared.
				if !sameClass(float64(x), want[i]) {
					return fmt.Errorf("%s[%d] = %g (reference %g)", name, i, x, want[i])
				}
				if math.IsNaN(want[i]) || math.IsInf(want[i], 0) {
					continue
				}
				d = max(d, math.Abs(float64(x)-want[i]))
				m = max(m, math.Abs(want[i]))
			}
			m = max(m, maxFinite(scale))
			if t, ok := cancel[name]; ok && m < 1e-3*t[0] {
				m = 8 * eps32 * math.Sqrt(float64(c.D)) * t[0] * t[1] / tol
			}
			if rel := d / max(m, 1e-30); rel > out.Rel {
				out.Rel, out.MaxAbs = rel, d
			}
			return nil
		}
		err = func() error {
			defer g.Close()
			wantDV := want.DV.Data
			var wA, wW, wB, absA, absB []float64
			if wp != nil {
				// The weights' backward from this run's dDelta (checked against the
				// reference's on its own below): the stage is checked alone, and
				// dDelta's own rounding does not count twice.
				gotDD, err := g.DDelta.Download(ctx)
				if err != nil {
					return err
				}
				dd := f64(gotDD)
				rwp := ref.WeightParams{Wdt: f64(wp.Wdt), Bdt: f64(wp.Bdt), A: f64(wp.A), Hb: in.hb, Form: ref.WeightForm(wp.Form)}
				var term *ref.Tensor4
				wA, wW, wB, term = ref.WeightsBackward(in.vr, rwp, dd)
				wantDV = make([]float64, len(term.Data))
				for i := range wantDV {
					wantDV[i] = want.DV.Data[i] + term.Data[i]
				}
				// dA and dBdt sum terms of dDelta's sign (one A per head): measured
				// against the sum of their magnitudes.
				for i, x := range dd {
					dd[i] = math.Abs(x)
				}
				absA, _, absB, _ = ref.WeightsBackward(in.vr, rwp, dd)
			}
			for _, x := range []struct {
				name string
				t    *dma.Tensor
				want []float64
			}{{"dQ", g.DQ, want.DQ.Data}, {"dK", g.DK, want.DK.Data}, {"dV", g.DV, wantDV}} {
				got, err := x.t.Download(ctx)
				if err != nil {
					return err
				}
				if err := cmp(x.name, got, x.want, nil); err != nil {
					return err
				}
			}
			if in.delta != nil {
				got, err := g.DDelta.Download(ctx)
				if err != nil {
					return err
				}
				if err := cmp("dDelta", got, want.DDelta, nil); err != nil {
					return err
				}
			}
			if wp != nil {
				if err := cmp("dA", g.DA, wA, absA); err != nil {
					return err
				}
				if err := cmp("dWdt", g.DWdt, wW, nil); err != nil {
					return err
				}
				if err := cmp("dBdt", g.DBdt, wB, absB); err != nil {
					return err
				}
			}
			return nil
		}()
		if err != nil {
			return fail(err)
		}
	}
	out.Path += "+bwd-" + path
	out.Pass = out.Pass && out.Rel <= tol
	return out
}

// maxRowNorm is the largest Euclidean norm of a finite row (the last dimension) of t;
// rows holding a NaN or an infinity (NonFinite cases) are compared by class only.
func maxRowNorm(t *ref.Tensor4) float64 {
	m := 0.0
	for i := 0; i < len(t.Data); i += t.D {
		n := 0.0
		for _, x := range t.Data[i : i+t.D] {
			n += x * x
		}
		if !math.IsNaN(n) && !math.IsInf(n, 0) {
			m = max(m, n)
		}
	}
	return math.Sqrt(m)
}
