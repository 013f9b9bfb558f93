package kern

import (
	"fmt"

	"github.com/dmavk/dmavk/shaders"
	"github.com/dmavk/dmavk/vk"
)

// DecodeMaxRows is the largest Lq RecordDecode takes (a decode step, a short draft).
const DecodeMaxRows = 4

// decodeSlice is the number of keys one workgroup of decode_attn's split pass walks.
const decodeSlice = 1024

// DecodePartSize is the byte size of RecordDecode's scratch: one (max, sum, o[D]) per
// (batch, head, row, slice of 1024 keys).
func DecodePartSize(p *Params) int64 {
	s := (int64(p.Lk) + decodeSlice - 1) / decodeSlice
	return max(int64(p.B)*int64(p.H)*int64(p.Lq)*s*(int64(p.D)+2)*4, 4)
}

// RecordDecode records shaders/decode_attn.comp (groundwork of the KV-cache decode path):
// O and LSE of a few query rows (p.Lq <= DecodeMaxRows) over Lk keys, split over
// slices of the keys and merged by a second pass, reading the K and V rows of the kept
// keys only. Modes row with causality (b.Tau from select_topw or the plan) and none;
// fp32, fp16 or bf16; D a multiple of the subgroup size, at most AttnMaxD. part is
// scratch of DecodePartSize(p) bytes. Same contract as RecordAttention otherwise.
func (k *Kernels) RecordDecode(r *vk.Recorder, p *Params, params *vk.Buffer, b *AttnBuffers, part *vk.Buffer) error {
	const op = "kern: RecordDecode"
	if params == nil || b == nil {
		return fmt.Errorf("%s: nil params or buffers", op)
	}
	rowCausal := p.Mode == ModeRow && p.Causal == 1
	if !rowCausal && p.Mode != ModeNone {
		return fmt.Errorf("%s: mode %d (causal %d): row with causality or none only", op, p.Mode, p.Causal)
	}
	if p.Lq == 0 || p.Lq > DecodeMaxRows {
		return fmt.Errorf("%s: %d query rows, takes 1 to %d", op, p.Lq, DecodeMaxRows)
	}
	caps := k.d.Caps()
	sg := caps.SubgroupSize
	if caps.MinSubgroupSize != caps.MaxSubgroupSize && !(caps.SubgroupSizeControl && caps.SubgroupSizeComputeReq) {
		return fmt.Errorf("%s: %s's subgroup size varies and cannot be fixed", op, caps.Name)
	}
	if sg == 0 || p.D%sg != 0 || p.D > AttnMaxD {
		return fmt.Errorf("%s: D=%d must be a multiple of the subgroup size %d and at most %d", op, p.D, sg, AttnMaxD)
	}
	// The mode-none view of the checks (no U lists), then tau for mode row.
	pc := *p
	pc.Mode = ModeNone
	if err := checkAttention(&pc, b); err != nil {
		return err
	}
	_, _, _, st := PlanSizes(p)
	tau := b.Tau
	if rowCausal {
		if err := checkSizes(op[len("kern: "):], sizedBuf{"Tau", b.Tau, st}); err != nil {
			return err
		}
	} else {
		tau = b.Ord // never read
	}
	if err := checkSizes(op[len("kern: "):], sizedBuf{"params", params, ParamsSize}, sizedBuf{"part", part, DecodePartSize(p)}); err != nil {
		return err
	}
	slices := (p.Lk + decodeSlice - 1) / decodeSlice
	for _, g := range [][3]uint32{{slices, p.H, p.B}, {p.Lq, p.H, p.B}} {
		for i := range g {
			if g[i] > caps.MaxWorkgroupCount[i] {
				return fmt.Errorf("%s: %d workgroups in dimension %d, %s allows %d", op, g[i], i, caps.Name, caps.MaxWorkgroupCount[i])
			}
		}
	}
	split, err := k.decodePipeline("decode_attn_split", p.D, 4*sg, sg)
	if err != nil {
		return err
	}
	merge, err := k.decodePipeline("decode_attn_reduce", p.D, 64, sg)
	if err != nil {
		return err
	}
	binds := func() []vk.Binding {
		return []vk.Binding{vk.Bind(params), vk.Bind(b.Q), vk.Bind(b.K), vk.Bind(b.V), vk.Bind(b.Ord), vk.Bind(tau),
			vk.Bind(part), vk.Bind(b.O), vk.Bind(b.LSE)}
	}
	if err := r.Dispatch(split, [3]uint32{slices, p.H, p.B}, nil, binds()...); err != nil {
		return err
	}
	r.Barrier()
	return r.Dispatch(merge, [3]uint32{p.Lq, p.H, p.B}, nil, binds()...)
}

// decodePipeline returns a decode_attn variant for head dimension d and nt invocations,
// the subgroup size pinned where the device lets it vary.
func (k *Kernels) decodePipeline(name string, d, nt, sg uint32) (*vk.Pipeline, error) {
	caps := k.d.Caps()
	var required uint32
	if caps.SubgroupSizeControl && caps.SubgroupSizeComputeReq && caps.MinSubgroupSize != caps.MaxSubgroupSize {
		required = sg
	}
	spec := []uint32{d, decodeSlice, nt, sg}
	key := fmt.Sprintf("%s/sg%d/%v", name, required, spec)
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.pipes[key]; ok {
		return p, nil
	}
	code, err := shaders.Get(name)
	if err != nil {
		return nil, err
	}
	p, err := k.d.NewPipeline(vk.PipelineDesc{Name: name, SPIRV: code, Bindings: 9, Spec: spec, SubgroupSize: required})
	if err != nil {
		return nil, err
	}
	k.pipes[key] = p
	return p, nil
}
