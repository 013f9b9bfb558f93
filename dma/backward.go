package dma

import (
	"context"
	"fmt"
	"time"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/vk"
)

// BackwardOptions configures Backward beyond the forward's Options.
type BackwardOptions struct {
	// Deterministic makes every gradient bit-identical from run to run (on one device
	// and driver): on the portable path dK, dV and dDelta are then summed by a second,
	// key-major pass in a fixed order instead of being added with atomics by the query
	// pass, at a higher cost. dQ and the weight-parameter gradients are deterministic in
	// both modes, and so is everything on the tensor-core paths (Grads.Path coopmat2 and
	// coopmat), which add no float atomics: there both modes are the same kernels.
	Deterministic bool
}

// Grads are the gradients Backward returns. Close them when done.
//
// DQ, DK and DV are Float32 tensors whatever the dtype of q, k and v, in their shapes
// and layouts: gradients are accumulated in float32 and left there, for the optimiser
// to use or round. DK and DV are summed over the query heads of each kv head (GQA).
type Grads struct {
	DQ, DK, DV *Tensor
	// DDelta is the gradient of the weights the call used ([B, Hb, Lk], float32): each
	// key's dS summed over the rows and the query heads that read its bias head. Nil
	// when the call had no weights (modes none and explicit without Weights or
	// WeightParams).
	DDelta *Weights
	// With Options.WeightParams, the gradients of its parameters (layouts as there; DBdt
	// nil when Bdt is), and DV also holds the term that flows through the weights:
	// DV is the total gradient of v.
	DA, DWdt, DBdt []float32
	// Path names the backward kernels that ran: "coopmat2" (tensor cores through
	// VK_NV_cooperative_matrix2: fp16 or bf16, modes row, shared and none), "coopmat"
	// (VK_KHR_cooperative_matrix: fp16, modes row and shared) or "portable".
	Path string
}

// Close frees the gradients. Closing again, or after the device's Close, does nothing
// and returns nil.
func (g *Grads) Close() error {
	if g == nil {
		return nil
	}
	g.DQ.Close()
	g.DK.Close()
	g.DV.Close()
	g.DDelta.Close()
	return nil
}

// Backward computes the gradients of the attention that Forward computed (spec section
// 4): given q, k, v and opt exactly as Forward got them, its Result res (O, LSE, and the
// weights it computed from WeightParams) and dO, the gradient of the loss with respect
// to res.O (q's shape and dtype, either layout), it returns dQ, dK, dV, the gradient of
// the weights and, when opt.WeightParams is set, those of A, Wdt and Bdt.
//
// The selection is a constant (it has no gradient), as are an explicit Mask and Bias.
// The selection plan is rebuilt from the same weights (unless res holds it), so each
// row sees exactly the keys it kept in the forward; the work is proportional to the
// kept (row, key) pairs, as in Forward. Rows that kept no key contribute nothing. Non-finite values go where
// ref.Backward says (spec section 7): a NaN row's keys get NaN gradients, no other key.
//
// With opt.SavePlan, Forward kept its plan (and the coopmat2 path's packed keys) in
// res: Backward then reads them instead of building them again.
//
// Backward runs the coopmat2 kernels where the device and the call allow them (fp16 or
// bf16 with VK_NV_cooperative_matrix2, modes row, shared and none; Grads.Path says),
// else the KHR cooperative-matrix ones (fp16, modes row and shared), else the portable
// kernels, whatever path Forward took. The tensor-core kernels add no float atomics:
// their gradients are bit-identical run to run in both modes, and their products take
// P and dS rounded to the storage type, as the forward's P V does.
func (d *Device) Backward(ctx context.Context, q, k, v *Tensor, res *Result, dO *Tensor, opt Options, bo BackwardOptions) (*Grads, error) {
	g, _, err := d.backward(ctx, "Backward", q, k, v, res, dO, opt, bo, false)
	return g, err
}

// BackwardProfiled is Backward that also reports where the GPU time went: Selection is
// the rebuilt plan (and the coopmat2 path's pack of the kept keys, "bwd-pack"),
// Attention the backward passes ("bwd-check", "bwd-rows", "bwd-keys", "bwd-reduce" on
// the coopmat2 path, "backward" on the portable one), Weights the weights' backward ("weights-bwd").
func (d *Device) BackwardProfiled(ctx context.Context, q, k, v *Tensor, res *Result, dO *Tensor, opt Options, bo BackwardOptions) (*Grads, Profile, error) {
	return d.backward(ctx, "BackwardProfiled", q, k, v, res, dO, opt, bo, true)
}

func (d *Device) backward(ctx context.Context, op string, q, k, v *Tensor, res *Result, dO *Tensor, opt Options, bo BackwardOptions, timed bool) (*Grads, Profile, error) {
	var prof Profile
	g, ts, err := d.backwardRun(ctx, op, q, k, v, res, dO, opt, bo, timed)
	if err != nil {
		return nil, prof, err
	}
	if len(ts) >= 2 {
		at := func(label string) float64 {
			for _, t := range ts {
				if t.Label == label {
					return t.Nanos
				}
			}
			return 0
		}
		selEnd := at("selection")
		if p := at("bwd-pack"); p != 0 {
			selEnd = p
		}
		prof.Selection = time.Duration(selEnd - at("start"))
		prof.Attention = time.Duration(at("backward") - selEnd)
		if w := at("weights-bwd"); w != 0 {
			prof.Weights = time.Duration(w - at("backward"))
		}
		for i := 1; i < len(ts); i++ {
			if ts[i].Label == "selection" || (ts[i].Label == "backward" && g.Path == kern.PathCoopMat2) {
				continue // the end of the pass before
			}
			prof.Passes = append(prof.Passes, Pass{Name: ts[i].Label, Time: time.Duration(ts[i].Nanos - ts[i-1].Nanos)})
		}
	}
	return g, prof, nil
}

func (d *Device) backwardRun(ctx context.Context, op string, q, k, v *Tensor, res *Result, dO *Tensor, opt Options, bo BackwardOptions, timed bool) (*Grads, []vk.Timestamp, error) {
	uses := append([]use{{"q", q}, {"k", k}, {"v", v}, {"dO", dO}}, opt.uses()...)
	if res != nil {
		uses = append(uses, use{"res.O", res.O}, use{"res.LSE", res.LSE}, use{"res.Weights", res.Weights})
		if res.plan != nil {
			uses = append(uses, use{"res's saved plan", res.plan})
		}
	}
	leave, err := d.enter(op, uses...)
	if err != nil {
		return nil, nil, err
	}
	defer leave()
	pr, err := d.check(op, q, k, v, &opt)
	if err != nil {
		return nil, nil, err
	}
	p := &pr.p
	if res == nil || res.O == nil || res.LSE == nil {
		return nil, nil, fmt.Errorf("dma: Backward: res must be the Result of Forward (with O and LSE)")
	}
	if res.O.d != d || res.LSE.d != d || dO == nil || dO.d != d {
		return nil, nil, fmt.Errorf("dma: Backward: res.O and dO must be tensors of this device")
	}
	if res.O.shape != q.shape || res.O.dtype != q.dtype {
		return nil, nil, fmt.Errorf("dma: Backward: res.O is %v %v, want q's %v %v", res.O.dtype, res.O.shape, q.dtype, q.shape)
	}
	if dO.shape != q.shape || dO.dtype != q.dtype {
		return nil, nil, fmt.Errorf("dma: Backward: dO is %v %v, want q's %v %v", dO.dtype, dO.shape, q.dtype, q.shape)
	}
	if l := res.LSE; l.B != int(p.B) || l.H != int(p.H) || l.Lq != int(p.Lq) {
		return nil, nil, fmt.Errorf("dma: Backward: res.LSE is [%d %d %d], want [B=%d H=%d Lq=%d]", l.B, l.H, l.Lq, p.B, p.H, p.Lq)
	}
	weights := opt.Weights
	wp := opt.WeightParams
	if wp != nil {
		// The weights Forward computed: the plan and the scores use those.
		if res.Weights == nil || res.Weights.d != d || res.Weights.B != int(p.B) || res.Weights.Hb != pr.hb || res.Weights.Lk != int(p.Lk) {
			return nil, nil, fmt.Errorf("dma: Backward: opt.WeightParams is set but res.Weights is missing, of another device or not [B=%d Hb=%d Lk=%d]", p.B, pr.hb, p.Lk)
		}
		weights = res.Weights
	}
	p.O = view(res.O)
	saved := res.plan
	if saved != nil && saved.p != *p {
		return nil, nil, fmt.Errorf("dma: %s: res holds the plan of a Forward with other arguments (Options.SavePlan): pass q, k, v and opt as Forward got them", op)
	}
	ordN, uN, ucN, tauN := kern.PlanSizes(p)
	sizes := map[string]int64{
		"q": q.buf.Size(), "k": k.buf.Size(), "v": v.buf.Size(), "selection plan": uN, "ord": ordN, "tau": tauN, "ucount": ucN,
		"dq": 4 * int64(q.shape.Elems()), "dk": 4 * int64(k.shape.Elems()), "dv": 4 * int64(v.shape.Elems()),
		"weights": kern.BwdDDeltaSize(p), "dsum": kern.BwdDSumSize(p), "key order": kern.BwdPermSize(p),
	}
	if wp != nil {
		sizes["weights scratch"] = kern.WeightsBwdScratchSize(p)
	}
	if err := d.limits(sizes); err != nil {
		return nil, nil, err
	}

	var tmp []interface{ Close() error }
	defer func() {
		for _, t := range tmp {
			t.Close()
		}
	}()
	g := &Grads{}
	fail := func(err error) (*Grads, []vk.Timestamp, error) {
		g.Close()
		return nil, nil, err
	}
	for _, x := range []struct {
		dst **Tensor
		t   *Tensor
	}{{&g.DQ, q}, {&g.DK, k}, {&g.DV, v}} {
		if *x.dst, err = d.newTensor(op, Float32, x.t.shape, x.t.layout); err != nil {
			return fail(err)
		}
	}
	var cp *callPlan
	if saved != nil {
		// Forward's plan: only a parameter block of the call's own.
		params, err := d.vd.NewBuffer(kern.ParamsSize)
		if err != nil {
			return fail(err)
		}
		tmp = append(tmp, params)
		cp = &callPlan{params: params, plan: saved.plan, weights: weights, zero: weights == nil}
	} else if cp, err = d.newCallPlan(op, p, weights, opt.KeyPadding, &tmp, false); err != nil {
		return fail(err)
	}
	// dDelta: returned when the call has weights, else a temporary the kernel writes.
	dDelta, err := d.newWeights(op, int(p.B), int(p.Hb), int(p.Lk))
	if err != nil {
		return fail(err)
	}
	if cp.zero {
		tmp = append(tmp, dDelta)
	} else {
		g.DDelta = dDelta
	}
	dsum, err := d.vd.NewBuffer(kern.BwdDSumSize(p))
	if err != nil {
		return fail(err)
	}
	tmp = append(tmp, dsum)
	g.Path = d.kern.BackwardPath(p, view(dO))
	var cm2 *kern.BwdCM2Buffers
	if g.Path == kern.PathCoopMat2 || g.Path == kern.PathCoopMat {
		if saved != nil && saved.gk != nil {
			cm2, err = kern.NewBwdCM2BuffersPacked(d.vd, p, saved.gk, saved.gv) // Forward's pack
		} else {
			cm2, err = kern.NewBwdCM2Buffers(d.vd, p)
		}
		if err != nil {
			return fail(err)
		}
		tmp = append(tmp, cm2)
	}
	var perm *vk.Buffer
	if bo.Deterministic && cm2 == nil {
		if perm, err = d.vd.NewBuffer(kern.BwdPermSize(p)); err != nil {
			return fail(err)
		}
		tmp = append(tmp, perm)
	}
	bb := &kern.BwdBuffers{
		AttnBuffers: kern.AttnBuffers{Q: q.buf, K: k.buf, V: v.buf, O: res.O.buf, LSE: res.LSE.buf,
			Ord: cp.plan.Ord, U: cp.plan.U, UCount: cp.plan.UCount, Tau: cp.plan.Tau},
		DO: dO.buf, DOView: view(dO),
		DQ: g.DQ.buf, DK: g.DK.buf, DV: g.DV.buf, DQView: view(g.DQ), DKView: view(g.DK), DVView: view(g.DV),
		DDelta: dDelta.buf, DSum: dsum, Perm: perm, CM2: cm2,
	}
	if opt.Mask != nil {
		bb.Mask = opt.Mask.buf
	}
	if opt.Bias != nil {
		bb.Bias = opt.Bias.buf
	}
	var wb *kern.WeightsBwdBuffers
	var dA, dW, dB *vk.Buffer
	if wp != nil {
		wdt, bdt, a, err := d.uploadWeightParams(ctx, wp)
		if err != nil {
			return fail(err)
		}
		tmp = append(tmp, wdt, bdt, a)
		wb = &kern.WeightsBwdBuffers{V: v.buf, Wdt: wdt, Bdt: bdt, A: a, DDelta: dDelta.buf, DV: g.DV.buf, DVView: view(g.DV)}
		for _, x := range []struct {
			dst **vk.Buffer
			n   int64
		}{{&dA, int64(len(wp.A))}, {&dW, int64(len(wp.Wdt))}, {&dB, int64(max(len(wp.Bdt), 1))}, {&wb.Scratch, kern.WeightsBwdScratchSize(p) / 4}} {
			if *x.dst, err = d.vd.NewBuffer(4 * x.n); err != nil {
				return fail(err)
			}
			tmp = append(tmp, *x.dst)
		}
		wb.DA, wb.DWdt, wb.DBdt = dA, dW, dB
	}
	ts, err := d.vd.RunTimed(ctx, func(r *vk.Recorder) error {
		stamp := stamper(r, timed)
		if err := cp.recordParams(r, p); err != nil {
			return err
		}
		if err := stamp("start"); err != nil {
			return err
		}
		if saved == nil {
			if err := d.kern.RecordPlan(r, p, cp.params, cp.weights.buf, cp.padding, cp.plan, stamp); err != nil {
				return err
			}
			r.Barrier()
		}
		if err := stamp("selection"); err != nil {
			return err
		}
		if err := d.kern.RecordBackward(r, p, cp.params, bb, bo.Deterministic, stamp); err != nil {
			return err
		}
		if err := stamp("backward"); err != nil {
			return err
		}
		if wb != nil {
			if err := d.kern.RecordWeightsBackward(r, p, cp.params, wb); err != nil {
				return err
			}
			return stamp("weights-bwd")
		}
		return nil
	})
	if err != nil {
		return fail(fmt.Errorf("dma: %s: %w", op, err))
	}
	if wp != nil {
		for _, x := range []struct {
			dst *[]float32
			buf *vk.Buffer
			n   int
		}{{&g.DA, dA, len(wp.A)}, {&g.DWdt, dW, len(wp.Wdt)}, {&g.DBdt, dB, len(wp.Bdt)}} {
			if x.n == 0 {
				continue // no Bdt
			}
			if *x.dst, err = downloadF32(ctx, op, x.buf, x.n); err != nil {
				return fail(err)
			}
		}
	}
	return g, ts, nil
}
