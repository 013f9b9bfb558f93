package kern

import (
	"encoding/binary"
	"fmt"

	"github.com/dmavk/dmavk/vk"
)

// topwPasses is the number of radix digits of select_topw (three of ord, three of idx).
const topwPasses = 6

// topwRecordWords is the size in 32-bit words of one row's record in select_topw's
// scratch: its state and the histogram of the current digit.
const topwRecordWords = 8 + 2048

// TopWScratchSize is the byte size of RecordTopW's scratch for p.
func TopWScratchSize(p *Params) int64 {
	return int64(p.B) * int64(p.Hb) * int64(p.Lq) * topwRecordWords * 4
}

// topwTargetGroups is about how many workgroups a select_topw histogram pass should
// have to fill a large GPU; the slices of a row are never shorter than 1024 keys.
const topwTargetGroups = 512

// RecordTopW records shaders/select_topw.comp: the thresholds tau of mode row, causal,
// for the p.Lq query rows (row i at key position i + p.PosOffset), computed from ord
// alone by a radix select per row spread over slices of the keys, with select_tau's
// contract (bit-identical to the plan's tau). It needs no block lists, so a decode step
// over a long key cache costs at most six reads of the prefix per row, in parallel over
// the GPU: meant for a few rows (Lq of a decode step), where RecordPlan's block lists
// would be rebuilt for every step.
//
// params already holds p; ord is uint32, the row of (b, hb) at element p.OrdOff +
// (b*Hb + hb)*OrdSL (OrdSL 0: Lk); tau receives uvec2 [B][Hb][Lq]; sel is scratch of
// TopWScratchSize(p) bytes, cleared here. The grid is sized for maxLk keys (0: p.Lk): the
// kernels read Lk from params at run time, so the same recording serves any Lk up to
// maxLk. A Barrier follows the dispatches.
func (k *Kernels) RecordTopW(r *vk.Recorder, p *Params, params, ord, tau, sel *vk.Buffer, maxLk uint32) error {
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
	maxLk = max(maxLk, p.Lk)
	bh := uint64(p.B) * uint64(p.Hb)
	ordBytes, err := ordRows(op, p)
	if err != nil {
		return err
	}
	if bh*uint64(p.Lq)*topwRecordWords >= 1<<32 {
		return fmt.Errorf("%s: B*Hb*L over 2^32", op)
	}
	target := uint64(topwTargetGroups)
	if n, ok := envCount("DMAVK_TOPW_GROUPS", 1<<20); ok {
		target = uint64(n) // tuning
	}
	slices := uint32(min(max(target/(bh*uint64(p.Lq)), 1), (uint64(maxLk)+1023)/1024))
	if err := k.checkGrid(op, uint64(slices), uint64(p.Lq), bh); err != nil {
		return err
	}
	_, _, _, st := PlanSizes(p)
	if err := checkSizes(op[len("kern: "):],
		sizedBuf{"params", params, ParamsSize},
		sizedBuf{"ord", ord, ordBytes},
		sizedBuf{"tau", tau, st},
		sizedBuf{"sel", sel, TopWScratchSize(p)},
	); err != nil {
		return err
	}
	hist, err := k.pipelinePush("select_topw_hist", 4, 4)
	if err != nil {
		return err
	}
	choose, err := k.pipelinePush("select_topw_choose", 4, 4)
	if err != nil {
		return err
	}
	if err := r.Fill(sel, 0, TopWScratchSize(p), 0); err != nil {
		return err
	}
	r.Barrier()
	binds := []vk.Binding{vk.Bind(params), vk.Bind(ord), vk.Bind(tau), vk.Bind(sel)}
	for pass := range uint32(topwPasses) {
		// The digits of idx above maxLk's bits are 0 for every key: their passes would
		// fix a 0 digit and change nothing (the last pass always runs: it writes tau).
		if (pass == 3 && maxLk <= 1<<21) || (pass == 4 && maxLk <= 1<<10) {
			continue
		}
		push := binary.LittleEndian.AppendUint32(nil, pass)
		if err := r.Dispatch(hist, [3]uint32{slices, p.Lq, uint32(bh)}, push, binds...); err != nil {
			return err
		}
		r.Barrier()
		if err := r.Dispatch(choose, [3]uint32{p.Lq, uint32(bh), 1}, push, binds...); err != nil {
			return err
		}
		r.Barrier()
	}
	return nil
}

// Carry is where RecordTopWAdvance finds the previous step's thresholds and keeps its
// reduction's scratch: the rows (b, hb) of one sequence at an offset in buffers that
// several sequences share.
type Carry struct {
	State    *vk.Buffer // uvec2 tau per row (b*Hb + hb) at element StateRow + row
	StateRow uint32
	// Scratch holds CarryScratchWords(p, maxLk) uint32 words at ScratchWord, all zero
	// before the first run (every run leaves them zero again).
	Scratch     *vk.Buffer
	ScratchWord uint32
}

// carrySlices is the number of workgroups per row of select_advance for a grid sized for
// maxLk keys: about topwTargetGroups in all, slices of at least 1024 keys.
func carrySlices(p *Params, maxLk uint32) uint32 {
	rows := uint64(p.B) * uint64(p.Hb)
	maxLk = max(maxLk, p.Lk)
	return uint32(min(max(topwTargetGroups/max(rows, 1), 1), (uint64(maxLk)+1023)/1024))
}

// CarryScratchWords is the size in uint32 words of one sequence's Carry.Scratch for p
// and a grid sized for maxLk keys (0: p.Lk): a counter per row and a partial per (row,
// slice).
func CarryScratchWords(p *Params, maxLk uint32) int64 {
	rows := int64(p.B) * int64(p.Hb)
	return rows + 2*rows*int64(carrySlices(p, maxLk))
}

// RecordTopWAdvance records shaders/select_advance.comp: the threshold of one query row
// at the last key position (p.Lq = 1, p.PosOffset = p.Lk - 1, mode row, causal) from the
// threshold of the previous step in c.State (the same row over the first p.Lk - 1 keys,
// the same window and ord), which must be a key: the first p.Lk - 1 keys hold more than
// p.Window candidates. It writes tau (select_topw's contract, bit-identical) and the new
// threshold into c.State. One dispatch, usually returning at once; instead of the radix
// select's six reads of every key and up to 11 dependent dispatches. The grid is sized
// for maxLk keys (0: p.Lk), Lk read from params at run time. A Barrier precedes (the state
// may come from an earlier submission) and follows the dispatch.
func (k *Kernels) RecordTopWAdvance(r *vk.Recorder, p *Params, params, ord, tau *vk.Buffer, c Carry, maxLk uint32) error {
	const op = "kern: RecordTopWAdvance"
	if p.B == 0 || p.Hb == 0 || p.Lk < 2 || p.Lq != 1 {
		return fmt.Errorf("%s: B=%d Hb=%d Lq=%d Lk=%d: one row over at least 2 keys", op, p.B, p.Hb, p.Lq, p.Lk)
	}
	if p.Mode != ModeRow || p.Causal == 0 || p.Window < 1 {
		return fmt.Errorf("%s: mode %d, causal %d, window %d: mode row with causality", op, p.Mode, p.Causal, p.Window)
	}
	if int64(p.PosOffset) != int64(p.Lk)-1 {
		return fmt.Errorf("%s: the row sits at key position %d, not the last one (%d)", op, p.PosOffset, p.Lk-1)
	}
	if p.Lk-1 <= p.Window {
		return fmt.Errorf("%s: %d earlier keys, at most the window %d: no earlier threshold to carry", op, p.Lk-1, p.Window)
	}
	maxLk = max(maxLk, p.Lk)
	rows := uint64(p.B) * uint64(p.Hb)
	ordBytes, err := ordRows(op, p)
	if err != nil {
		return err
	}
	if uint64(c.ScratchWord)+uint64(CarryScratchWords(p, maxLk)) >= 1<<32 {
		return fmt.Errorf("%s: offsets over 2^32", op)
	}
	slices := carrySlices(p, maxLk)
	if err := k.checkGrid(op, uint64(slices), 1, rows); err != nil {
		return err
	}
	_, _, _, st := PlanSizes(p)
	if err := checkSizes(op[len("kern: "):],
		sizedBuf{"params", params, ParamsSize},
		sizedBuf{"ord", ord, ordBytes},
		sizedBuf{"tau", tau, st},
		sizedBuf{"state", c.State, (int64(c.StateRow) + int64(rows)) * 8},
		sizedBuf{"scratch", c.Scratch, (int64(c.ScratchWord) + CarryScratchWords(p, maxLk)) * 4},
	); err != nil {
		return err
	}
	pipe, err := k.pipelinePush("select_advance", 5, 8)
	if err != nil {
		return err
	}
	push := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, c.StateRow), c.ScratchWord)
	r.Barrier()
	if err := r.Dispatch(pipe, [3]uint32{slices, 1, uint32(rows)}, push,
		vk.Bind(params), vk.Bind(ord), vk.Bind(tau), vk.Bind(c.State), vk.Bind(c.Scratch)); err != nil {
		return err
	}
	r.Barrier()
	return nil
}

// ordRows checks the ord rows the decode kernels read for p (row b*Hb + hb at element
// p.OrdOff + (b*Hb + hb)*p.OrdSL, OrdSL 0 meaning Lk): each holds Lk keys, and all end
// below 2^32 elements. It returns the bytes the ord buffer needs.
func ordRows(op string, p *Params) (int64, error) {
	rowLen := uint64(p.OrdSL)
	if rowLen == 0 {
		rowLen = uint64(p.Lk)
	}
	if rowLen < uint64(p.Lk) {
		return 0, fmt.Errorf("%s: ord rows %d apart hold fewer than Lk = %d keys", op, rowLen, p.Lk)
	}
	end := uint64(p.OrdOff) + uint64(p.B)*uint64(p.Hb)*rowLen
	if end >= 1<<32 {
		return 0, fmt.Errorf("%s: ord rows end at element %d, over 2^32", op, end)
	}
	return int64(end) * 4, nil
}
