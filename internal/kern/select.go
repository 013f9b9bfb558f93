package kern

import (
	"fmt"

	"github.com/dmavk/dmavk/vk"
)

// PlanBuffers holds the selection plan of one call on the device (see the package
// documentation for the layouts).
type PlanBuffers struct {
	Ord, U, UCount, Tau *vk.Buffer
	// Scratch (PlanScratchSize bytes; modes row and shared) receives vcount, uint32
	// [B*Hb][nb+1]: V_b, the number of valid keys before block b. Pass B needs it, since
	// S_b keeps only w of them: when the rows of block b have met no valid key of the
	// block yet, U_b alone cannot tell V_b = w (tau = 0) from V_b > w (tau = the w-th).
	// After it comes bcount, uint32 [B*Hb][nb]: the number of valid keys of each block,
	// from pass A1 (select_sort) to pass A2 (select_blocks).
	Scratch *vk.Buffer
}

// PlanScratchSize is the byte size of PlanBuffers.Scratch for p: vcount and bcount.
func PlanScratchSize(p *Params) int64 {
	return max(int64(p.B)*int64(p.Hb)*(2*int64(p.NBlocks)+1)*4, 4)
}

// NewPlanBuffers allocates the plan buffers for p with the sizes of PlanSizes and
// PlanScratchSize.
func NewPlanBuffers(d *vk.Device, p *Params) (*PlanBuffers, error) {
	so, su, sc, st := PlanSizes(p)
	pb := &PlanBuffers{}
	for _, x := range []struct {
		dst  **vk.Buffer
		size int64
	}{{&pb.Ord, so}, {&pb.U, su}, {&pb.UCount, sc}, {&pb.Tau, st}, {&pb.Scratch, PlanScratchSize(p)}} {
		b, err := d.NewBuffer(x.size)
		if err != nil {
			pb.Close()
			return nil, fmt.Errorf("kern: plan buffers: %w", err)
		}
		*x.dst = b
	}
	return pb, nil
}

// NewDecodePlanBuffers allocates what the decode kernels need of p's plan: ord and tau
// (RecordPlan's ord pass in mode none, RecordTopW, RecordDecode); no block lists.
func NewDecodePlanBuffers(d *vk.Device, p *Params) (*PlanBuffers, error) {
	so, _, _, st := PlanSizes(p)
	pb := &PlanBuffers{}
	var err error
	if pb.Ord, err = d.NewBuffer(so); err == nil {
		pb.Tau, err = d.NewBuffer(st)
	}
	if err != nil {
		pb.Close()
		return nil, fmt.Errorf("kern: plan buffers: %w", err)
	}
	return pb, nil
}

// Close releases the buffers.
func (pb *PlanBuffers) Close() error {
	for _, b := range []**vk.Buffer{&pb.Ord, &pb.U, &pb.UCount, &pb.Tau, &pb.Scratch} {
		if *b != nil {
			(*b).Close()
			*b = nil
		}
	}
	return nil
}

// Workgroup sizes of the selection shaders (their local_size_x).
const (
	selectOrdWG    = 256
	selectSortWG   = 256
	selectBlocksWG = 256
	// selectTauRows is the number of consecutive key positions (query rows) one
	// workgroup of select_tau handles, one per invocation: its local_size_x and R, both
	// fixed in the shader. R divides 64, so a chunk never straddles two blocks.
	selectTauRows = 64
)

// selectSortShared is the shared memory that select_sort_shared needs for C.
func selectSortShared(c uint32) int64 { return 8 * int64(c) }

// selectBlocksShared is the shared memory that select_blocks_shared needs for w and C:
// S_b, S_{b+1} and the sorted block.
func selectBlocksShared(w, c uint32) int64 { return 8 * (2*int64(w) + int64(c)) }

// RecordPlan records the whole selection plan for p (ord, U/ucount, and tau when
// p.Mode == ModeRow && p.Causal == 1), with barriers between the passes and after the
// last one. params already holds p (the caller wrote it with r.Update and a Barrier).
// padding may be nil; when p.KeyPadding is set it is the uint8 [B][Lk] mask (nonzero =
// valid), read as 32-bit words, so its size must be at least B*Lk rounded up to 4.
// Modes none and explicit need only ord; modes shared and row also get U, ucount and
// the scratch vcount and bcount (plan.Scratch is then required).
//
// p must hold Window >= 1, BlockC = BlockSize(Window), NBlocks = ceil(Lk/BlockC) and
// NCap = Window + BlockC for modes row and shared, and row positions
// i + PosOffset <= Lk - 1 (PosOffset = Lk - Lq is the contract).
//
// stamp, when given, is called after each pass ("ord", "sort", "blocks", "tau") so that
// a profiler can record a GPU timestamp there.
func (k *Kernels) RecordPlan(r *vk.Recorder, p *Params, params, delta, padding *vk.Buffer, plan *PlanBuffers, stamp ...func(pass string) error) error {
	return k.recordPlan(r, p, params, delta, padding, plan, int64(k.d.Caps().MaxSharedMemory), stamp...)
}

// recordPlan is RecordPlan with the shared-memory budget of select_sort and
// select_blocks given: below selectSortShared(C), resp. selectBlocksShared(w, C), the
// global-memory variant runs (tests force both with 0).
func (k *Kernels) recordPlan(r *vk.Recorder, p *Params, params, delta, padding *vk.Buffer, plan *PlanBuffers, sharedBudget int64, stamp ...func(pass string) error) error {
	if err := checkPlan(p, params, delta, padding, plan); err != nil {
		return err
	}
	mark := func(pass string) error {
		for _, s := range stamp {
			if err := s(pass); err != nil {
				return err
			}
		}
		return nil
	}
	if padding == nil || !p.KeyPadding {
		padding = delta // never read; binding 2 needs a buffer
	}
	maxX := int64(k.d.Caps().MaxWorkgroupCount[0])
	bh := int64(p.B) * int64(p.Hb)

	ordPipe, err := k.Pipeline("select_ord", 4)
	if err != nil {
		return err
	}
	n := bh * int64(p.Lk)
	groups := min((n+selectOrdWG-1)/selectOrdWG, maxX) // the shader loops over the rest
	if err := r.Dispatch(ordPipe, [3]uint32{uint32(groups), 1, 1}, nil,
		vk.Bind(params), vk.Bind(delta), vk.Bind(padding), vk.Bind(plan.Ord)); err != nil {
		return err
	}
	r.Barrier()
	if err := mark("ord"); err != nil {
		return err
	}
	return k.recordPlanAfterOrd(r, p, params, plan, sharedBudget, mark)
}

// RecordPlanFromOrd records the selection plan for p after RecordPlan's first pass:
// plan.Ord already holds the ord of every key ([B][Hb][Lk], e.g. copied from a KV cache,
// whose Append computed it with the same function, so the plan is RecordPlan's bit for
// bit). Key padding cannot apply (its keys would need ord 0); stamps as RecordPlan's
// after "ord".
func (k *Kernels) RecordPlanFromOrd(r *vk.Recorder, p *Params, params *vk.Buffer, plan *PlanBuffers, stamp ...func(pass string) error) error {
	if p.KeyPadding {
		return fmt.Errorf("kern: RecordPlanFromOrd: key padding needs the ord pass")
	}
	if plan == nil {
		return fmt.Errorf("kern: RecordPlanFromOrd: missing buffer")
	}
	// checkPlan's delta is only sized, never read here: the ord buffer stands in.
	if err := checkPlan(p, params, plan.Ord, nil, plan); err != nil {
		return err
	}
	mark := func(pass string) error {
		for _, s := range stamp {
			if err := s(pass); err != nil {
				return err
			}
		}
		return nil
	}
	return k.recordPlanAfterOrd(r, p, params, plan, int64(k.d.Caps().MaxSharedMemory), mark)
}

// recordPlanAfterOrd records the passes after ord: A1, A2 and (mode row, causal) B.
func (k *Kernels) recordPlanAfterOrd(r *vk.Recorder, p *Params, params *vk.Buffer, plan *PlanBuffers, sharedBudget int64, mark func(string) error) error {
	if p.Mode != ModeRow && p.Mode != ModeShared {
		return nil
	}
	caps := k.d.Caps()
	maxX := int64(caps.MaxWorkgroupCount[0])
	bh := int64(p.B) * int64(p.Hb)
	var err error

	// Pass A1: every block sorted on its own, one workgroup per block (the shader loops
	// over the rest).
	var sortPipe *vk.Pipeline
	if selectSortShared(p.BlockC) <= sharedBudget {
		sortPipe, err = k.Pipeline("select_sort_shared", 4, p.BlockC)
	} else {
		sortPipe, err = k.Pipeline("select_sort_global", 4)
	}
	if err != nil {
		return err
	}
	if err := r.Dispatch(sortPipe, [3]uint32{uint32(min(bh*int64(p.NBlocks), maxX)), 1, 1}, nil,
		vk.Bind(params), vk.Bind(plan.Ord), vk.Bind(plan.Scratch), vk.Bind(plan.U)); err != nil {
		return err
	}
	r.Barrier()
	if err := mark("sort"); err != nil {
		return err
	}

	// Pass A2: the sequential merges, one workgroup per (batch, bias head).
	var blocks *vk.Pipeline
	if selectBlocksShared(p.Window, p.BlockC) <= sharedBudget {
		blocks, err = k.Pipeline("select_blocks_shared", 4, p.Window, p.BlockC)
	} else {
		blocks, err = k.Pipeline("select_blocks_global", 4)
	}
	if err != nil {
		return err
	}
	if err := r.Dispatch(blocks, [3]uint32{uint32(min(bh, maxX)), 1, 1}, nil,
		vk.Bind(params), vk.Bind(plan.U), vk.Bind(plan.UCount), vk.Bind(plan.Scratch)); err != nil {
		return err
	}
	r.Barrier()
	if err := mark("blocks"); err != nil {
		return err
	}
	if p.Mode != ModeRow || p.Causal != 1 {
		return nil
	}

	// Pass B: one workgroup per chunk of selectTauRows key positions [c, c + R) holding
	// rows (c a multiple of R), per (batch, bias head); the shader loops over the rest and
	// also zeroes the rows at positions below 0.
	tau, err := k.Pipeline("select_tau", 6)
	if err != nil {
		return err
	}
	first, last := max(int64(p.PosOffset), 0), int64(p.PosOffset)+int64(p.Lq)-1
	var chunks int64
	if last >= first {
		chunks = last/selectTauRows - first/selectTauRows + 1
	}
	gx := min(max(chunks, 1), maxX)
	gy := min(bh, int64(caps.MaxWorkgroupCount[1]))
	if err := r.Dispatch(tau, [3]uint32{uint32(gx), uint32(gy), 1}, nil,
		vk.Bind(params), vk.Bind(plan.U), vk.Bind(plan.UCount), vk.Bind(plan.Tau), vk.Bind(plan.Ord), vk.Bind(plan.Scratch)); err != nil {
		return err
	}
	r.Barrier()
	return mark("tau")
}

func checkPlan(p *Params, params, delta, padding *vk.Buffer, plan *PlanBuffers) error {
	if p.B == 0 || p.Hb == 0 || p.Lk == 0 || p.Lq == 0 {
		return fmt.Errorf("kern: RecordPlan: empty shape B=%d Hb=%d Lq=%d Lk=%d", p.B, p.Hb, p.Lq, p.Lk)
	}
	bh := uint64(p.B) * uint64(p.Hb)
	if bh*uint64(p.Lk) >= 1<<32 || bh*uint64(p.Lq) >= 1<<32 {
		return fmt.Errorf("kern: RecordPlan: B*Hb*L over 2^32")
	}
	if params == nil || delta == nil || plan == nil || plan.Ord == nil {
		return fmt.Errorf("kern: RecordPlan: missing buffer")
	}
	if params.Size() < ParamsSize {
		return fmt.Errorf("kern: RecordPlan: params buffer of %d bytes, need %d", params.Size(), ParamsSize)
	}
	if need := int64(bh) * int64(p.Lk) * 4; delta.Size() < need {
		return fmt.Errorf("kern: RecordPlan: delta buffer of %d bytes, need %d", delta.Size(), need)
	}
	if p.KeyPadding {
		need := (int64(p.B)*int64(p.Lk) + 3) &^ 3
		if padding == nil || padding.Size() < need {
			return fmt.Errorf("kern: RecordPlan: key padding needs a buffer of at least %d bytes (B*Lk rounded up to 4)", need)
		}
	}
	so, su, sc, st := PlanSizes(p)
	if plan.Ord.Size() < so {
		return fmt.Errorf("kern: RecordPlan: ord buffer of %d bytes, need %d", plan.Ord.Size(), so)
	}
	switch p.Mode {
	case ModeNone, ModeExplicit:
		return nil
	case ModeRow, ModeShared:
	default:
		return fmt.Errorf("kern: RecordPlan: unknown mode %d", p.Mode)
	}
	w := p.Window
	if w == 0 {
		return fmt.Errorf("kern: RecordPlan: window 0 in mode %d", p.Mode)
	}
	c := uint32(BlockSize(int(w)))
	if p.BlockC != c || p.NBlocks != (p.Lk+c-1)/c || p.NCap != w+c {
		return fmt.Errorf("kern: RecordPlan: window %d wants BlockC=%d NBlocks=%d NCap=%d, params have %d, %d, %d",
			w, c, (p.Lk+c-1)/c, w+c, p.BlockC, p.NBlocks, p.NCap)
	}
	if bh*uint64(p.NBlocks+1)*uint64(p.NCap) >= 1<<32 {
		return fmt.Errorf("kern: RecordPlan: U has over 2^32 entries")
	}
	if plan.U == nil || plan.UCount == nil || plan.U.Size() < su || plan.UCount.Size() < sc {
		return fmt.Errorf("kern: RecordPlan: U/ucount buffers missing or smaller than %d/%d bytes", su, sc)
	}
	if ss := PlanScratchSize(p); plan.Scratch == nil || plan.Scratch.Size() < ss {
		return fmt.Errorf("kern: RecordPlan: scratch buffer missing or smaller than %d bytes", ss)
	}
	if p.Mode == ModeRow && p.Causal == 1 {
		if int64(p.PosOffset)+int64(p.Lq) > int64(p.Lk) {
			return fmt.Errorf("kern: RecordPlan: PosOffset %d puts rows past key %d", p.PosOffset, p.Lk-1)
		}
		if plan.Tau == nil || plan.Tau.Size() < st {
			return fmt.Errorf("kern: RecordPlan: tau buffer missing or smaller than %d bytes", st)
		}
	}
	return nil
}
