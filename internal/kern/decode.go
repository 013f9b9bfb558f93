package kern

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"

	"github.com/dmavk/dmavk/vk"
)

// DecodeMaxRows is the largest Lq RecordDecode takes (a decode step, a short draft).
const DecodeMaxRows = 4

// decodeThreads is the size of a decode_attn split workgroup (the shader's NT).
const decodeThreads = 128

// decodeTargetGroups is about how many split workgroups a step should have: on the H200
// (132 multiprocessors) 512 was the best of 256, 512, 1024 and 2048 at 64K keys and
// within 2% of the best at 256K for the first split pass; for the rebuilt one (before its
// blocks were dealt in turn), 512 was the best at 64K and 256K on the H100 (split and
// merge; 1024 5-11% slower, 256 8-12%, 2048 35-85%; bench/NOTES.md, decode).
const decodeTargetGroups = 512

// decodeSlices is the number of slices (the split grid's x) RecordDecode deals up to
// maxLk keys to, in blocks of 32 in turn: enough for about decodeTargetGroups
// workgroups, none with fewer than decodeThreads keys. The shader derives each slice's
// blocks from the Lk of each run.
func (k *Kernels) decodeSlices(p *Params, maxLk uint32) uint32 {
	sg := max(k.d.Caps().SubgroupSize, 1)
	groups := max(uint64(p.H/decodeHeads(p, decodeRows(p, sg)))*uint64(p.B), 1)
	maxLk = max(maxLk, p.Lk)
	target := uint64(decodeTargetGroups)
	if k.d.Caps().Type == vk.DeviceCPU {
		target = 64 // a CPU runs a few workgroups at a time: fewer, longer slices
	}
	if n, ok := envCount("DMAVK_DECODE_GROUPS", 1<<20); ok {
		target = uint64(n) // tuning
	}
	return uint32(min(max(target/groups, 1), (uint64(maxLk)+decodeThreads-1)/decodeThreads))
}

// DecodePartSize is the byte size of RecordDecode's scratch for p and a grid sized for
// maxLk keys (0: p.Lk): one (max, sum, o[D]) per (batch, head, row, slice).
func (k *Kernels) DecodePartSize(p *Params, maxLk uint32) int64 {
	s := int64(k.decodeSlices(p, maxLk))
	return max(int64(p.B)*int64(p.H)*int64(p.Lq)*s*(int64(p.D)+2)*4, 4)
}

// decodeRows is the most rows (query heads x query rows) one split workgroup of p
// handles: each invocation holds a running max, sum and a few elements of o per row in
// registers, so no more than the rows of one kv head's query heads (G x Lq) need,
// rounded up to 4, 8 or 16 on 32-wide or wider subgroups (4 on narrower ones).
// Registers matter: 16 rows where 4 do made the former split pass 1.2-1.9x slower on
// the H200.
func decodeRows(p *Params, sg uint32) uint32 {
	if decodeRowsOverride != 0 {
		return decodeRowsOverride
	}
	if n, ok := envCount("DMAVK_DECODE_ROWS", 32); ok {
		return n // tuning
	}
	if sg < 32 {
		return 4
	}
	need := uint64(p.G) * uint64(p.Lq)
	for _, rows := range []uint32{4, 8} {
		if need <= uint64(rows) {
			return rows
		}
	}
	return 16
}

// envCount reads a tuning knob: the environment variable name as a count from 1 to
// most, ok false when it is unset or out of range.
func envCount(name string, most int) (uint32, bool) {
	n, err := strconv.Atoi(os.Getenv(name))
	return uint32(n), err == nil && n >= 1 && n <= most
}

// decodeRowsOverride replaces decodeRows when set (tests: the GPU's 16 rows on lavapipe).
var decodeRowsOverride uint32

// decodeHeads is the number of query heads of one kv head a split workgroup takes: the
// largest divisor of G whose rows fit (the shader's headsPerGroup).
func decodeHeads(p *Params, rows uint32) uint32 {
	best := uint32(1)
	for g := uint32(1); g <= p.G; g++ {
		if p.G%g == 0 && g*p.Lq <= rows {
			best = g
		}
	}
	return best
}

// DecodeTakes says why RecordDecode cannot take p on this device (nil when it can): its
// mode (row or shared with causality, shared's rows ending at the last key, or none), its number of query rows, its head dimension (a
// multiple of 8, at most AttnMaxD), and the device's subgroups: a size the pipeline can
// fix, from the team width (decodeTeam) to decodeThreads, with arithmetic and shuffle
// operations.
func (k *Kernels) DecodeTakes(p *Params) error {
	caps := k.d.Caps()
	return DecodeTakesOn(&caps, p)
}

// DecodeTakesOn is DecodeTakes for a device of caps (before one is open).
func DecodeTakesOn(caps *vk.Caps, p *Params) error {
	if !((p.Mode == ModeRow || p.Mode == ModeShared) && p.Causal == 1) && p.Mode != ModeNone {
		return fmt.Errorf("mode %d (causal %d): row or shared with causality, or none", p.Mode, p.Causal)
	}
	if p.Mode == ModeShared && int64(p.PosOffset)+int64(p.Lq) != int64(p.Lk) {
		// The shared threshold is the last row's, which must see every key.
		return fmt.Errorf("mode shared: the rows end at key position %d, not at the last key %d", int64(p.PosOffset)+int64(p.Lq)-1, int64(p.Lk)-1)
	}
	if p.Lq == 0 || p.Lq > DecodeMaxRows {
		return fmt.Errorf("%d query rows, takes 1 to %d", p.Lq, DecodeMaxRows)
	}
	sg := caps.SubgroupSize
	if caps.MinSubgroupSize != caps.MaxSubgroupSize && !(caps.SubgroupSizeControl && caps.SubgroupSizeComputeReq) {
		return fmt.Errorf("%s's subgroup size varies and cannot be fixed", caps.Name)
	}
	if p.D == 0 || p.D%8 != 0 || p.D > AttnMaxD {
		return fmt.Errorf("D=%d must be a multiple of 8 and at most %d", p.D, AttnMaxD)
	}
	if team := decodeTeam(p.D); sg < team || sg > decodeThreads || sg&(sg-1) != 0 {
		return fmt.Errorf("%s's subgroup size %d: the decode kernels need a power of two from %d to %d", caps.Name, sg, team, decodeThreads)
	}
	const basic, arithmetic, shuffle = 0x1, 0x4, 0x10 // VK_SUBGROUP_FEATURE_*_BIT
	if caps.SubgroupOps&(basic|arithmetic|shuffle) != basic|arithmetic|shuffle {
		return fmt.Errorf("%s lacks subgroup arithmetic or shuffles", caps.Name)
	}
	rows := decodeRows(p, sg)
	if n := decodeShared(p.D, rows, sg); n > int64(caps.MaxSharedMemory) {
		return fmt.Errorf("D=%d with %d rows per workgroup needs %d bytes of shared memory, %s has %d", p.D, rows, n, caps.Name, caps.MaxSharedMemory)
	}
	return nil
}

// decodeTeam is the number of lanes that score one kept key in the split pass (the
// shader's TL): 4, 8 above D = 128, fewer where D/4 has fewer factors of two.
func decodeTeam(d uint32) uint32 {
	team := uint32(4)
	if d > 128 {
		team = 8
	}
	for team > 1 && (d/4)%team != 0 {
		team /= 2
	}
	return team
}

// decodeShared is the shared memory of a decode_attn split workgroup for head dimension
// d, rows rows and subgroups of sg (the shader's arrays, in words).
func decodeShared(d, rows, sg uint32) int64 {
	const nt, kpi = decodeThreads, 8
	team := int64(decodeTeam(d))
	hp := int64(d / 2)
	own := min(hp&-hp, nt)
	r, nsg := int64(rows), int64(nt/sg)
	nrp := (r + team - 1) / team * team
	list := int64(2 * nt * kpi)
	if nt/own > 1 { // the key groups' merge uses the list
		list = max(list, r*int64(d))
	}
	return 4 * (r*int64(d) + list + nrp*(nt/team) + nsg*nrp + nsg + 2*r + r)
}

// RecordDecode records shaders/decode_attn.comp (the KV-cache decode path): O and LSE
// of a few query rows (p.Lq <= DecodeMaxRows) over Lk keys, split over slices of the
// keys (blocks of 32 keys dealt in turn, so kept keys that cluster spread over many
// slices) and merged by a second pass, reading the K and V rows of the kept keys only, once
// for the query heads of a kv head that one workgroup takes together (GQA). Modes row
// with causality (b.Tau from select_topw or the plan), shared with causality (the last
// row's b.Tau for every row; the rows end at the last key) and none; fp32, fp16 or bf16; D as
// DecodeTakes says. ord is read at p.OrdOff + bh*OrdSL
// (OrdSL 0: Lk), as select_topw reads it. The grid is sized for maxLk keys (0: p.Lk); the
// kernels take Lk from params at run time, so one recording serves every Lk up to maxLk
// (as long as the other fields keep their values). part is scratch of
// k.DecodePartSize(p, maxLk) bytes. Same contract as RecordAttention otherwise.
//
// stamp, if given, is called between the split pass and the merge with "split".
func (k *Kernels) RecordDecode(r *vk.Recorder, p *Params, params *vk.Buffer, b *AttnBuffers, part *vk.Buffer, maxLk uint32, stamp ...func(string) error) error {
	const op = "kern: RecordDecode"
	if params == nil || b == nil {
		return fmt.Errorf("%s: nil params or buffers", op)
	}
	if err := k.DecodeTakes(p); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	rowCausal := (p.Mode == ModeRow || p.Mode == ModeShared) && p.Causal == 1
	caps := k.d.Caps()
	sg := caps.SubgroupSize
	// The mode-none view of the checks (no U lists; ord as a cache lays it out checked
	// below), then tau for mode row.
	pc := *p
	pc.Mode = ModeNone
	ordBuf := b.Ord
	if err := checkAttention(&pc, b); err != nil {
		return err
	}
	ordBytes, err := ordRows(op, p)
	if err != nil {
		return err
	}
	if err := checkSizes(op[len("kern: "):], sizedBuf{"Ord", ordBuf, ordBytes}); err != nil {
		return err
	}
	_, _, _, st := PlanSizes(p)
	tau := b.Tau
	if rowCausal {
		if err := checkSizes(op[len("kern: "):], sizedBuf{"Tau", b.Tau, st}); err != nil {
			return err
		}
	} else {
		tau = ordBuf // never read
	}
	if err := checkSizes(op[len("kern: "):], sizedBuf{"params", params, ParamsSize}, sizedBuf{"part", part, k.DecodePartSize(p, maxLk)}); err != nil {
		return err
	}
	slices := k.decodeSlices(p, maxLk)
	rows := decodeRows(p, sg)
	groups := p.H / decodeHeads(p, rows)
	for _, g := range [][3]uint32{{slices, groups, p.B}, {p.Lq, p.H, p.B}} {
		if err := k.checkGrid(op, uint64(g[0]), uint64(g[1]), uint64(g[2])); err != nil {
			return err
		}
	}
	split, err := k.decodePipeline("decode_attn_split", p, decodeThreads, sg, rows)
	if err != nil {
		return err
	}
	merge, err := k.decodePipeline("decode_attn_reduce", p, 256, sg, rows)
	if err != nil {
		return err
	}
	binds := func() []vk.Binding {
		return []vk.Binding{vk.Bind(params), vk.Bind(b.Q), vk.Bind(b.K), vk.Bind(b.V), vk.Bind(ordBuf), vk.Bind(tau),
			vk.Bind(part), vk.Bind(b.O), vk.Bind(b.LSE)}
	}
	push := binary.LittleEndian.AppendUint32(nil, slices)
	if err := r.Dispatch(split, [3]uint32{slices, groups, p.B}, push, binds()...); err != nil {
		return err
	}
	r.Barrier()
	for _, s := range stamp {
		if err := s("split"); err != nil {
			return err
		}
	}
	return r.Dispatch(merge, [3]uint32{p.Lq, p.H, p.B}, push, binds()...)
}

// decodePipeline returns a decode_attn variant for p's head dimension and storage and nt
// invocations, the subgroup size pinned where the device lets it vary.
func (k *Kernels) decodePipeline(name string, p *Params, nt, sg, rows uint32) (*vk.Pipeline, error) {
	return k.pipeline(pipeKey{name: name, bindings: 9, push: 4, subgroup: k.pinnedSubgroup(sg)}, []uint32{p.D, uint32(p.Storage), nt, sg, rows}, nil)
}
