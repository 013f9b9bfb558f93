package dma

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/vk"
)

// Result holds the outputs of Forward. Close it when done.
type Result struct {
	O       *Tensor  // [B, Lq, H, D], Q's dtype and layout
	LSE     *LSE     // [B, H, Lq]
	Weights *Weights // the weights used, when Forward computed them from WeightParams
	// plan is the call's selection plan, kept for Backward (Options.SavePlan); nil
	// otherwise.
	plan *savedPlan
	// Path names the attention kernel that ran: "coopmat2" (tensor cores through
	// VK_NV_cooperative_matrix2), "coopmat" (VK_KHR_cooperative_matrix), "portable", or
	// "decode" (the KV-cache kernels, which Forward also takes for a few query rows over
	// many keys).
	Path string
}

// Close frees every output. Closing again, or after the device's Close, does nothing
// and returns nil.
func (r *Result) Close() error {
	if r != nil {
		r.closePartial()
	}
	return nil
}

// problem is a validated call: the kernel parameters and what to bind.
type problem struct {
	p       kern.Params
	q, k, v *Tensor
	opt     Options
	hb      int
}

// uses are the objects opt refers to (those set), as arguments of a call.
func (opt *Options) uses() []use {
	var us []use
	if opt.Weights != nil {
		us = append(us, use{"opt.Weights", opt.Weights})
	}
	if opt.KeyPadding != nil {
		us = append(us, use{"opt.KeyPadding", opt.KeyPadding})
	}
	if opt.Mask != nil {
		us = append(us, use{"opt.Mask", opt.Mask})
	}
	if opt.Bias != nil {
		us = append(us, use{"opt.Bias", opt.Bias})
	}
	return us
}

// check validates a call of op ("Forward", "Backward") and builds its kernel parameters.
func (d *Device) check(op string, q, k, v *Tensor, opt *Options) (*problem, error) {
	for _, t := range []struct {
		name string
		t    *Tensor
	}{{"q", q}, {"k", k}, {"v", v}} {
		if t.t == nil {
			return nil, fmt.Errorf("dma: %s: %s is nil", op, t.name)
		}
		if t.t.d != d {
			return nil, fmt.Errorf("dma: %s: %s lives on another device", op, t.name)
		}
	}
	qs, ks, vs := q.shape, k.shape, v.shape
	if q.dtype != k.dtype || q.dtype != v.dtype {
		return nil, fmt.Errorf("dma: %s: dtypes differ: q %v, k %v, v %v", op, q.dtype, k.dtype, v.dtype)
	}
	if ks != vs {
		return nil, fmt.Errorf("dma: %s: k %v and v %v must have the same shape", op, ks, vs)
	}
	if qs.B != ks.B {
		return nil, fmt.Errorf("dma: %s: batch sizes differ: q %d, k %d", op, qs.B, ks.B)
	}
	if qs.D != ks.D {
		return nil, fmt.Errorf("dma: %s: head dims differ: q %d, k %d", op, qs.D, ks.D)
	}
	if qs.H%ks.H != 0 {
		return nil, fmt.Errorf("dma: %s: H %% Hkv != 0 (H=%d, Hkv=%d)", op, qs.H, ks.H)
	}
	if math.IsNaN(float64(opt.Scale)) || math.IsInf(float64(opt.Scale), 0) {
		return nil, fmt.Errorf("dma: %s: scale %v is not finite", op, opt.Scale)
	}
	if !(opt.Softcap >= 0) || math.IsInf(float64(opt.Softcap), 0) {
		return nil, fmt.Errorf("dma: %s: softcap %v must be finite and >= 0", op, opt.Softcap)
	}
	pr := &problem{q: q, k: k, v: v, opt: *opt}
	mode := opt.Mode
	switch mode {
	case ModeRow, ModeShared:
		if opt.Window < 0 {
			return nil, fmt.Errorf("dma: %s: window %d must be at least 1 in mode %v (or 0: every key)", op, opt.Window, mode)
		}
		if opt.Window > 0 && opt.Weights == nil && opt.WeightParams == nil {
			return nil, fmt.Errorf("dma: %s: mode %v with window %d needs Weights or WeightParams to rank the keys (window 0 keeps every key)", op, mode, opt.Window)
		}
	case ModeNone, ModeExplicit:
	default:
		return nil, fmt.Errorf("dma: %s: unknown mode %v", op, mode)
	}
	if mode != ModeExplicit && (opt.Mask != nil || opt.Bias != nil) {
		return nil, fmt.Errorf("dma: %s: Mask and Bias need ModeExplicit (mode is %v)", op, mode)
	}
	if opt.Weights != nil && opt.WeightParams != nil {
		return nil, fmt.Errorf("dma: %s: give Weights or WeightParams, not both", op)
	}
	for _, u := range opt.uses() {
		if u.o.owner() != d {
			return nil, fmt.Errorf("dma: %s: %s is not of this device", op, u.name)
		}
	}
	hb := ks.H
	if w := opt.Weights; w != nil {
		if w.B != qs.B || w.Lk != ks.L || (w.Hb != qs.H && w.Hb != ks.H) {
			return nil, fmt.Errorf("dma: %s: weights [%d %d %d] do not fit: want [B=%d, H=%d or Hkv=%d, Lk=%d]", op, w.B, w.Hb, w.Lk, qs.B, qs.H, ks.H, ks.L)
		}
		hb = w.Hb
	}
	if wp := opt.WeightParams; wp != nil {
		if err := checkWeightParams(wp, ks, qs.H); err != nil {
			return nil, err
		}
		hb = wp.Hb
	}
	if kp := opt.KeyPadding; kp != nil && (kp.B != qs.B || kp.Lk != ks.L) {
		return nil, fmt.Errorf("dma: %s: key padding [%d %d] does not fit [B=%d, Lk=%d]", op, kp.B, kp.Lk, qs.B, ks.L)
	}
	pr.hb = hb

	// Window 0, or a window that covers every key, selects nothing: that is mode none,
	// exactly.
	if (mode == ModeRow || mode == ModeShared) && (opt.Window == 0 || opt.Window >= ks.L) {
		mode = ModeNone
	}
	// Without causality every row has the same candidates: row is shared.
	if mode == ModeRow && !opt.Causal {
		mode = ModeShared
	}
	scale := opt.Scale
	if scale == 0 {
		scale = float32(1 / math.Sqrt(float64(qs.D)))
	}
	// The selection plan's buffers are sized by the window (below Lk here); modes none
	// and explicit have none.
	w := 1
	if mode == ModeRow || mode == ModeShared {
		w = opt.Window
	}
	c := kern.BlockSize(w)
	p := kern.Params{
		B: u32(qs.B), Lq: u32(qs.L), Lk: u32(ks.L), H: u32(qs.H), Hkv: u32(ks.H), Hb: u32(hb), D: u32(qs.D), G: u32(qs.H / ks.H),
		Mode: u32(int(mode)), Causal: b32(opt.Causal), Window: u32(w), BlockC: u32(c),
		NBlocks: u32((ks.L + c - 1) / c), NCap: u32(w + c),
		KeyPadding: opt.KeyPadding != nil, Storage: q.dtype.storage(),
		PosOffset: int32(ks.L - qs.L), Scale: scale, Softcap: opt.Softcap,
		Q: view(q), K: view(k), V: view(v),
	}
	if opt.Mask != nil {
		m, err := broadcast(op, "mask", opt.Mask.Shape, qs, ks)
		if err != nil {
			return nil, err
		}
		p.Mask = m
	}
	if opt.Bias != nil {
		b, err := broadcast(op, "bias", opt.Bias.Shape, qs, ks)
		if err != nil {
			return nil, err
		}
		p.Bias = b
	}
	if wp := opt.WeightParams; wp != nil {
		p.Form = uint32(wp.Form)
		p.HasBdt = wp.Bdt != nil
	}
	pr.p = p
	return pr, nil
}

func u32(x int) uint32 { return uint32(x) }

func b32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

func view(t *Tensor) kern.View {
	sb, sl, sh := t.strides()
	return kern.View{SB: u32(sb), SL: u32(sl), SH: u32(sh)}
}

// broadcast checks a mask or bias shape against the problem and gives its strides.
func broadcast(op, name string, s MaskShape, q, k Shape) (kern.Broadcast, error) {
	bad := func(dim string, got, want string) (kern.Broadcast, error) {
		return kern.Broadcast{}, fmt.Errorf("dma: %s: %s %s is %s, want %s", op, name, dim, got, want)
	}
	if s.B != 1 && s.B != q.B {
		return bad("batch", fmt.Sprint(s.B), fmt.Sprintf("1 or %d", q.B))
	}
	if s.H != 1 && s.H != q.H && s.H != k.H {
		return bad("heads", fmt.Sprint(s.H), fmt.Sprintf("1, Hkv=%d or H=%d", k.H, q.H))
	}
	if s.Lq != 1 && s.Lq != q.L {
		return bad("query length", fmt.Sprint(s.Lq), fmt.Sprintf("1 or %d", q.L))
	}
	if s.Lk != 1 && s.Lk != k.L {
		return bad("key length", fmt.Sprint(s.Lk), fmt.Sprintf("1 or %d", k.L))
	}
	sj := 1
	si := s.Lk
	sh := s.Lq * s.Lk
	sb := s.H * sh
	zero := func(n, stride int) uint32 {
		if n == 1 {
			return 0
		}
		return u32(stride)
	}
	hdiv := 1
	if s.H == k.H && s.H != q.H {
		hdiv = q.H / k.H
	}
	return kern.Broadcast{SB: zero(s.B, sb), SH: zero(s.H, sh), SI: zero(s.Lq, si), SJ: zero(s.Lk, sj), HDiv: u32(hdiv), Present: true}, nil
}

func checkWeightParams(wp *WeightParams, k Shape, h int) error {
	if wp.Hb != h && wp.Hb != k.H {
		return fmt.Errorf("dma: weight params: Hb %d must be H=%d or Hkv=%d", wp.Hb, h, k.H)
	}
	if len(wp.Wdt) != k.H*k.D*wp.Hb {
		return fmt.Errorf("dma: weight params: Wdt has %d values, want Hkv*D*Hb = %d", len(wp.Wdt), k.H*k.D*wp.Hb)
	}
	if len(wp.A) != wp.Hb {
		return fmt.Errorf("dma: weight params: A has %d values, want Hb = %d", len(wp.A), wp.Hb)
	}
	if wp.Bdt != nil && len(wp.Bdt) != wp.Hb {
		return fmt.Errorf("dma: weight params: Bdt has %d values, want Hb = %d", len(wp.Bdt), wp.Hb)
	}
	if wp.Form != FormExp && wp.Form != FormLinear {
		return fmt.Errorf("dma: weight params: unknown form %v", wp.Form)
	}
	return nil
}

// limits checks every buffer a call binds against the device's descriptor range.
func (d *Device) limits(sizes map[string]int64) error {
	caps := d.vd.Caps()
	for name, n := range sizes {
		if uint64(n) > uint64(caps.MaxStorageBufferRange) {
			return fmt.Errorf("dma: %s needs %d bytes in one binding; %s allows %d (maxStorageBufferRange)", name, n, caps.Name, caps.MaxStorageBufferRange)
		}
	}
	return nil
}

// Forward computes Dynamic Mask Attention of q ([B, Lq, H, D]) over k and v
// ([B, Lk, Hkv, D]: their Shape.H is Hkv) and returns O and the log-sum-exp of every
// row. The zero Options is dense attention over every key, without causality, as
// flash_attn_func and torch's scaled_dot_product_attention do by default; set Causal
// for a decoder, and Window with Weights or WeightParams for DMA (see Options).
// Every argument is checked before any GPU work: a closed one fails with ErrClosed,
// named ("dma: Forward: q is closed").
//
// Non-finite values follow section 7 of docs/dma-semantics.md on every path: weights
// rank as torch.topk ranks them (NaN above +Inf); a row whose kept scores hold a NaN or
// +Inf (a NaN in its query or a kept key, a NaN or +Inf weight) gets NaN O and LSE, a
// NaN in a kept value row NaN O; nothing reaches a row that does not keep the key.
func (d *Device) Forward(ctx context.Context, q, k, v *Tensor, opt Options) (*Result, error) {
	res, _, err := d.forward(ctx, "Forward", q, k, v, opt, false)
	return res, err
}

// Profile is where the GPU time of one Forward went, from GPU timestamps (zero on
// devices without them).
type Profile struct {
	Weights   time.Duration // dynamic weights from V (WeightParams only)
	Selection time.Duration // the selection plan: ord, block lists, thresholds (and "pack")
	Attention time.Duration
	// Passes has every timed kernel in order, the plan's passes one by one:
	// "weights", "ord", "sort", "blocks", "tau", "pack" (the coopmat2 path's check of V
	// and packing of the kept keys), "attention" (those that ran).
	Passes []Pass
}

// Pass is the GPU time of one kernel of a Forward.
type Pass struct {
	Name string
	Time time.Duration
}

// Total is the GPU time of the whole call.
func (p Profile) Total() time.Duration { return p.Weights + p.Selection + p.Attention }

// ForwardProfiled is Forward that also reports where the GPU time went.
func (d *Device) ForwardProfiled(ctx context.Context, q, k, v *Tensor, opt Options) (*Result, Profile, error) {
	return d.forward(ctx, "ForwardProfiled", q, k, v, opt, true)
}

func (d *Device) forward(ctx context.Context, op string, q, k, v *Tensor, opt Options, timed bool) (*Result, Profile, error) {
	return d.forwardWith(ctx, op, q, k, v, opt, timed, nil, d.vd.RunTimed, nil)
}

// runner runs what record records: a submission of dmavk's (vk.Device.RunTimed), or a
// recording into an application's command buffer (record.go).
type runner func(ctx context.Context, record func(*vk.Recorder) error) ([]vk.Timestamp, error)

// forwardWith is Forward (call op) through run, writing into into's O and LSE (and
// Weights, when set and WeightParams computes them) when into is not nil. With cached
// set, k, v and opt.Weights stand for a KV cache's keys (their shapes; the kernels read
// the cache's rows, and the plan its ord).
func (d *Device) forwardWith(ctx context.Context, op string, q, k, v *Tensor, opt Options, timed bool, into *Result, run runner, cached *cachedKeys) (*Result, Profile, error) {
	var prof Profile
	uses := append([]use{{"q", q}, {"k", k}, {"v", v}}, opt.uses()...)
	leave, err := d.enter(op, append(uses, resultUses(into)...)...)
	if err != nil {
		return nil, prof, err
	}
	defer leave()
	pr, err := d.check(op, q, k, v, &opt)
	if err != nil {
		return nil, prof, err
	}
	p := &pr.p
	if cached != nil {
		p.K, p.V = cached.view, cached.view
	}
	decode := d.forwardDecodes(p, &opt)
	ordN, uN, ucN, tauN := kern.PlanSizes(p)
	sizes := map[string]int64{
		"q": q.buf.Size(), "k": k.buf.Size(), "v": v.buf.Size(),
		"weights": int64(p.B) * int64(p.Hb) * int64(p.Lk) * 4, "ord": ordN, "tau": tauN,
	}
	if !decode { // the decode kernels need no block lists
		sizes["selection plan"], sizes["ucount"] = uN, ucN
	}
	if err := d.limits(sizes); err != nil {
		return nil, prof, err
	}
	var tmp []interface{ Close() error }
	defer func() {
		for _, t := range tmp {
			t.Close()
		}
	}()
	res := &Result{}
	fail := func(err error) (*Result, Profile, error) {
		res.closePartial()
		return nil, prof, err
	}
	if into != nil {
		if err := checkForwardInto(q, into, pr.hb, int(p.Lk), opt.WeightParams != nil); err != nil {
			return nil, prof, err
		}
		res = &Result{O: into.O, LSE: into.LSE, Weights: into.Weights}
		fail = func(err error) (*Result, Profile, error) { return nil, prof, err }
	} else if res.O, err = d.newTensor(op, q.dtype, q.shape, q.layout); err != nil {
		return fail(err)
	}
	p.O = view(res.O)
	if res.LSE == nil {
		if res.LSE, err = d.newLSE(op, int(p.B), int(p.H), int(p.Lq)); err != nil {
			return fail(err)
		}
	}
	lseBuf := res.LSE.buf

	weights := opt.Weights
	var wdt, bdt, a *vk.Buffer
	if wp := opt.WeightParams; wp != nil {
		if res.Weights == nil {
			w, err := d.newWeights(op, int(p.B), pr.hb, int(p.Lk))
			if err != nil {
				return fail(err)
			}
			res.Weights = w
			if into != nil {
				tmp = append(tmp, w) // the caller wants no weights back
			}
		}
		weights = res.Weights
		if wdt, bdt, a, err = d.uploadWeightParams(ctx, wp); err != nil {
			return fail(err)
		}
		tmp = append(tmp, wdt, bdt, a)
	}
	cp, err := d.newCallPlan(op, p, weights, opt.KeyPadding, &tmp, decode)
	if err != nil {
		return fail(err)
	}
	params, plan := cp.params, cp.plan
	weights = cp.weights
	ab := &kern.AttnBuffers{Q: q.buf, K: k.buf, V: v.buf, O: res.O.buf, LSE: lseBuf,
		Ord: plan.Ord, U: plan.U, UCount: plan.UCount, Tau: plan.Tau}
	var sel, part *vk.Buffer
	switch {
	case decode:
		for _, x := range []struct {
			dst  **vk.Buffer
			size int64
		}{{&sel, kern.TopWScratchSize(p)}, {&part, d.kern.DecodePartSize(p, 0)}} {
			if *x.dst, err = d.vd.NewBuffer(max(x.size, 4)); err != nil {
				return fail(fmt.Errorf("dma: %s: %w", op, err))
			}
			tmp = append(tmp, *x.dst)
		}
	case d.kern.AttentionPath(p) == kern.PathCoopMat2:
		cm2, err := kern.NewCM2Buffers(d.vd, p)
		if err != nil {
			return fail(err)
		}
		tmp = append(tmp, cm2)
		ab.CM2 = cm2
	}
	if opt.Mask != nil {
		ab.Mask = opt.Mask.buf
	}
	if opt.Bias != nil {
		ab.Bias = opt.Bias.buf
	}
	ts, err := run(ctx, func(r *vk.Recorder) error {
		stamp := stamper(r, timed)
		if err := cp.recordParams(r, p); err != nil {
			return err
		}
		if err := stamp("start"); err != nil {
			return err
		}
		if opt.WeightParams != nil {
			if err := d.kern.RecordWeights(r, p, params, v.buf, wdt, bdt, a, weights.buf); err != nil {
				return err
			}
			r.Barrier()
		}
		if err := stamp("weights"); err != nil {
			return err
		}
		if decode {
			// A few rows over many keys: ord, each row's threshold straight from it, and
			// the split-K kernel (the KV cache's path), no block lists.
			if cached != nil {
				if err := cached.recordOrd(r, plan.Ord, stamp); err != nil {
					return err
				}
			} else {
				pOrd := *p
				pOrd.Mode = kern.ModeNone
				if err := d.kern.RecordPlan(r, &pOrd, params, weights.buf, cp.padding, &kern.PlanBuffers{Ord: plan.Ord}, stamp); err != nil {
					return err
				}
			}
			r.Barrier()
			if p.Mode == kern.ModeRow || p.Mode == kern.ModeShared {
				// Mode shared's threshold is the last row's (the decode kernel reads it for
				// every row); select_topw computes every row's either way.
				pRow := *p
				pRow.Mode = kern.ModeRow
				if err := d.kern.RecordTopW(r, &pRow, params, plan.Ord, plan.Tau, sel, 0); err != nil {
					return err
				}
				if err := stamp("tau"); err != nil {
					return err
				}
			}
			if err := stamp("selection"); err != nil {
				return err
			}
			if err := d.kern.RecordDecode(r, p, params, ab, part, 0, stamp); err != nil {
				return err
			}
			return stamp("attention")
		}
		if cached != nil {
			if err := cached.recordOrd(r, plan.Ord, stamp); err != nil {
				return err
			}
			if err := d.kern.RecordPlanFromOrd(r, p, params, plan, stamp); err != nil {
				return err
			}
		} else if err := d.kern.RecordPlan(r, p, params, weights.buf, cp.padding, plan, stamp); err != nil {
			return err
		}
		r.Barrier()
		if err := stamp("selection"); err != nil {
			return err
		}
		if err := d.kern.RecordAttention(r, p, params, ab, stamp); err != nil {
			return err
		}
		return stamp("attention")
	})
	if err != nil {
		return fail(err)
	}
	res.Path = d.kern.AttentionPath(p)
	if decode {
		res.Path = "decode"
	}
	if opt.SavePlan && !decode && into == nil {
		if res.plan, err = d.savePlan(op, p, plan, ab.CM2, &tmp); err != nil {
			return fail(err)
		}
	}
	if into != nil {
		into.Path = res.Path
	}
	// Stamps: start, weights, the plan's passes..., selection, attention.
	if n := len(ts); n >= 4 {
		at := func(label string) float64 {
			for _, t := range ts {
				if t.Label == label {
					return t.Nanos
				}
			}
			return 0
		}
		prof.Weights = time.Duration(at("weights") - at("start"))
		// The coopmat2 path packs the kept keys after the plan: that belongs to the
		// selection's cost, not the attention's.
		selEnd := at("selection")
		if p := at("pack"); p != 0 {
			selEnd = p
		}
		prof.Selection = time.Duration(selEnd - at("weights"))
		prof.Attention = time.Duration(at("attention") - selEnd)
		for i := 1; i < n; i++ {
			if ts[i].Label == "selection" {
				continue // the plan's last pass ends there too
			}
			prof.Passes = append(prof.Passes, Pass{Name: ts[i].Label, Time: time.Duration(ts[i].Nanos - ts[i-1].Nanos)})
		}
	}
	return res, prof, nil
}

// stamper returns what records a timestamp with the given label into r, or does
// nothing when the call is not timed.
func stamper(r *vk.Recorder, timed bool) func(label string) error {
	return func(label string) error {
		if !timed {
			return nil
		}
		return r.Timestamp(label)
	}
}

// forwardDecodeMinKeys is the fewest keys for which Forward sends a few query rows to the
// decode kernels: below it one prefill tile does as well, and the prefill kernels keep
// their coverage of short rows.
const forwardDecodeMinKeys = 4096

// forwardDecodes reports whether Forward takes the decode kernels for p: at most
// kern.DecodeMaxRows query rows over at least forwardDecodeMinKeys keys, no explicit mask
// or bias, and a shape the decode kernels take on this device (kern.DecodeTakes).
func (d *Device) forwardDecodes(p *kern.Params, opt *Options) bool {
	if p.Lk < forwardDecodeMinKeys || opt.Mask != nil || opt.Bias != nil {
		return false
	}
	return d.kern.DecodeTakes(p) == nil
}

// callPlan is what Forward and Backward record the selection plan with: the parameter
// block, the plan's buffers, and the weights and key padding the plan reads.
type callPlan struct {
	params  *vk.Buffer
	plan    *kern.PlanBuffers
	weights *Weights // given, computed by the call, or zero (zero is set)
	zero    bool     // the call has no weights: a zero bias, bias head = kv head
	padding *vk.Buffer
}

// newCallPlan allocates the parameter block and plan buffers of p (ord and tau only for
// the decode kernels); weights nil means none (zero weights, allocated here). Everything
// allocated is appended to tmp.
func (d *Device) newCallPlan(op string, p *kern.Params, weights *Weights, kp *KeyPadding, tmp *[]interface{ Close() error }, decode bool) (*callPlan, error) {
	cp := &callPlan{weights: weights}
	var err error
	if cp.params, err = d.vd.NewBuffer(kern.ParamsSize); err != nil {
		return nil, err
	}
	*tmp = append(*tmp, cp.params)
	newPlan := kern.NewPlanBuffers
	if decode {
		newPlan = kern.NewDecodePlanBuffers
	}
	if cp.plan, err = newPlan(d.vd, p); err != nil {
		return nil, err
	}
	*tmp = append(*tmp, cp.plan)
	if weights == nil {
		if cp.weights, err = d.newWeights(op, int(p.B), int(p.Hkv), int(p.Lk)); err != nil {
			return nil, err
		}
		*tmp = append(*tmp, cp.weights)
		cp.zero = true
	}
	if kp != nil {
		cp.padding = kp.buf
	}
	return cp, nil
}

// recordParams writes p into the parameter block, zeroes the weights of a call without
// any, and ends with a barrier.
func (cp *callPlan) recordParams(r *vk.Recorder, p *kern.Params) error {
	if err := r.Update(cp.params, 0, p.Bytes()); err != nil {
		return err
	}
	if cp.zero && cp.weights != nil {
		if err := r.Fill(cp.weights.buf, 0, cp.weights.buf.Size(), 0); err != nil {
			return err
		}
	}
	r.Barrier()
	return nil
}

// closePartial closes the outputs r has (Close methods take nil).
func (r *Result) closePartial() {
	r.O.Close()
	r.LSE.Close()
	r.Weights.Close()
	r.plan.Close()
}

// savedPlan is a Forward's selection plan kept for Backward (Options.SavePlan): the
// plan's buffers, the parameters it was made for and, when the coopmat2 forward packed
// the kept keys into one buffer pair, GK and GV. A tracked object, freed with its Result
// or the Device.
type savedPlan struct {
	d      *Device
	life   lifetime
	p      kern.Params
	plan   *kern.PlanBuffers
	gk, gv *vk.Buffer
}

func (s *savedPlan) owner() *Device {
	if s == nil {
		return nil
	}
	return s.d
}
func (s *savedPlan) state() *lifetime { return &s.life }
func (s *savedPlan) free() {
	s.plan.Close()
	for _, b := range []*vk.Buffer{s.gk, s.gv} {
		if b != nil {
			b.Close()
		}
	}
}

// Close frees the plan; later calls do nothing.
func (s *savedPlan) Close() error {
	if s != nil && s.d != nil {
		s.d.release(s)
	}
	return nil
}

// savePlan takes plan (and cm2's packed keys, when in one buffer pair) out of the
// call's temporaries tmp into a tracked savedPlan for p.
func (d *Device) savePlan(op string, p *kern.Params, plan *kern.PlanBuffers, cm2 *kern.CM2Buffers, tmp *[]interface{ Close() error }) (*savedPlan, error) {
	s := &savedPlan{d: d, p: *p, plan: plan}
	if cm2 != nil && len(cm2.GK) == 1 && len(cm2.GV) == 1 && cm2.PairsPer >= int(p.B*p.Hb) {
		s.gk, s.gv = cm2.GK[0], cm2.GV[0]
		cm2.GK, cm2.GV = nil, nil // no longer the temporaries'
	}
	kept := (*tmp)[:0]
	for _, t := range *tmp {
		if t != interface{ Close() error }(plan) {
			kept = append(kept, t)
		}
	}
	*tmp = kept
	if err := d.adopt(op, s); err != nil {
		return nil, err
	}
	return s, nil
}

func (d *Device) uploadWeightParams(ctx context.Context, wp *WeightParams) (wdt, bdt, a *vk.Buffer, err error) {
	if wdt, err = d.uploadBytes(ctx, f32bytes(wp.Wdt)); err != nil {
		return
	}
	bv := wp.Bdt
	if bv == nil {
		bv = []float32{0}
	}
	if bdt, err = d.uploadBytes(ctx, f32bytes(bv)); err != nil {
		wdt.Close()
		return
	}
	if a, err = d.uploadBytes(ctx, f32bytes(wp.A)); err != nil {
		wdt.Close()
		bdt.Close()
	}
	return
}

// DynamicWeights computes the weights of every key of v ([B, Lk, Hkv, D]) from wp (as
// Options.WeightParams holds them): float32 [B, wp.Hb, Lk].
func (d *Device) DynamicWeights(ctx context.Context, v *Tensor, wp *WeightParams) (*Weights, error) {
	leave, err := d.enter("DynamicWeights", use{"v", v})
	if err != nil {
		return nil, err
	}
	defer leave()
	if v == nil || v.d != d {
		return nil, fmt.Errorf("dma: DynamicWeights: v is nil or lives on another device")
	}
	if wp == nil {
		return nil, fmt.Errorf("dma: DynamicWeights: wp is nil")
	}
	vs := v.shape
	// Hb may be H (unknown here): accept any multiple of Hkv.
	if wp.Hb < 1 || wp.Hb%vs.H != 0 {
		return nil, fmt.Errorf("dma: DynamicWeights: Hb %d must be a positive multiple of Hkv=%d", wp.Hb, vs.H)
	}
	if err := checkWeightParams(wp, vs, wp.Hb); err != nil {
		return nil, err
	}
	p := kern.Params{B: u32(vs.B), Lk: u32(vs.L), Hkv: u32(vs.H), Hb: u32(wp.Hb), D: u32(vs.D),
		Storage: v.dtype.storage(), V: view(v), Form: uint32(wp.Form), HasBdt: wp.Bdt != nil}
	out, err := d.newWeights("DynamicWeights", vs.B, wp.Hb, vs.L)
	if err != nil {
		return nil, err
	}
	wdt, bdt, a, err := d.uploadWeightParams(ctx, wp)
	if err != nil {
		out.Close()
		return nil, err
	}
	defer func() { wdt.Close(); bdt.Close(); a.Close() }()
	params, err := d.vd.NewBuffer(kern.ParamsSize)
	if err != nil {
		out.Close()
		return nil, err
	}
	defer params.Close()
	err = d.vd.Run(ctx, func(r *vk.Recorder) error {
		if err := r.Update(params, 0, p.Bytes()); err != nil {
			return err
		}
		r.Barrier()
		return d.kern.RecordWeights(r, &p, params, v.buf, wdt, bdt, a, out.buf)
	})
	if err != nil {
		out.Close()
		return nil, err
	}
	return out, nil
}
