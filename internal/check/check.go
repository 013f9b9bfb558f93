// Package check runs dma's paths against the float64 reference (package ref) on fresh
// random inputs and reports the errors. The dma tests and `dmavk selftest` share it.
package check

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/internal/bf16"
	"github.com/dmavk/dmavk/internal/f16"
	"github.com/dmavk/dmavk/ref"
)

// Weights says where a case's weights come from.
type Weights int

const (
	WeightsRandom Weights = iota // given: random normal
	WeightsEqual                 // given: all 1 (DMA is then sliding-window attention)
	WeightsLarge                 // given: random, magnitudes up to ~300, both signs
	WeightsParams                // computed on the GPU from V (WeightParams)
	WeightsNone                  // none at all (modes none and explicit)
)

func (w Weights) String() string {
	return [...]string{"random", "equal", "large", "params", "none"}[w]
}

// Case is one forward problem.
type Case struct {
	DType        dma.DType
	Layout       dma.Layout
	B, Lq, Lk, H int
	Hkv, D       int
	Mode         dma.Mode
	Causal       bool
	Window       int
	HbIsH        bool // bias heads = query heads (else kv heads)
	Softcap      float32
	Weights      Weights
	Padding      bool    // random key padding, one batch fully padded when B > 1
	Mask, Bias   bool    // explicit mode
	InputScale   float64 // magnitude of q, k, v (0 means 1)
	Form         dma.Form
	// KVCache runs the case through a dma.KVCache instead of Forward: every key of
	// each batch (a sequence) appended, then the Lq <= 4 query rows attended (BLHD,
	// modes row or none, weights given, no padding, masks or biases).
	KVCache bool
	// Backward also checks Device.Backward after the forward (both modes, every
	// gradient; not with KVCache).
	Backward bool
	// NonFinite puts NaN, +inf and -inf into q, k, v and the given weights (spec
	// section 7), at places some row keeps and never in the last batch (B > 1), and
	// asks for the reference's NaNs and infinities exactly: NaN O and LSE in the rows
	// that keep a non-finite key or read a non-finite query, nothing elsewhere.
	NonFinite bool
}

// Name is a short description for tables.
func (c Case) Name() string {
	s := fmt.Sprintf("%s %s %s", c.Mode, c.DType, c.Layout)
	if c.KVCache {
		s = "kvcache " + s
	}
	if c.Causal {
		s += " causal"
	}
	s += fmt.Sprintf(" B%d Lq%d Lk%d H%d/%d D%d", c.B, c.Lq, c.Lk, c.H, c.Hkv, c.D)
	if c.Mode == dma.ModeRow || c.Mode == dma.ModeShared {
		s += fmt.Sprintf(" w%d", c.Window)
	}
	s += " wt:" + c.Weights.String()
	if c.Weights == WeightsParams {
		s += "/" + c.Form.String()
	}
	if c.HbIsH {
		s += " Hb=H"
	}
	if c.Softcap > 0 {
		s += fmt.Sprintf(" cap%g", c.Softcap)
	}
	if c.Padding {
		s += " pad"
	}
	if c.Mask {
		s += " mask"
	}
	if c.Bias {
		s += " bias"
	}
	if c.InputScale > 1 {
		s += fmt.Sprintf(" x%g", c.InputScale)
	}
	if c.NonFinite {
		s += " nonfinite"
	}
	if c.Backward {
		s += " +backward"
	}
	return s
}

// Outcome is the comparison of one case with the reference.
type Outcome struct {
	Case     Case
	MaxAbs   float64 // max |O - ref|
	Rel      float64 // MaxAbs / max |ref|
	LSEAbs   float64 // max |LSE - ref| over finite entries
	Tol      float64 // the relative tolerance applied
	Path     string  // the attention kernel that ran
	Pass     bool
	Err      error
	Duration time.Duration
}

func (o Outcome) Verdict() string {
	switch {
	case o.Err != nil:
		return "ERROR"
	case o.Pass:
		return "ok"
	}
	return "FAIL"
}

// round applies the storage dtype's rounding so the reference sees the GPU's inputs.
func round(dt dma.DType, x float32) float32 {
	switch dt {
	case dma.Float16:
		return f16.ToFloat32(f16.FromFloat32(x))
	case dma.BFloat16:
		return bf16.Round(x)
	}
	return x
}

func randTensor(rng *rand.Rand, dt dma.DType, s dma.Shape, scale float64) ([]float32, *ref.Tensor4) {
	data := make([]float32, s.Elems())
	t := ref.NewTensor4(s.B, s.L, s.H, s.D)
	for i := range data {
		data[i] = round(dt, float32(rng.NormFloat64()*scale))
		t.Data[i] = float64(data[i])
	}
	return data, t
}

// Run runs c on dev with inputs drawn from rng and compares with package ref.
func Run(ctx context.Context, dev *dma.Device, c Case, rng *rand.Rand) (out Outcome) {
	out.Case = c
	start := time.Now()
	defer func() { out.Duration = time.Since(start) }()
	fail := func(err error) Outcome { out.Err = err; return out }
	scale := c.InputScale
	if scale == 0 {
		scale = 1
	}
	qs := dma.Shape{B: c.B, L: c.Lq, H: c.H, D: c.D}
	ks := dma.Shape{B: c.B, L: c.Lk, H: c.Hkv, D: c.D}
	qd, qr := randTensor(rng, c.DType, qs, scale)
	kd, kr := randTensor(rng, c.DType, ks, scale)
	vd, vr := randTensor(rng, c.DType, ks, 1)
	var tensors []*dma.Tensor
	defer func() {
		for _, t := range tensors {
			t.Close()
		}
	}()
	up := func(s dma.Shape, data []float32) (*dma.Tensor, error) {
		t, err := dev.NewTensor(c.DType, s, c.Layout)
		if err != nil {
			return nil, err
		}
		tensors = append(tensors, t)
		return t, t.Upload(ctx, data)
	}
	q, err := up(qs, qd)
	if err != nil {
		return fail(err)
	}
	k, err := up(ks, kd)
	if err != nil {
		return fail(err)
	}
	v, err := up(ks, vd)
	if err != nil {
		return fail(err)
	}

	hb := c.Hkv
	if c.HbIsH {
		hb = c.H
	}
	opt := dma.Options{Mode: c.Mode, Window: c.Window, Causal: c.Causal, Softcap: c.Softcap}
	ropt := ref.Options{Mode: ref.Mode(c.Mode), Window: c.Window, Causal: c.Causal, Softcap: float64(c.Softcap)}
	var delta []float64 // what the reference adds, exactly the GPU's float32 weights
	var wp *dma.WeightParams
	switch c.Weights {
	case WeightsRandom, WeightsEqual, WeightsLarge:
		w := make([]float32, c.B*hb*c.Lk)
		for i := range w {
			switch c.Weights {
			case WeightsRandom:
				w[i] = float32(rng.NormFloat64())
			case WeightsEqual:
				w[i] = 1
			case WeightsLarge:
				w[i] = float32(rng.NormFloat64() * 100)
			}
		}
		wt, err := dev.NewWeights(c.B, hb, c.Lk)
		if err != nil {
			return fail(err)
		}
		defer wt.Close()
		if err := wt.Upload(ctx, w); err != nil {
			return fail(err)
		}
		opt.Weights = wt
		delta = make([]float64, len(w))
		for i, x := range w {
			delta[i] = float64(x)
		}
	case WeightsParams:
		n := c.Hkv * c.D
		wp = &dma.WeightParams{Hb: hb, Form: c.Form, Wdt: make([]float32, n*hb), Bdt: make([]float32, hb), A: make([]float32, hb)}
		for i := range wp.Wdt {
			wp.Wdt[i] = float32(rng.NormFloat64() / math.Sqrt(float64(n)))
		}
		for i := range hb {
			wp.Bdt[i] = float32(rng.NormFloat64())
			wp.A[i] = float32(rng.NormFloat64())
		}
		opt.WeightParams = wp
	}

	var refPad [][]bool
	if c.Padding {
		valid := make([]bool, c.B*c.Lk)
		refPad = make([][]bool, c.B)
		for b := range c.B {
			refPad[b] = make([]bool, c.Lk)
			for j := range c.Lk {
				ok := rng.Float64() > 0.2 && !(b == 1 && c.B > 1) // batch 1: no key at all
				valid[b*c.Lk+j], refPad[b][j] = ok, ok
			}
		}
		kp, err := dev.NewKeyPadding(ctx, c.B, c.Lk, valid)
		if err != nil {
			return fail(err)
		}
		defer kp.Close()
		opt.KeyPadding = kp
		ropt.KeyPadding = refPad
	}
	if c.Mask {
		// Broadcast over batch and rows, one mask per kv head: exercises HDiv and zero strides.
		ms := dma.MaskShape{B: 1, H: c.Hkv, Lq: 1, Lk: c.Lk}
		rm := ref.NewBroadcast4Bool(1, c.Hkv, 1, c.Lk)
		keep := make([]bool, len(rm.Data))
		for i := range keep {
			keep[i] = rng.Float64() < 0.5
			rm.Data[i] = keep[i]
		}
		m, err := dev.NewMask(ctx, ms, keep)
		if err != nil {
			return fail(err)
		}
		defer m.Close()
		opt.Mask, ropt.Mask = m, rm
	}
	if c.Bias {
		bs := dma.MaskShape{B: c.B, H: 1, Lq: c.Lq, Lk: c.Lk}
		rb := ref.NewBroadcast4(c.B, 1, c.Lq, c.Lk)
		vals := make([]float32, len(rb.Data))
		for i := range vals {
			vals[i] = float32(rng.NormFloat64())
			rb.Data[i] = float64(vals[i])
		}
		bb, err := dev.NewBias(ctx, bs, vals)
		if err != nil {
			return fail(err)
		}
		defer bb.Close()
		opt.Bias, ropt.Bias = bb, rb
	}

	if c.NonFinite {
		if c.B < 2 {
			return fail(fmt.Errorf("check: a non-finite case needs B >= 2 (the last batch stays finite)"))
		}
		if err := injectNonFinite(ctx, c, rng, hb, ropt, qr, kr, vr, delta, q, k, v, opt.Weights); err != nil {
			return fail(err)
		}
		qd, kd, vd = f32s(qr.Data), f32s(kr.Data), f32s(vr.Data)
	}

	var o, lse []float32
	var res *dma.Result
	if c.KVCache {
		if o, lse, err = runKVCache(ctx, dev, c, hb, qd, kd, vd, opt); err != nil {
			return fail(err)
		}
		out.Path = "decode"
	} else {
		if res, err = dev.Forward(ctx, q, k, v, opt); err != nil {
			return fail(err)
		}
		defer res.Close()
		out.Path = res.Path
		if o, err = res.O.Download(ctx); err != nil {
			return fail(err)
		}
		if lse, err = res.LSE.Download(ctx); err != nil {
			return fail(err)
		}
	}
	if wp != nil {
		// The GPU's weights drive both sides; check them against ref on their own.
		got, err := res.Weights.Download(ctx)
		if err != nil {
			return fail(err)
		}
		want := ref.DynamicWeights64(vr, ref.WeightParams{Wdt: f64(wp.Wdt), Bdt: f64(wp.Bdt), A: f64(wp.A), Hb: hb, Form: ref.WeightForm(wp.Form)})
		for i := range got {
			g := float64(got[i])
			if g == want[i] || math.IsNaN(g) && math.IsNaN(want[i]) {
				continue // infinities and NaNs (non-finite V) included
			}
			if d := math.Abs(g - want[i]); !(d <= 1e-5*math.Abs(want[i])+1e-6) {
				return fail(fmt.Errorf("weight %d = %g, reference %g", i, got[i], want[i]))
			}
		}
		delta = f64(got)
	}
	ro, rlse, err := ref.Forward(qr, kr, vr, delta, hb, ropt)
	if err != nil {
		return fail(fmt.Errorf("reference: %w", err))
	}
	out = compare(out, c, o, lse, ro.Data, rlse, delta, scoreBound(qr, kr, c))
	if c.Backward && out.Err == nil && res != nil {
		maxDelta := maxFinite(delta)
		const eps32 = 1.0 / (1 << 24)
		out = checkBackward(ctx, dev, c, out, &bwdInputs{q: q, k: k, v: v, res: res, opt: opt, ropt: ropt,
			qr: qr, kr: kr, vr: vr, delta: delta, hb: hb, o: o, lse: lse,
			scoreErr: 4 * eps32 * (maxDelta + scoreBound(qr, kr, c))}, rng)
	}
	return out
}

// scoreBound bounds |scale * q.k| over all rows and keys (Cauchy-Schwarz), the size
// of the scores whose float32 rounding the tolerance must cover.
func scoreBound(q, k *ref.Tensor4, c Case) float64 {
	return maxRowNorm(q) * maxRowNorm(k) / math.Sqrt(float64(c.D))
}

func f64(x []float32) []float64 {
	if x == nil {
		return nil
	}
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// compare applies the dtype's tolerance. Float32 scores carry a rounding error of a few
// eps32 times their magnitude (|weight| + |scale q.k|, bounded by sBound), which exp
// turns into a relative error of the probabilities P, and so of O; 1e-5 covers the
// accumulation besides. fp16: O is stored in half precision (relative rounding 2^-11,
// 2^-10 if a device rounded toward zero), so 2e-3 of the largest output (4 * 2^-11),
// plus the same score term. bf16: O is stored in bfloat16, 8 significant bits (7
// stored and the implicit one), rounded to nearest by the kernel: relative rounding
// 2^-8 ~ 3.9e-3, so at most 3.9e-3 of the largest output; 1e-2 leaves the margin
// fp16's bound has over round-toward-zero, plus the same score term. The inputs'
// rounding costs nothing: the reference sees the rounded values.
func compare(out Outcome, c Case, o, lse []float32, ro, rlse, delta []float64, sBound float64) Outcome {
	maxRef, maxDelta := 0.0, 0.0
	for _, x := range ro {
		if !math.IsInf(x, 0) && !math.IsNaN(x) {
			maxRef = max(maxRef, math.Abs(x))
		}
	}
	maxDelta = maxFinite(delta)
	const eps32 = 1.0 / (1 << 24)
	scoreErr := 4 * eps32 * (maxDelta + sBound)
	tol := 1e-5 + scoreErr
	switch c.DType {
	case dma.Float16:
		tol = 2e-3 + scoreErr
	case dma.BFloat16:
		tol = 1e-2 + scoreErr
	}
	out.Tol = tol
	// Non-finite values (spec section 7): a NaN or an infinity exactly where the
	// reference has it; the finite values are compared.
	for i, x := range o {
		if x := float64(x); !sameClass(x, ro[i]) {
			out.Err = fmt.Errorf("O[%d] = %g (reference %g)", i, x, ro[i])
			return out
		}
		if !math.IsNaN(ro[i]) && !math.IsInf(ro[i], 0) {
			out.MaxAbs = max(out.MaxAbs, math.Abs(float64(x)-ro[i]))
		}
	}
	if c.NonFinite {
		nanRows, finiteRows := 0, 0
		for _, r := range rlse {
			switch {
			case math.IsNaN(r):
				nanRows++
			case !math.IsInf(r, -1):
				finiteRows++
			}
		}
		if nanRows == 0 || finiteRows == 0 {
			out.Err = fmt.Errorf("%d rows with NaN, %d finite rows: the case tests nothing", nanRows, finiteRows)
			return out
		}
	}
	out.Rel = out.MaxAbs / max(maxRef, 1e-30)
	if maxRef == 0 {
		out.Rel = out.MaxAbs
	}
	lsePass := true
	for i, x := range lse {
		r := rlse[i]
		switch {
		case math.IsInf(r, -1) || math.IsNaN(r):
			if !sameClass(float64(x), r) {
				lsePass = false
				out.LSEAbs = math.Inf(1)
			}
		case math.IsNaN(float64(x)) || math.IsInf(float64(x), 0):
			lsePass = false
			out.LSEAbs = math.Inf(1)
		default:
			d := math.Abs(float64(x) - r)
			out.LSEAbs = max(out.LSEAbs, d)
			if d > 1e-5*(1+math.Abs(r))+scoreErr {
				lsePass = false
			}
		}
	}
	out.Pass = out.Rel <= tol && lsePass
	return out
}

// runKVCache appends each batch's keys to a KVCache (one sequence per batch) and
// attends its query rows, returning O [B, Lq, H, D] and LSE [B, H, Lq] as Forward would.
func runKVCache(ctx context.Context, dev *dma.Device, c Case, hb int, qd, kd, vd []float32, opt dma.Options) (o, lse []float32, err error) {
	if c.Layout != dma.BLHD || opt.Weights == nil {
		return nil, nil, fmt.Errorf("check: kvcache cases take BLHD tensors and given weights")
	}
	w, err := opt.Weights.Download(ctx)
	if err != nil {
		return nil, nil, err
	}
	cache, err := dev.NewKVCache(dma.KVCacheConfig{Sequences: c.B, Capacity: c.Lk, KVHeads: c.Hkv, HeadDim: c.D, BiasHeads: hb, DType: c.DType})
	if err != nil {
		return nil, nil, err
	}
	defer cache.Close()
	var closers []interface{ Close() error }
	defer func() {
		for _, x := range closers {
			x.Close()
		}
	}()
	tensor := func(s dma.Shape, data []float32) (*dma.Tensor, error) {
		t, err := dev.NewTensor(c.DType, s, dma.BLHD)
		if err != nil {
			return nil, err
		}
		closers = append(closers, t)
		return t, t.Upload(ctx, data)
	}
	aopt := dma.Options{Mode: opt.Mode, Window: opt.Window, Causal: opt.Causal, Softcap: opt.Softcap, Scale: opt.Scale}
	o = make([]float32, c.B*c.Lq*c.H*c.D)
	lse = make([]float32, c.B*c.H*c.Lq)
	kvn, qn := c.Lk*c.Hkv*c.D, c.Lq*c.H*c.D
	// appendKeys appends keys [a, b) of batch bi to its sequence.
	appendKeys := func(bi, a, b int, step func(kt, vt *dma.Tensor, wt *dma.Weights) error) error {
		row := c.Hkv * c.D
		kt, err := tensor(dma.Shape{B: 1, L: b - a, H: c.Hkv, D: c.D}, kd[bi*kvn+a*row:bi*kvn+b*row])
		if err != nil {
			return err
		}
		vt, err := tensor(dma.Shape{B: 1, L: b - a, H: c.Hkv, D: c.D}, vd[bi*kvn+a*row:bi*kvn+b*row])
		if err != nil {
			return err
		}
		wt, err := dev.NewWeights(1, hb, b-a)
		if err != nil {
			return err
		}
		closers = append(closers, wt)
		var cols []float32
		for h := range hb {
			at := (bi*hb + h) * c.Lk
			cols = append(cols, w[at+a:at+b]...)
		}
		if err := wt.Upload(ctx, cols); err != nil {
			return err
		}
		if step != nil {
			return step(kt, vt, wt)
		}
		return cache.Append(ctx, bi, kt, vt, wt)
	}
	// One query row in mode row: a step over all but the last key first, then the last
	// key's step (AppendAttendInto: append and attend in one submission), which carries
	// the first step's thresholds, as decoding does.
	split := c.Lk
	if c.Lq == 1 && opt.Mode == dma.ModeRow && c.Lk >= 2 {
		split = c.Lk - 1
	}
	for b := range c.B {
		if err := appendKeys(b, 0, split, nil); err != nil {
			return nil, nil, err
		}
		qt, err := tensor(dma.Shape{B: 1, L: c.Lq, H: c.H, D: c.D}, qd[b*qn:(b+1)*qn])
		if err != nil {
			return nil, nil, err
		}
		var res *dma.Result
		if split < c.Lk {
			first, err := cache.Attend(ctx, b, qt, aopt)
			if err != nil {
				return nil, nil, err
			}
			first.Close()
			if res, err = cache.NewResult(qt); err != nil {
				return nil, nil, err
			}
			err = appendKeys(b, split, c.Lk, func(kt, vt *dma.Tensor, wt *dma.Weights) error {
				return cache.AppendAttendInto(ctx, b, kt, vt, wt, qt, res, aopt)
			})
			if err != nil {
				res.Close()
				return nil, nil, err
			}
		} else if res, err = cache.Attend(ctx, b, qt, aopt); err != nil {
			return nil, nil, err
		}
		ob, err1 := res.O.Download(ctx)
		lb, err2 := res.LSE.Download(ctx)
		res.Close()
		if err1 != nil || err2 != nil {
			return nil, nil, errors.Join(err1, err2)
		}
		copy(o[b*qn:], ob)
		copy(lse[b*c.H*c.Lq:], lb)
	}
	return o, lse, nil
}
