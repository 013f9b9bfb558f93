package kern

import (
	"fmt"

	"github.com/dmavk/dmavk/vk"
)

// RecordTopW records shaders/select_topw.comp: the thresholds tau of mode row, causal,
// for the p.Lq query rows (row i at key position i + p.PosOffset), computed from ord
// alone by a radix select per row, with select_tau's contract (bit-identical to the plan's
// tau). It needs no block lists, so a decode step over a long key cache costs O(Lk) reads
// per row and per (batch, bias head), every row in parallel: meant for a few rows (Lq of
// a decode step), where RecordPlan's block lists would be rebuilt for every step.
// params already holds p; ord is uint32 [B][Hb][Lk] as RecordPlan's ord pass leaves it
// (a Barrier after it); tau receives uvec2 [B][Hb][Lq]. A Barrier follows the dispatch.
func (k *Kernels) RecordTopW(r *vk.Recorder, p *Params, params, ord, tau *vk.Buffer) error {
	const op = "kern: RecordTopW"
	if p.B == 0 || p.Hb == 0 || p.Lk == 0 || p.Lq == 0 {
		return fmt.Errorf("%s: empty shape B=%d Hb=%d Lq=%d Lk=%d", op, p.B, p.Hb, p.Lq, p.Lk)
	}
	if p.Mode != ModeRow || p.Causal == 0 {
		return fmt.Errorf("%s: thresholds exist in mode row with causality only (mode %d, causal %d)", op, p.Mode, p.Causal)
	}
	if p.Window < 1 {
		return fmt.Errorf("%s: window %d", op, p.Window)
	}
	if int64(p.PosOffset)+int64(p.Lq)-1 > int64(p.Lk)-1 {
		return fmt.Errorf("%s: the last row sits at key position %d, past Lk-1 = %d", op, int64(p.PosOffset)+int64(p.Lq)-1, p.Lk-1)
	}
	bh := uint64(p.B) * uint64(p.Hb)
	if bh*uint64(p.Lk) >= 1<<32 || bh*uint64(p.Lq) >= 1<<32 {
		return fmt.Errorf("%s: B*Hb*L over 2^32", op)
	}
	caps := k.d.Caps()
	if uint64(p.Lq) > uint64(caps.MaxWorkgroupCount[0]) || bh > uint64(caps.MaxWorkgroupCount[1]) {
		return fmt.Errorf("%s: %d rows x %d (batch, bias head) pairs of workgroups, %s allows %d x %d",
			op, p.Lq, bh, caps.Name, caps.MaxWorkgroupCount[0], caps.MaxWorkgroupCount[1])
	}
	so, _, _, st := PlanSizes(p)
	if err := checkSizes(op[len("kern: "):],
		sizedBuf{"params", params, ParamsSize},
		sizedBuf{"ord", ord, so},
		sizedBuf{"tau", tau, st},
	); err != nil {
		return err
	}
	pipe, err := k.Pipeline("select_topw", 3)
	if err != nil {
		return err
	}
	if err := r.Dispatch(pipe, [3]uint32{p.Lq, uint32(bh), 1}, nil, vk.Bind(params), vk.Bind(ord), vk.Bind(tau)); err != nil {
		return err
	}
	r.Barrier()
	return nil
}
