package kern

import (
	"fmt"
	"os"
	"strings"

	"github.com/dmavk/dmavk/vk"
)

// BwdCM2Tile is the tiling of the coopmat2 backward (shaders/attention_bwd_cm2.comp) on
// one device: the row pass takes query tiles of BR rows and chunks of BC keys, the key
// pass tiles of KR packed keys and chunks of KC rows; Threads invocations, matrices of
// Scope, NW columns of per-row statistics (the N granularity), bf16 or fp16 operands.
type BwdCM2Tile struct {
	BR, BC, KR, KC, Threads int
	Scope                   uint32
	NW                      int
	BF16                    bool
}

func (t BwdCM2Tile) variant(pass string) string {
	name := "attention_bwd_cm2_" + pass + "_sg"
	if t.Scope == vk.ScopeWorkgroup {
		name = "attention_bwd_cm2_" + pass + "_wg"
	}
	if t.BF16 {
		name += "_bf16"
	}
	return name
}

// bwdCM2RowShared and bwdCM2KeyShared are the bytes of shared memory the two passes
// declare on their exact route (the fast route declares 4 BR BC bytes fewer).
func bwdCM2RowShared(br, bc int) int { return 12*br + 16*bc + 4*br*bc + 12 }
func bwdCM2KeyShared(kr, kc int) int { return 12*kr + 32*kc + 4*kr*kc + 36 }

// bwdCM2Bindings is the binding count of attention_bwd_cm2.comp and its reduce pass.
const bwdCM2Bindings = 20

// The non-finite flags of the coopmat2 backward (binding 19, BwdCM2Buffers.Flags):
// uint32 words, K's [B][Hkv] from word 0, Q's [B][H] from bwdFlagQ, dO's from bwdFlagDO;
// each list starts on a 256-byte boundary (so that select_vcheck can write it through a
// binding of its own: no device asks more of storage-buffer offsets).
func bwdFlagQ(p *Params) int64  { return bwdFlagWords(int64(p.B) * int64(p.Hkv)) }
func bwdFlagDO(p *Params) int64 { return bwdFlagQ(p) + bwdFlagWords(int64(p.B)*int64(p.H)) }

// bwdFlagsSize is the byte size of BwdCM2Buffers.Flags.
func bwdFlagsSize(p *Params) int64 { return 4 * (bwdFlagDO(p) + bwdFlagWords(int64(p.B)*int64(p.H))) }

// bwdFlagWords is the words a list of n flags takes: whole 256-byte blocks.
func bwdFlagWords(n int64) int64 { return (n + 63) / 64 * 64 }

// bwdCheckStride is the distance of the three parameter blocks in BwdCM2Buffers.Check
// (the select_vcheck parameters of K, Q and dO), a multiple of 256 bytes.
const bwdCheckStride = (ParamsSize + 255) / 256 * 256

// BwdCM2Tiling chooses the coopmat2 backward's tiles for head dimension d and storage
// (fp16 or bf16), or says why the device cannot run it. The device needs what the
// coopmat2 forward needs (AttnCM2TilingFor).
func BwdCM2Tiling(caps *vk.Caps, d int, storage Storage) (BwdCM2Tile, error) {
	fail := func(format string, a ...any) (BwdCM2Tile, error) {
		return BwdCM2Tile{}, fmt.Errorf("kern: backward (coopmat2): "+format, a...)
	}
	fwd, err := AttnCM2TilingFor(caps, d, storage)
	if err != nil {
		return BwdCM2Tile{}, err
	}
	op := vk.ComponentF16
	if storage == StorageBF16 {
		op = vk.ComponentBF16
	}
	fits := func(s vk.CoopMatFlexShape, m, n int) bool {
		g := func(x int, gr uint32) bool { return gr != 0 && x%int(gr) == 0 }
		// S = A B^T: m x d x n; dQ (dK, dV) += dS B: m x n x d. m divides 64 (selection
		// blocks and packed regions are multiples of 64 rows).
		return 64%m == 0 && g(m, s.MGranularity) && g(n, s.NGranularity) && g(d, s.NGranularity) &&
			g(d, s.KGranularity) && g(n, s.KGranularity)
	}
	budget := int(caps.MaxSharedMemory)
	want := bwdCM2TileOverride()
	if fwd.Scope == vk.ScopeWorkgroup {
		// Of the workgroup-scope entries, the largest tiles, then the most invocations
		// (as the forward: the driver then stages the operands through shared memory).
		wb := budget - int(caps.CoopMat2Props.WorkgroupScopeReservedSharedMemory)
		var best *BwdCM2Tile
		for _, e := range workgroupEntries(caps, op) {
			s, nt := e.shape, e.threads
			if want != nil && nt != want.Threads {
				continue
			}
			// 64 x 64 tiles first in both passes: the score, P, dP and dS tiles and the
			// two BR x D accumulators of the key pass share the registers.
			cands := [][2]int{{64, 64}, {64, 32}, {32, 64}, {32, 32}, {16, 32}, {16, 16}}
			if want != nil {
				cands = [][2]int{{want.BR, want.BC}}
			}
			t := BwdCM2Tile{Threads: nt, Scope: vk.ScopeWorkgroup, NW: int(s.NGranularity), BF16: storage == StorageBF16}
			for _, c := range cands {
				if fits(s, c[0], c[1]) && bwdCM2RowShared(c[0], c[1]) <= wb {
					t.BR, t.BC = c[0], c[1]
					break
				}
			}
			if want != nil {
				cands = [][2]int{{want.KR, want.KC}}
			}
			for _, c := range cands {
				if fits(s, c[0], c[1]) && bwdCM2KeyShared(c[0], c[1]) <= wb {
					t.KR, t.KC = c[0], c[1]
					break
				}
			}
			if t.BR == 0 || t.KR == 0 {
				continue
			}
			size := func(x *BwdCM2Tile) int { return x.BR*x.BC + x.KR*x.KC }
			if best == nil || size(&t) > size(best) || (size(&t) == size(best) && t.Threads > best.Threads) {
				best = &t
			}
		}
		if best != nil {
			return *best, nil
		}
		if want != nil {
			return fail("DMAVK_CM2_BWD_TILE=%dx%dx%dx%dx%d fits no workgroup-scope shape of %s for D=%d", want.BR, want.BC, want.KR, want.KC, want.Threads, caps.Name, d)
		}
	}
	s, ok := caps.HasCoopMatFlex(op, op, vk.ComponentF32, vk.ScopeSubgroup)
	if !ok {
		return fail("%s has no %v*%v+f32 flexible shape", caps.Name, op, op)
	}
	// Subgroup scope: tiles of the N granularity (Mesa 26.1's lavapipe, 8x8x8: 16x16
	// score tiles give wrong rows there, see AttnCM2TilingFor).
	n := int(s.NGranularity)
	t := BwdCM2Tile{BR: 8, BC: n, KR: 8, KC: n, Threads: int(caps.SubgroupSize), Scope: vk.ScopeSubgroup, NW: n,
		BF16: storage == StorageBF16}
	if want != nil && want.Scope == vk.ScopeSubgroup {
		t.BR, t.BC, t.KR, t.KC = want.BR, want.BC, want.KR, want.KC
	}
	if !fits(s, t.BR, t.BC) || !fits(s, t.KR, t.KC) || bwdCM2RowShared(t.BR, t.BC) > budget || bwdCM2KeyShared(t.KR, t.KC) > budget {
		return fail("%s has no subgroup-scope shape that fits tiles %dx%d and %dx%d at D=%d", caps.Name, t.BR, t.BC, t.KR, t.KC, d)
	}
	return t, nil
}

// bwdCM2TileOverride parses DMAVK_CM2_BWD_TILE ("64x64x64x64x256": row-pass rows and
// keys, key-pass keys and rows, invocations, workgroup scope; a trailing "xsg": subgroup
// scope), a tuning knob; nil when unset or malformed.
func bwdCM2TileOverride() *BwdCM2Tile {
	v := os.Getenv("DMAVK_CM2_BWD_TILE")
	if v == "" {
		return nil
	}
	t := BwdCM2Tile{Scope: vk.ScopeWorkgroup}
	if sgv, ok := strings.CutSuffix(v, "xsg"); ok {
		v, t.Scope = sgv, vk.ScopeSubgroup
	}
	if n, err := fmt.Sscanf(v, "%dx%dx%dx%dx%d", &t.BR, &t.BC, &t.KR, &t.KC, &t.Threads); n != 5 || err != nil {
		return nil
	}
	return &t
}

// bwdCM2Partials is the byte size of one of PdK and PdV (float32 [R][NP][D]) for p.
func bwdCM2Partials(p *Params) int64 {
	return int64(PackRegions(p)) * int64(PackRows(p)) * int64(p.D) * 4
}

// bwdCM2Eligible says whether the coopmat2 backward computes p with dO through doView,
// and its tile, or why not.
func bwdCM2Eligible(caps *vk.Caps, p *Params, doView View) (BwdCM2Tile, error) {
	fail := func(format string, a ...any) (BwdCM2Tile, error) {
		return BwdCM2Tile{}, fmt.Errorf("kern: backward (coopmat2): "+format, a...)
	}
	switch p.Mode {
	case ModeRow, ModeShared, ModeNone:
	default:
		return fail("mode %d is not row, shared or none", p.Mode)
	}
	t, err := BwdCM2Tiling(caps, int(p.D), p.Storage)
	if err != nil {
		return t, err
	}
	// Q and dO (and, in mode none, K and V) are read in place by whole chunks of rows.
	aligned := func(v View, l uint32, h uint32) bool {
		return v.Off%8 == 0 && (p.B == 1 || v.SB%8 == 0) && (l == 1 || v.SL%8 == 0) && (h == 1 || v.SH%8 == 0)
	}
	if !aligned(p.Q, p.Lq, p.H) || !aligned(doView, p.Lq, p.H) {
		return fail("Q or dO offsets and strides not multiples of 8 elements")
	}
	if int(p.Lq) < max(t.KC, 1) {
		return fail("Lq=%d below one row chunk (%d rows)", p.Lq, t.KC)
	}
	lim := cm2PackLimit(caps)
	switch p.Mode {
	case ModeNone:
		if !aligned(p.K, p.Lk, p.Hkv) || !aligned(p.V, p.Lk, p.Hkv) {
			return fail("K/V offsets and strides not multiples of 8 elements")
		}
		if int(p.Lk) < max(t.BC, t.KR) {
			return fail("Lk=%d below one chunk (%d keys)", p.Lk, max(t.BC, t.KR))
		}
	default:
		if n := PackSize(p); n > lim {
			return fail("the packed keys need %d bytes, over %s's largest allocation or binding", n, caps.Name)
		}
		if n := bwdCM2Partials(p); n > lim || n/4 > 1<<32-1 {
			return fail("the per-region gradients need %d bytes, over %s's largest allocation or binding", n, caps.Name)
		}
		if g := PackRows(p) / t.KR; uint32(g) > caps.MaxWorkgroupCount[0] || uint32(PackRegions(p)) > caps.MaxWorkgroupCount[1] {
			return fail("%d regions of %d key tiles exceed %s's workgroup counts", PackRegions(p), g, caps.Name)
		}
	}
	return t, nil
}

// BackwardPath says which backward RecordBackward runs for p when given a BwdCM2Buffers:
// PathCoopMat2 where the coopmat2 backward takes p (dO through doView), else PathCoopMat
// where the KHR cooperative-matrix backward does (fp16, modes row and shared), else
// PathPortable. SetPortableOnly and SetNoCoopMat2 apply to it as to AttentionPath.
func (k *Kernels) BackwardPath(p *Params, doView View) string {
	k.mu.Lock()
	portable, noCM2 := k.portableOnly, k.noCoopMat2
	k.mu.Unlock()
	if portable || p == nil || !p.Storage.Packed() {
		return PathPortable
	}
	caps := k.d.Caps()
	// A driver that cannot build the kernels for a tile leaves the call to the next
	// path (Grads.Path tells), rather than failing it.
	if !noCM2 {
		if tile, err := bwdCM2Eligible(&caps, p, doView); err == nil {
			if _, _, err := k.bwdCM2Pipelines(p, tile); err == nil {
				return PathCoopMat2
			}
		}
	}
	if tile, err := bwdCMEligible(&caps, p, doView); err == nil {
		if _, _, err := k.bwdCMPipelines(p, tile); err == nil {
			return PathCoopMat
		}
	}
	return PathPortable
}

// bwdCM2Pipelines returns the row and key passes' pipelines for p and tile (compiled
// once, then cached): each pass's fast route, then its exact route (the tiles with a
// non-finite operand).
func (k *Kernels) bwdCM2Pipelines(p *Params, tile BwdCM2Tile) (row, key []*vk.Pipeline, err error) {
	pipe := func(pass string, m, n int, exact uint32) (*vk.Pipeline, error) {
		key := pipeKey{name: tile.variant(pass), bindings: bwdCM2Bindings, push: bwdPush}
		if tile.Scope == vk.ScopeSubgroup {
			key.subgroup = k.pinnedSubgroup(uint32(tile.Threads))
		}
		return k.pipeline(key, []uint32{p.D, uint32(m), uint32(n), uint32(tile.Threads), uint32(tile.NW), exact}, nil)
	}
	for _, exact := range []uint32{0, 1} {
		rp, err := pipe("row", tile.BR, tile.BC, exact)
		if err != nil {
			return nil, nil, err
		}
		kp, err := pipe("key", tile.KR, tile.KC, exact)
		if err != nil {
			return nil, nil, err
		}
		row, key = append(row, rp), append(key, kp)
	}
	return row, key, nil
}

// BwdCM2Buffers are the coopmat2 backward's own buffers for one call: the packed keys and
// values (modes row and shared, select_pack's GK and GV, one buffer each) and the key
// pass's per-region sums (PdK, PdV float32 [R][NP][D], PdD [R][NP]). Mode none has none
// of them (its key pass reads K and V in place and writes the gradients itself).
//
// Flags and Check (every mode) hold the non-finite check of K, Q and dO that sends
// tiles to the exact route: the flags, and the check's parameters.
type BwdCM2Buffers struct {
	GK, GV, PdK, PdV, PdD *vk.Buffer
	Flags, Check          *vk.Buffer
	// packed: GK and GV came packed (NewBwdCM2BuffersPacked): no pack pass, and Close
	// leaves them to their owner.
	packed bool
}

// NewBwdCM2Buffers allocates the coopmat2 backward's buffers for p. Their size is linear
// in Lk: per (batch, bias head) about 2 (Lk + NBlocks w) rows of D elements, 2 bytes
// each for GK and GV and 4 for PdK and PdV.
func NewBwdCM2Buffers(d *vk.Device, p *Params) (*BwdCM2Buffers, error) {
	return newBwdCM2Buffers(d, p, nil, nil)
}

// newBwdCM2Buffers allocates the buffers, GK and GV unless given (then packed).
func newBwdCM2Buffers(d *vk.Device, p *Params, gk, gv *vk.Buffer) (*BwdCM2Buffers, error) {
	c := &BwdCM2Buffers{GK: gk, GV: gv, packed: gk != nil}
	type want struct {
		dst **vk.Buffer
		n   int64
	}
	bufs := []want{{&c.Flags, bwdFlagsSize(p)}, {&c.Check, 3 * bwdCheckStride}}
	if p.Mode == ModeRow || p.Mode == ModeShared {
		rows := int64(PackRegions(p)) * int64(PackRows(p))
		bufs = append(bufs, want{&c.GK, PackSize(p)}, want{&c.GV, PackSize(p)}, want{&c.PdK, bwdCM2Partials(p)},
			want{&c.PdV, bwdCM2Partials(p)}, want{&c.PdD, rows * 4})
	}
	for _, x := range bufs {
		if *x.dst != nil {
			continue // given
		}
		b, err := d.NewBuffer(max(x.n, 4))
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("kern: coopmat2 backward buffers: %w", err)
		}
		*x.dst = b
	}
	return c, nil
}

// NewBwdCM2BuffersPacked is NewBwdCM2Buffers with the keys and values already packed:
// gk and gv hold what RecordPackRange wrote for p's plan, all B*Hb pairs in one buffer
// each (the coopmat2 forward's CM2Buffers with PairsPer >= B*Hb). The backward then
// skips its pack pass; Close leaves gk and gv open.
func NewBwdCM2BuffersPacked(d *vk.Device, p *Params, gk, gv *vk.Buffer) (*BwdCM2Buffers, error) {
	if p.Mode != ModeRow && p.Mode != ModeShared {
		return nil, fmt.Errorf("kern: coopmat2 backward buffers: mode %d has no packed keys", p.Mode)
	}
	if gk == nil || gv == nil || gk.Size() < PackSize(p) || gv.Size() < PackSize(p) {
		return nil, fmt.Errorf("kern: coopmat2 backward buffers: packed keys and values need %d bytes each", PackSize(p))
	}
	return newBwdCM2Buffers(d, p, gk, gv)
}

// Close releases the buffers.
func (c *BwdCM2Buffers) Close() error {
	if c == nil {
		return nil
	}
	own := []*vk.Buffer{c.PdK, c.PdV, c.PdD, c.Flags, c.Check}
	if !c.packed {
		own = append(own, c.GK, c.GV)
	}
	for _, b := range own {
		if b != nil {
			b.Close()
		}
	}
	*c = BwdCM2Buffers{}
	return nil
}

// recordBackwardCM2 records the coopmat2 backward: the pack of the kept keys (modes row
// and shared), the row pass (dQ and Dsum), the key pass (dK, dV, dDelta per packed
// region, or in place in mode none) and the reduce pass that adds each key's regions.
// No float atomics anywhere: both modes of RecordBackward give bit-identical results
// run to run here. stamp is called after each pass ("bwd-pack", "bwd-rows", "bwd-keys",
// "bwd-reduce").
func (k *Kernels) recordBackwardCM2(r *vk.Recorder, p *Params, params *vk.Buffer, b *BwdBuffers, stamp func(string) error) error {
	caps := k.d.Caps()
	tile, err := bwdCM2Eligible(&caps, p, b.DOView)
	if err != nil {
		return err
	}
	c := b.CM2
	if err := checkSizes("backward (coopmat2)", sizedBuf{"CM2.Flags", c.Flags, bwdFlagsSize(p)},
		sizedBuf{"CM2.Check", c.Check, 3 * bwdCheckStride}); err != nil {
		return err
	}
	packed := p.Mode == ModeRow || p.Mode == ModeShared
	if packed {
		rows := int64(PackRegions(p)) * int64(PackRows(p))
		if err := checkSizes("backward (coopmat2)",
			sizedBuf{"CM2.GK", c.GK, PackSize(p)}, sizedBuf{"CM2.GV", c.GV, PackSize(p)},
			sizedBuf{"CM2.PdK", c.PdK, bwdCM2Partials(p)}, sizedBuf{"CM2.PdV", c.PdV, bwdCM2Partials(p)},
			sizedBuf{"CM2.PdD", c.PdD, rows * 4}); err != nil {
			return err
		}
	}
	rowPipes, keyPipes, err := k.bwdCM2Pipelines(p, tile)
	if err != nil {
		return err
	}
	return k.recordBackwardPasses(r, p, params, b, stamp, rowPipes, keyPipes, tile.BR, tile.KR)
}

// recordBwdCheck records the non-finite check of K (per kv head), Q and dO (per query
// head) into c.Flags: select_vcheck once per tensor, each with p's parameters turned
// to that tensor in c.Check.
func (k *Kernels) recordBwdCheck(r *vk.Recorder, p *Params, b *BwdBuffers) error {
	c := b.CM2
	pk, pq, pd := *p, *p, *p
	pk.V = p.K
	pq.V, pq.Lk, pq.Hkv = p.Q, p.Lq, p.H
	pd.V, pd.Lk, pd.Hkv = b.DOView, p.Lq, p.H
	checks := []struct {
		p    *Params
		buf  *vk.Buffer
		flag int64
	}{{&pk, b.K, 0}, {&pq, b.Q, bwdFlagQ(p)}, {&pd, b.DO, bwdFlagDO(p)}}
	for i, x := range checks {
		if err := r.Update(c.Check, int64(i)*bwdCheckStride, x.p.Bytes()); err != nil {
			return err
		}
	}
	if err := r.Fill(c.Flags, 0, bwdFlagsSize(p), 0); err != nil {
		return err
	}
	r.Barrier()
	maxGroups := int64(k.d.Caps().MaxWorkgroupCount[0])
	for i, x := range checks {
		params := vk.Binding{Buf: c.Check, Offset: int64(i) * bwdCheckStride, Size: ParamsSize}
		flags := vk.Binding{Buf: c.Flags, Offset: 4 * x.flag, Size: VCheckSize(x.p)}
		if err := k.dispatchVCheck(r, "backward (coopmat2) check", x.p, params, x.buf, flags, maxGroups); err != nil {
			return err
		}
	}
	r.Barrier()
	return nil
}

// recordBackwardPasses records the tensor-core backward's passes (coopmat2 or KHR: the
// same bindings and buffers): the pack (unless b.CM2 came packed), the row pass over
// query tiles of br rows, the key pass over tiles of kr packed keys (or keys, mode
// none) and, in modes row and shared, the reduce pass.
//
// rowPipes and keyPipes: one pipeline per pass (KHR), or the fast and the exact route
// (coopmat2: the non-finite check then runs first, and each route's dispatch covers
// the whole grid).
func (k *Kernels) recordBackwardPasses(r *vk.Recorder, p *Params, params *vk.Buffer, b *BwdBuffers, stamp func(string) error, rowPipes, keyPipes []*vk.Pipeline, br, kr int) error {
	caps := k.d.Caps()
	c := b.CM2
	packed := p.Mode == ModeRow || p.Mode == ModeShared
	push := bwdPushBytes(b)

	kb, vb := b.K, b.V
	if packed && !c.packed {
		if err := k.RecordPackRange(r, p, params, b.K, b.V, &PlanBuffers{U: b.U, UCount: b.UCount}, c.GK, c.GV, 0, int(p.B*p.Hb)); err != nil {
			return err
		}
	}
	if packed {
		kb, vb = c.GK, c.GV
	}
	if !c.packed {
		if err := stamp("bwd-pack"); err != nil {
			return err
		}
	}
	or := func(x *vk.Buffer) *vk.Buffer {
		if x == nil {
			return b.Ord // unused bindings: never read
		}
		return x
	}
	binds := []vk.Binding{vk.Bind(params), vk.Bind(b.Q), vk.Bind(kb), vk.Bind(vb), vk.Bind(b.Ord),
		vk.Bind(or(b.U)), vk.Bind(or(b.UCount)), vk.Bind(or(b.Tau)), vk.Bind(b.O), vk.Bind(b.LSE), vk.Bind(b.DO),
		vk.Bind(b.DQ), vk.Bind(b.DK), vk.Bind(b.DV), vk.Bind(b.DDelta), vk.Bind(b.DSum),
		vk.Bind(or(c.PdK)), vk.Bind(or(c.PdV)), vk.Bind(or(c.PdD)), vk.Bind(or(c.Flags))}
	if len(rowPipes) > 1 {
		if err := k.recordBwdCheck(r, p, b); err != nil {
			return err
		}
		if err := stamp("bwd-check"); err != nil {
			return err
		}
	}

	_, tiles := AttnTiles(p.Lq, p.PosOffset, br)
	groups := [3]uint32{tiles, p.H, p.B}
	for i, g := range groups {
		if g > caps.MaxWorkgroupCount[i] {
			return fmt.Errorf("kern: backward (tensor cores): %d workgroups in dimension %d (tiles, heads, batch), %s allows %d", g, i, caps.Name, caps.MaxWorkgroupCount[i])
		}
	}
	for _, pipe := range rowPipes {
		if err := r.Dispatch(pipe, groups, push, binds...); err != nil {
			return err
		}
	}
	r.Barrier()
	if err := stamp("bwd-rows"); err != nil {
		return err
	}
	kgroups := [3]uint32{Groups(int(p.Lk), kr), p.Hkv, p.B}
	if packed {
		kgroups = [3]uint32{uint32(PackRows(p) / kr), uint32(PackRegions(p)), 1}
	}
	for i, g := range kgroups {
		if g > caps.MaxWorkgroupCount[i] {
			return fmt.Errorf("kern: backward (tensor cores): %d key-pass workgroups in dimension %d, %s allows %d", g, i, caps.Name, caps.MaxWorkgroupCount[i])
		}
	}
	for _, pipe := range keyPipes {
		if err := r.Dispatch(pipe, kgroups, push, binds...); err != nil {
			return err
		}
	}
	r.Barrier()
	if err := stamp("bwd-keys"); err != nil {
		return err
	}
	if !packed {
		return nil
	}
	redPipe, err := k.pipelinePush("attention_bwd_cm2_reduce", bwdCM2Bindings, bwdPush)
	if err != nil {
		return err
	}
	rgroups := [3]uint32{min(p.Lk, caps.MaxWorkgroupCount[0], 65535), p.Hkv, p.B}
	if err := r.Dispatch(redPipe, rgroups, push, binds...); err != nil {
		return err
	}
	r.Barrier()
	return stamp("bwd-reduce")
}
