package kern

import (
	"fmt"
	"os"
	"strings"

	"github.com/dmavk/dmavk/vk"
)

// PathCoopMat2 names shaders/attention_cm2.comp: VK_NV_cooperative_matrix2 (flexible
// dimensions, reductions, conversions, per-element operations; workgroup scope where the
// device has it), fp16 or bf16, modes row, shared and none, over keys packed by select_pack.
const PathCoopMat2 = "coopmat2"

// AttnCM2MaxD is the largest head dimension of the coopmat2 kernel: its O accumulators
// (BR x D fp32) live in registers, and Mesa's lavapipe rejects matrices of 256 columns;
// larger heads take the KHR kernel.
const AttnCM2MaxD = 128

// AttnCM2Tile is the tiling of the coopmat2 attention kernel on one device: BR query
// rows and BC keys per chunk, Threads invocations, matrices of Scope (vk.ScopeWorkgroup
// or vk.ScopeSubgroup; the shader variant follows), Shared bytes of declared shared memory.
type AttnCM2Tile struct {
	BR, BC, Threads, Shared int
	Scope                   uint32
	NW                      int  // the shape's N granularity (columns of narrow per-row statistics)
	KW                      int  // the shape's K granularity (the depth of the weights' product)
	BF16                    bool // bfloat16 operands (the _bf16 variants), else fp16
	// Wide: per-row statistics as wide as the score tile (every variant today; narrow
	// builds are for measurements).
	Wide bool
}

// variant is the SPIR-V name of the tile's shader variant.
func (t AttnCM2Tile) variant() string {
	name := "attention_cm2_sg"
	if t.Scope == vk.ScopeWorkgroup {
		name = "attention_cm2_wg"
	}
	if t.BF16 {
		name += "_bf16"
	}
	return name
}

// attnCM2Shared is the shared memory attention_cm2.comp declares on its non-finite
// route, the larger: rowT and rowTau, two chunks' keys, weights and weight parts (a
// kw x bc 16-bit matrix each), the diagonal's ords, and the fp16 P.
func attnCM2Shared(br, bc, kw int) int { return 12*br + 16*bc + 4*kw*bc + 4*bc + 8 + 2*(br*bc+1) }

// cm2Bindings is attention_cm2.comp's binding count: attention.comp's, then K and V in
// place (the diagonal of the packed modes).
const cm2Bindings = attnBindings + 2

// AttnCM2Tiling chooses the coopmat2 kernel's tile for fp16 and head dimension d, or says
// why the device cannot run it.
func AttnCM2Tiling(caps *vk.Caps, d int) (AttnCM2Tile, error) {
	return AttnCM2TilingFor(caps, d, StorageF16)
}

// AttnCM2TilingFor is AttnCM2Tiling for fp16 or bf16 storage (bf16 needs
// VK_KHR_shader_bfloat16 with its cooperative-matrix feature and a bf16*bf16+f32
// flexible shape).
func AttnCM2TilingFor(caps *vk.Caps, d int, storage Storage) (AttnCM2Tile, error) {
	fail := func(format string, a ...any) (AttnCM2Tile, error) {
		return AttnCM2Tile{}, fmt.Errorf("kern: attention (coopmat2): "+format, a...)
	}
	if !caps.CoopMat2 {
		return fail("%s has no VK_NV_cooperative_matrix2", caps.Name)
	}
	f := caps.CoopMat2Flags
	if !f.FlexibleDimensions || !f.Reductions || !f.Conversions || !f.PerElementOperations {
		return fail("%s lacks flexible dimensions, reductions, conversions or per-element operations", caps.Name)
	}
	op := vk.ComponentF16
	switch storage {
	case StorageF16:
		if !caps.Float16 {
			return fail("%s lacks shaderFloat16", caps.Name)
		}
	case StorageBF16:
		if !caps.BFloat16 || !caps.BFloat16Coop {
			return fail("%s lacks bfloat16 cooperative matrices", caps.Name)
		}
		op = vk.ComponentBF16
	default:
		return fail("fp16 or bf16 storage only, got %v", storage)
	}
	bf16 := storage == StorageBF16
	if d < 16 || d > AttnCM2MaxD || d%16 != 0 {
		return fail("head dimension D=%d unsupported (need a multiple of 16 in [16, %d])", d, AttnCM2MaxD)
	}
	if m := caps.CoopMat2Props.FlexibleDimensionsMaxDimension; m != 0 && uint32(d) > m {
		return fail("D=%d exceeds the device's largest flexible dimension %d", d, m)
	}
	fits := func(s vk.CoopMatFlexShape, br, bc int) bool {
		g := func(x int, gr uint32) bool { return gr != 0 && x%int(gr) == 0 }
		// S = Q K^T: BR x DH x BC; P 1: BR x BC x BC; O += P V: BR x BC x DH.
		return g(br, s.MGranularity) && g(bc, s.NGranularity) && g(d, s.NGranularity) &&
			g(d, s.KGranularity) && g(bc, s.KGranularity)
	}
	budget := int(caps.MaxSharedMemory)
	want := cm2TileOverride()
	// Workgroup-scope variants load K and V through tensor layouts; the subgroup-scope
	// ones (Mesa's lavapipe, which has no tensor addressing) through plain loads.
	if f.WorkgroupScope && f.TensorAddressing && (want == nil || want.Scope != vk.ScopeSubgroup) {
		// Workgroup scope (the driver stages K and V through shared memory): the largest
		// tile up to 64 x 64 at up to 128 invocations. DMAVK_CM2_TILE=BRxBCxTHREADS picks
		// another entry and tile (tuning).
		wb := budget - int(caps.CoopMat2Props.WorkgroupScopeReservedSharedMemory)
		var best *AttnCM2Tile
		for _, e := range workgroupEntries(caps, op) {
			s, nt := e.shape, e.threads
			for _, br := range []int{128, 64, 32, 16} {
				for _, bc := range []int{128, 64, 32, 16} {
					// At most 64 x 64 and 128 invocations by default: on the H200 the wide
					// statistics make larger tiles spill (64x64 at 128: 4.0 ms dense causal
					// 16K, 64x128 at 256: 5.7 ms, bench/NOTES.md); the others for tuning only.
					if want == nil && (br > 64 || bc > 64 || nt > 128) {
						continue
					}
					t := AttnCM2Tile{BR: br, BC: bc, Threads: nt, Shared: attnCM2Shared(br, bc, int(s.KGranularity)), Scope: vk.ScopeWorkgroup,
						NW: int(s.NGranularity), KW: int(s.KGranularity), BF16: bf16,
						Wide: true}
					if !fits(s, br, bc) || t.Shared > wb {
						continue
					}
					if want != nil {
						if t.BR == want.BR && t.BC == want.BC && t.Threads == want.Threads {
							return t, nil
						}
						continue
					}
					if best == nil || t.BR*t.BC > best.BR*best.BC || (t.BR*t.BC == best.BR*best.BC && t.Threads > best.Threads) {
						best = &t
					}
				}
			}
		}
		if want != nil {
			return fail("DMAVK_CM2_TILE=%dx%dx%d fits no workgroup-scope shape of %s for D=%d", want.BR, want.BC, want.Threads, caps.Name, d)
		}
		if best != nil {
			return *best, nil
		}
	}
	if s, ok := caps.HasCoopMatFlex(op, op, vk.ComponentF32, vk.ScopeSubgroup); ok {
		sg := int(caps.SubgroupSize)
		if caps.MinSubgroupSize != caps.MaxSubgroupSize && !(caps.SubgroupSizeControl && caps.SubgroupSizeComputeReq) {
			return fail("%s's subgroup size varies and cannot be fixed", caps.Name)
		}
		// Chunks of the N granularity first: on Mesa 26.1's lavapipe (8x8x8 granularity)
		// 16x16 score tiles give wrong rows while 16x8 and 8x16 are exact (seen with
		// this kernel; not isolated further), and 16 rows still share each K/V load.
		// DMAVK_CM2_TILE=BRxBCxTHREADSxsg forces subgroup scope and this tile (tuning).
		brs, bcs := []int{8, 16}, []int{int(s.NGranularity), 16}
		if want != nil {
			brs, bcs = []int{want.BR}, []int{want.BC}
		}
		for _, br := range brs {
			for _, bc := range bcs {
				t := AttnCM2Tile{BR: br, BC: bc, Threads: sg, Shared: attnCM2Shared(br, bc, int(s.KGranularity)), Scope: vk.ScopeSubgroup,
					NW: int(s.NGranularity), KW: int(s.KGranularity), BF16: bf16, Wide: true}
				if fits(s, br, bc) && t.Shared <= budget && 64%br == 0 && 64%bc == 0 {
					return t, nil
				}
			}
		}
	}
	return fail("%s has no %v*%v+f32 flexible shape that fits D=%d", caps.Name, op, op, d)
}

// cm2Eligible says whether the coopmat2 kernel computes p (mode, dtype, layout), or why not.
func cm2Eligible(caps *vk.Caps, p *Params) (AttnCM2Tile, error) {
	switch p.Mode {
	case ModeRow, ModeShared, ModeNone:
	default:
		return AttnCM2Tile{}, fmt.Errorf("kern: attention (coopmat2): mode %d is not row, shared or none", p.Mode)
	}
	t, err := AttnCM2TilingFor(caps, int(p.D), p.Storage)
	if err != nil {
		return t, err
	}
	if p.Mode == ModeRow || p.Mode == ModeShared {
		// GK and GV split by (batch, bias head) pairs, a pair's regions in one buffer.
		if n := PackSizeRange(p, 1); n > cm2PackLimit(caps) {
			return t, fmt.Errorf("kern: attention (coopmat2): one head's packed keys need %d bytes, over %s's largest allocation or binding", n, caps.Name)
		}
	}
	if p.Mode == ModeNone || p.Causal != 0 {
		// K and V are read in place (mode none; the diagonal with causality) by whole
		// chunks of rows, 16-byte aligned.
		for _, v := range []View{p.K, p.V} {
			if v.Off%8 != 0 || v.SB%8 != 0 || v.SL%8 != 0 || v.SH%8 != 0 {
				return t, fmt.Errorf("kern: attention (coopmat2): K/V offsets and strides not multiples of 8 elements")
			}
		}
		if int(p.Lk) < t.BC {
			return t, fmt.Errorf("kern: attention (coopmat2): Lk=%d below one chunk (%d keys)", p.Lk, t.BC)
		}
	}
	return t, nil
}

// CM2Buffers are the coopmat2 kernel's own buffers for one call: the packed keys and
// values (modes row and shared; see select_pack), the flags of non-finite values
// (select_vcheck: in V or K per (batch, kv head), from word 0; in Q per (batch, head),
// from word cm2FlagQ) and the parameter blocks of the K and Q checks. GK and GV are
// split by (batch, bias head) pairs over as many buffers as the device's allocation and
// binding limits need: GK[i] and GV[i] hold the pairs [i*PairsPer, min((i+1)*PairsPer, B*Hb)).
type CM2Buffers struct {
	GK, GV   []*vk.Buffer
	PairsPer int
	VFlags   *vk.Buffer
	Check    *vk.Buffer
}

// cm2FlagQ is the first word of Q's flags in CM2Buffers.VFlags.
func cm2FlagQ(p *Params) int64 { return bwdFlagWords(int64(p.B) * int64(p.Hkv)) }

// cm2FlagsSize is the size of CM2Buffers.VFlags in bytes.
func cm2FlagsSize(p *Params) int64 { return 4 * (cm2FlagQ(p) + bwdFlagWords(int64(p.B)*int64(p.H))) }

// cm2MaxPackBytes caps the size of one GK/GV buffer below the device's limits (tests
// set it to force the split; 0: the limits alone).
var cm2MaxPackBytes int64

// cm2PackLimit is the largest GK/GV buffer the device (and cm2MaxPackBytes) allows.
func cm2PackLimit(caps *vk.Caps) int64 {
	lim := min(int64(caps.MaxAllocationSize), int64(caps.MaxStorageBufferRange))
	if caps.MaxAllocationSize == 0 {
		lim = int64(caps.MaxStorageBufferRange)
	}
	if cm2MaxPackBytes > 0 {
		lim = min(lim, cm2MaxPackBytes)
	}
	return lim
}

// NewCM2Buffers allocates the coopmat2 buffers for p.
func NewCM2Buffers(d *vk.Device, p *Params) (*CM2Buffers, error) {
	c := &CM2Buffers{}
	fail := func(err error) (*CM2Buffers, error) {
		c.Close()
		return nil, fmt.Errorf("kern: coopmat2 buffers: %w", err)
	}
	var err error
	if c.VFlags, err = d.NewBuffer(cm2FlagsSize(p)); err != nil {
		return fail(err)
	}
	if c.Check, err = d.NewBuffer(2 * bwdCheckStride); err != nil {
		return fail(err)
	}
	pairs := int(p.B * p.Hb)
	if (p.Mode != ModeRow && p.Mode != ModeShared) || pairs == 0 {
		return c, nil
	}
	caps := d.Caps()
	per := PackSizeRange(p, 1)
	if per == 0 || per > cm2PackLimit(&caps) {
		return fail(fmt.Errorf("one (batch, bias head) pair needs %d bytes of packed keys, over %s's limit", per, caps.Name))
	}
	c.PairsPer = int(min(int64(pairs), cm2PackLimit(&caps)/per))
	for first := 0; first < pairs; first += c.PairsPer {
		n := min(c.PairsPer, pairs-first)
		for _, dst := range []*[]*vk.Buffer{&c.GK, &c.GV} {
			b, err := d.NewBuffer(PackSizeRange(p, n))
			if err != nil {
				return fail(err)
			}
			*dst = append(*dst, b)
		}
	}
	return c, nil
}

// Close releases the buffers.
func (c *CM2Buffers) Close() error {
	for _, b := range append(append(c.GK, c.GV...), c.VFlags, c.Check) {
		if b != nil {
			b.Close()
		}
	}
	c.GK, c.GV, c.VFlags, c.Check = nil, nil, nil, nil
	return nil
}

// cm2Pipeline returns the coopmat2 attention pipeline of a tile (subgroup size pinned
// where the device lets it vary and the subgroup-scope variant needs it).
// nonFinite picks the route of the heads whose V holds a NaN or an infinity.
func (k *Kernels) cm2Pipeline(d uint32, t AttnCM2Tile, nonFinite bool) (*vk.Pipeline, error) {
	route := uint32(0)
	if nonFinite {
		route = 1
	}
	spec := []uint32{d, uint32(t.BR), uint32(t.BC), uint32(t.Threads), uint32(t.NW), route, uint32(t.KW)}
	key := pipeKey{name: t.variant(), bindings: cm2Bindings, push: 8}
	if t.Scope == vk.ScopeSubgroup {
		key.subgroup = k.pinnedSubgroup(uint32(t.Threads))
	}
	// DMAVK_CM2_SPV names a SPIR-V file built from the same source (debugging and
	// ablation builds, bench/NOTES.md) that replaces the embedded variant.
	var code func() ([]byte, error)
	if path := os.Getenv("DMAVK_CM2_SPV"); path != "" {
		code = func() ([]byte, error) {
			raw, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("kern: DMAVK_CM2_SPV: %w", err)
			}
			return raw, nil
		}
	}
	return k.pipeline(key, spec, code)
}

// recordAttentionCM2 records select_vcheck, select_pack (modes row and shared) and
// shaders/attention_cm2.comp; same contract as RecordAttention, plus b.CM2.
func (k *Kernels) recordAttentionCM2(r *vk.Recorder, p *Params, params *vk.Buffer, b *AttnBuffers, stamp func(string) error) error {
	caps := k.d.Caps()
	tile, err := cm2Eligible(&caps, p)
	if err != nil {
		return err
	}
	if err := checkAttention(p, b); err != nil {
		return err
	}
	c := b.CM2
	packed := p.Mode == ModeRow || p.Mode == ModeShared
	pairs := int(p.B * p.Hb)
	if c == nil || c.VFlags == nil || c.Check == nil || (packed && (c.PairsPer < 1 || len(c.GK) != (pairs+c.PairsPer-1)/c.PairsPer || len(c.GV) != len(c.GK))) {
		return fmt.Errorf("kern: attention (coopmat2): AttnBuffers.CM2 missing or not made for these params (NewCM2Buffers)")
	}
	if err := k.recordCM2Check(r, p, params, b, c); err != nil {
		return err
	}
	// One dispatch per GK/GV buffer; workgroups of the other buffers' heads return at once.
	type part struct {
		k, v         *vk.Buffer
		first, count int
	}
	parts := []part{{b.K, b.V, 0, pairs}}
	if packed {
		parts = parts[:0]
		for i := range c.GK {
			first := i * c.PairsPer
			n := min(c.PairsPer, pairs-first)
			if err := k.RecordPackRange(r, p, params, b.K, b.V, &PlanBuffers{U: b.U, UCount: b.UCount}, c.GK[i], c.GV[i], first, n); err != nil {
				return err
			}
			parts = append(parts, part{c.GK[i], c.GV[i], first, n})
		}
	}
	if err := stamp("pack"); err != nil {
		return err
	}
	// Two routes over the same grid, each returning at once for the other's heads: the
	// heads with finite V, and those with a NaN or an infinity in V.
	for _, nonFinite := range []bool{false, true} {
		pipe, err := k.cm2Pipeline(p.D, tile, nonFinite)
		if err != nil {
			return err
		}
		for _, x := range parts {
			// The same bindings as the other kernels, with the packed (or in-place) K and V
			// and the flags of non-finite V in the mask's slot (explicit masks never come here).
			bb := *b
			bb.K, bb.V, bb.Mask, bb.Bias = x.k, x.v, c.VFlags, nil
			if err := dispatchAttention(r, caps, p, params, &bb, pipe, tile.BR, pairRange(x.first, x.count), b.K, b.V); err != nil {
				return err
			}
		}
	}
	return nil
}

// recordCM2Check records the non-finite checks of V, K (both into the words of
// (batch, kv head)) and Q (from word cm2FlagQ) into c.VFlags.
func (k *Kernels) recordCM2Check(r *vk.Recorder, p *Params, params *vk.Buffer, b *AttnBuffers, c *CM2Buffers) error {
	pk, pq := *p, *p
	pk.V = p.K
	pq.V, pq.Lk, pq.Hkv = p.Q, p.Lq, p.H
	if err := r.Update(c.Check, 0, pk.Bytes()); err != nil {
		return err
	}
	if err := r.Update(c.Check, bwdCheckStride, pq.Bytes()); err != nil {
		return err
	}
	if err := r.Fill(c.VFlags, 0, cm2FlagsSize(p), 0); err != nil {
		return err
	}
	r.Barrier()
	checks := []struct {
		p      *Params
		params vk.Binding
		buf    *vk.Buffer
		flag   int64
	}{
		{p, vk.Bind(params), b.V, 0},
		{&pk, vk.Binding{Buf: c.Check, Offset: 0, Size: ParamsSize}, b.K, 0},
		{&pq, vk.Binding{Buf: c.Check, Offset: bwdCheckStride, Size: ParamsSize}, b.Q, cm2FlagQ(p)},
	}
	maxGroups := int64(k.d.Caps().MaxWorkgroupCount[0])
	for _, x := range checks {
		flags := vk.Binding{Buf: c.VFlags, Offset: 4 * x.flag, Size: VCheckSize(x.p)}
		if err := k.dispatchVCheck(r, "attention (coopmat2) check", x.p, x.params, x.buf, flags, maxGroups); err != nil {
			return err
		}
	}
	r.Barrier()
	return nil
}

// wgEntry is a workgroup-scope flexible shape and the invocations it runs with.
type wgEntry struct {
	shape   vk.CoopMatFlexShape
	threads int
}

// workgroupEntries lists the device's workgroup-scope shapes of op x op + fp32 -> fp32
// (not saturating) whose invocation count (128 where the entry leaves it open) the
// device's limits allow.
func workgroupEntries(caps *vk.Caps, op vk.ComponentType) []wgEntry {
	var es []wgEntry
	for _, s := range caps.CoopMatFlexShapes {
		if s.Scope != vk.ScopeWorkgroup || s.A != op || s.B != op ||
			s.C != vk.ComponentF32 || s.Result != vk.ComponentF32 || s.Saturating {
			continue
		}
		nt := int(s.WorkgroupInvocations)
		if nt == 0 {
			nt = 128
		}
		if mx := int(caps.CoopMat2Props.WorkgroupScopeMaxWorkgroupSize); (mx != 0 && nt > mx) || uint32(nt) > caps.MaxWorkgroupInvocations {
			continue
		}
		es = append(es, wgEntry{s, nt})
	}
	return es
}

// cm2TileOverride parses DMAVK_CM2_TILE ("64x64x128": rows, keys per chunk, invocations,
// workgroup scope; "16x64x32xsg": subgroup scope), a tuning knob; nil when unset or
// malformed.
func cm2TileOverride() *AttnCM2Tile {
	v := os.Getenv("DMAVK_CM2_TILE")
	if v == "" {
		return nil
	}
	t := AttnCM2Tile{Scope: vk.ScopeWorkgroup}
	if sgv, ok := strings.CutSuffix(v, "xsg"); ok {
		v, t.Scope = sgv, vk.ScopeSubgroup
	}
	if n, err := fmt.Sscanf(v, "%dx%dx%d", &t.BR, &t.BC, &t.Threads); n != 3 || err != nil {
		return nil
	}
	return &t
}
