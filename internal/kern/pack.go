package kern

import (
	"encoding/binary"
	"fmt"

	"github.com/dmavk/dmavk/vk"
)

// Workgroup sizes of select_pack and select_vcheck (their local_size_x).
const (
	selectPackWG   = 256
	selectVCheckWG = 256
	// packMaxD is the largest head dimension that RecordPack takes.
	packMaxD = 256
)

// packRowCausal reports whether p has one packed region per U list U_e, e < nb (mode
// row, causal), rather than one per (batch, bias head) holding S_final.
func packRowCausal(p *Params) bool { return p.Mode == ModeRow && p.Causal != 0 }

// PackRows is NP, the rows of one region of GK and GV: NCap rounded up to a multiple
// of 64, so that a consumer may read whole chunks of 16, 32 or 64 rows.
func PackRows(p *Params) int { return (int(p.NCap) + 63) &^ 63 }

// PackRegions is R, the number of regions of GK and GV: B*Hb*NBlocks in mode row with
// causality (region bh*NBlocks + e holds the list U_e), B*Hb in mode shared and in mode
// row without causality (region bh holds S_final), 0 in modes none and explicit, which
// have nothing to pack.
func PackRegions(p *Params) int {
	bh := int(p.B) * int(p.Hb)
	switch {
	case packRowCausal(p):
		return bh * int(p.NBlocks)
	case p.Mode == ModeRow || p.Mode == ModeShared:
		return bh
	}
	return 0
}

// PackSizeRange is the byte size of one of GK and GV holding the regions of count
// (batch, bias head) pairs.
func PackSizeRange(p *Params, count int) int64 {
	bh := int64(p.B) * int64(p.Hb)
	if bh == 0 {
		return 0
	}
	return PackSize(p) / bh * int64(count)
}

// pairRange is the push-constant block of select_pack and attention_cm2: the first
// (batch, bias head) pair of the packed buffers bound, and their number.
func pairRange(first, count int) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint32(b, uint32(first))
	binary.LittleEndian.PutUint32(b[4:], uint32(count))
	return b
}

// PackSize is the byte size of one of GK and GV: R * NP * D 16-bit elements.
func PackSize(p *Params) int64 {
	return int64(PackRegions(p)) * int64(PackRows(p)) * int64(p.D) * 2
}

// viewLast is the index of the last element of a [B, Lk, Hkv, D] tensor through v.
func viewLast(p *Params, v View) int64 {
	return int64(v.Off) + int64(p.B-1)*int64(v.SB) + int64(p.Lk-1)*int64(v.SL) +
		int64(p.Hkv-1)*int64(v.SH) + int64(p.D-1)
}

// viewBytes is the least byte size of a buffer holding the [B, Lk, Hkv, D] tensor of v
// in p's storage (16-bit tensors are read as whole 32-bit words).
func viewBytes(p *Params, v View) int64 {
	last := viewLast(p, v)
	if p.Storage.Packed() {
		return (last/2 + 1) * 4
	}
	return (last + 1) * 4
}

// viewAligned reports whether every element offset of v that p's shape uses (the offset,
// and the strides of dimensions longer than 1) and D are multiples of n elements.
func viewAligned(p *Params, v View, n uint32) bool {
	return v.Off%n == 0 && p.D%n == 0 &&
		(p.B == 1 || v.SB%n == 0) && (p.Lk == 1 || v.SL%n == 0) && (p.Hkv == 1 || v.SH%n == 0)
}

// packVec reports whether RecordPack uses 16-byte loads and stores (variant vec of
// select_pack): K and V rows are whole runs of 8 elements.
func packVec(p *Params) bool { return viewAligned(p, p.K, 8) && viewAligned(p, p.V, 8) }

// vcheckPer is the elements of one uvec4 in p's storage, the alignment that
// select_vcheck's variant vec needs.
func vcheckPer(p *Params) uint32 {
	if p.Storage.Packed() {
		return 8
	}
	return 4
}

// checkVShape checks what RecordPack and RecordVCheck share: a nonempty V shape and a
// known storage.
func checkVShape(op string, p *Params) error {
	if p.B == 0 || p.Lk == 0 || p.Hkv == 0 || p.D == 0 {
		return fmt.Errorf("kern: %s: empty shape B=%d Lk=%d Hkv=%d D=%d", op, p.B, p.Lk, p.Hkv, p.D)
	}
	if !p.Storage.Valid() {
		return fmt.Errorf("kern: %s: unknown storage %v", op, p.Storage)
	}
	return nil
}

// sizedBuf is a buffer argument with its least byte size.
type sizedBuf struct {
	name string
	buf  *vk.Buffer
	want int64
}

// checkSizes checks each buffer against its least byte size.
func checkSizes(op string, bufs ...sizedBuf) error {
	for _, c := range bufs {
		if c.buf == nil {
			return fmt.Errorf("kern: %s: %s buffer is nil", op, c.name)
		}
		if c.buf.Size() < c.want {
			return fmt.Errorf("kern: %s: %s buffer has %d bytes, needs %d", op, c.name, c.buf.Size(), c.want)
		}
	}
	return nil
}

// RecordPack records the pack pass (shaders/select_pack.comp; contract in the package
// documentation, "Packed K and V"): for every region of the plan it copies the K and V
// rows of the region's U list into gk and gv (16-bit [R][NP][D], R = PackRegions(p),
// NP = PackRows(p), PackSize(p) bytes each), raw 16-bit elements, rows past the list's
// count zero.
//
// kb and vb hold K and V ([B, Lk, Hkv, D] through the views p.K and p.V) in p.Storage,
// which must be StorageF16 or StorageBF16; D must be even and at most 256. p.Mode must be
// ModeRow or ModeShared, with the plan fields of RecordPlan (Window, BlockC, NBlocks,
// NCap), and Hb must be Hkv or H (query head h, bias head h, reads kv head h / G). plan
// must hold U and ucount as RecordPlan left them (a Barrier after it); params already
// holds p. The pass runs with 16-byte loads and stores when D and the offsets and strides
// of both views are multiples of 8 elements, else word by word. A Barrier follows the
// dispatch, so later commands see gk and gv.
func (k *Kernels) RecordPack(r *vk.Recorder, p *Params, params *vk.Buffer, kb, vb *vk.Buffer, plan *PlanBuffers, gk, gv *vk.Buffer) error {
	return k.recordPack(r, p, params, kb, vb, plan, gk, gv, 0, int(p.B*p.Hb), int64(k.d.Caps().MaxWorkgroupCount[0]))
}

// RecordPackRange is RecordPack for the (batch, bias head) pairs bh in [first,
// first+count) only, into gk and gv of PackSizeRange(p, count) bytes whose regions count
// from first (the layout of GK/GV split over several buffers).
func (k *Kernels) RecordPackRange(r *vk.Recorder, p *Params, params *vk.Buffer, kb, vb *vk.Buffer, plan *PlanBuffers, gk, gv *vk.Buffer, first, count int) error {
	return k.recordPack(r, p, params, kb, vb, plan, gk, gv, first, count, int64(k.d.Caps().MaxWorkgroupCount[0]))
}

// recordPack is RecordPackRange with at most maxGroups workgroups (tests use few, so
// that the grid-stride loop runs several rounds).
func (k *Kernels) recordPack(r *vk.Recorder, p *Params, params *vk.Buffer, kb, vb *vk.Buffer, plan *PlanBuffers, gk, gv *vk.Buffer, first, count int, maxGroups int64) error {
	const op = "RecordPack"
	if err := checkVShape(op, p); err != nil {
		return err
	}
	if p.H == 0 || p.Hb == 0 || p.Lq == 0 {
		return fmt.Errorf("kern: %s: empty shape H=%d Hb=%d Lq=%d", op, p.H, p.Hb, p.Lq)
	}
	if p.H%p.Hkv != 0 || p.G != p.H/p.Hkv {
		return fmt.Errorf("kern: %s: H=%d Hkv=%d want G=H/Hkv, params have G=%d", op, p.H, p.Hkv, p.G)
	}
	if p.Hb != p.H && p.Hb != p.Hkv {
		return fmt.Errorf("kern: %s: Hb=%d is neither H=%d nor Hkv=%d", op, p.Hb, p.H, p.Hkv)
	}
	if p.Mode != ModeRow && p.Mode != ModeShared {
		return fmt.Errorf("kern: %s: mode %d has no plan to pack (modes row %d and shared %d only)", op, p.Mode, ModeRow, ModeShared)
	}
	if !p.Storage.Packed() {
		return fmt.Errorf("kern: %s: storage %v: K and V must be 16-bit (fp16 or bf16)", op, p.Storage)
	}
	if p.D%2 != 0 || p.D > packMaxD {
		return fmt.Errorf("kern: %s: D=%d, must be even and at most %d", op, p.D, packMaxD)
	}
	w := p.Window
	if w == 0 {
		return fmt.Errorf("kern: %s: window 0", op)
	}
	if c := uint32(BlockSize(int(w))); p.BlockC != c || p.NBlocks != (p.Lk+c-1)/c || p.NCap != w+c {
		return fmt.Errorf("kern: %s: window %d wants BlockC=%d NBlocks=%d NCap=%d, params have %d, %d, %d",
			op, w, c, (p.Lk+c-1)/c, w+c, p.BlockC, p.NBlocks, p.NCap)
	}
	if plan == nil {
		return fmt.Errorf("kern: %s: plan is nil", op)
	}
	// The shader indexes with 32-bit integers, and its grid-stride loop counts units
	// below 2^31.
	const maxIndex = 1<<32 - 1
	for _, v := range []struct {
		name string
		view View
	}{{"K", p.K}, {"V", p.V}} {
		if last := viewLast(p, v.view); last+1 > maxIndex {
			return fmt.Errorf("kern: %s: the %s view reaches element %d, beyond 32-bit indices", op, v.name, last)
		}
	}
	bh := int64(p.B) * int64(p.Hb)
	if bh*int64(p.NBlocks+1)*int64(p.NCap) > maxIndex {
		return fmt.Errorf("kern: %s: U has over 2^32 entries", op)
	}
	vec := packVec(p)
	per := int64(2)
	if vec {
		per = 8
	}
	if first < 0 || count < 1 || int64(first)+int64(count) > bh {
		return fmt.Errorf("kern: %s: pairs [%d, %d) outside the B*Hb = %d (batch, bias head) pairs", op, first, first+count, bh)
	}
	regions := int64(PackRegions(p)) / bh * int64(count)
	units := regions * int64(PackRows(p)) * int64(p.D) / per
	if units >= 1<<31 {
		return fmt.Errorf("kern: %s: %d units to write (R=%d NP=%d D=%d), over 2^31", op, units, PackRegions(p), PackRows(p), p.D)
	}
	_, su, sc, _ := PlanSizes(p)
	size := PackSizeRange(p, count)
	if err := checkSizes(op,
		sizedBuf{"params", params, ParamsSize},
		sizedBuf{"K", kb, viewBytes(p, p.K)},
		sizedBuf{"V", vb, viewBytes(p, p.V)},
		sizedBuf{"U", plan.U, su},
		sizedBuf{"ucount", plan.UCount, sc},
		sizedBuf{"GK", gk, size},
		sizedBuf{"GV", gv, size},
	); err != nil {
		return err
	}
	name := "select_pack_word"
	if vec {
		name = "select_pack_vec"
	}
	pipe, err := k.pipelinePush(name, 7, 8)
	if err != nil {
		return err
	}
	groups := min((units+selectPackWG-1)/selectPackWG, maxGroups) // the shader loops over the rest
	if err := r.Dispatch(pipe, [3]uint32{uint32(groups), 1, 1}, pairRange(first, count),
		vk.Bind(params), vk.Bind(kb), vk.Bind(vb), vk.Bind(plan.U), vk.Bind(plan.UCount), vk.Bind(gk), vk.Bind(gv)); err != nil {
		return err
	}
	r.Barrier()
	return nil
}

// VCheckSize is the byte size of the flags of RecordVCheck: uint32 [B][Hkv].
func VCheckSize(p *Params) int64 { return int64(p.B) * int64(p.Hkv) * 4 }

// RecordVCheck records the non-finite check of V (shaders/select_vcheck.comp): it
// zero-fills flags (uint32 [B][Hkv], VCheckSize(p) bytes), a Barrier, then sets
// flags[b*Hkv + kvh] to a nonzero value when an element of V[b, 0..Lk), kvh, 0..D) is
// NaN or +-Inf (in p.Storage: fp32, fp16 or bf16). vb holds V ([B, Lk, Hkv, D] through
// the view p.V); params already holds p. A Barrier follows the dispatch.
//
// The packed attention kernel multiplies probabilities by whole chunks of GV, zeros
// included, and 0 * NaN is NaN: heads whose V is not finite take the exact path.
func (k *Kernels) RecordVCheck(r *vk.Recorder, p *Params, params, vb, flags *vk.Buffer) error {
	return k.recordVCheck(r, p, params, vb, flags, int64(k.d.Caps().MaxWorkgroupCount[0]))
}

// vcheckVec reports whether RecordVCheck reads V by uvec4 (variant vec of
// select_vcheck): D and the offsets and strides of p.V are multiples of 8 (16-bit) or 4
// (float32) elements.
func vcheckVec(p *Params) bool { return viewAligned(p, p.V, vcheckPer(p)) }

// recordVCheck is RecordVCheck with at most maxGroups workgroups.
func (k *Kernels) recordVCheck(r *vk.Recorder, p *Params, params, vb, flags *vk.Buffer, maxGroups int64) error {
	const op = "RecordVCheck"
	if err := checkVShape(op, p); err != nil {
		return err
	}
	size := VCheckSize(p)
	if err := checkSizes(op,
		sizedBuf{"params", params, ParamsSize},
		sizedBuf{"V", vb, viewBytes(p, p.V)},
		sizedBuf{"flags", flags, size},
	); err != nil {
		return err
	}
	if err := r.Fill(flags, 0, size, 0); err != nil {
		return err
	}
	r.Barrier()
	if err := k.dispatchVCheck(r, op, p, vk.Bind(params), vb, vk.Binding{Buf: flags, Size: size}, maxGroups); err != nil {
		return err
	}
	r.Barrier()
	return nil
}

// dispatchVCheck records select_vcheck's dispatch alone: params holds p, flags (zeroed
// by the caller) gets [B][Hkv] words. Sizes are the caller's to check.
func (k *Kernels) dispatchVCheck(r *vk.Recorder, op string, p *Params, params vk.Binding, vb *vk.Buffer, flags vk.Binding, maxGroups int64) error {
	const maxIndex = 1<<32 - 1
	if last := viewLast(p, p.V); last+1 > maxIndex {
		return fmt.Errorf("kern: %s: the V view reaches element %d, beyond 32-bit indices", op, last)
	}
	per := vcheckPer(p)
	vec := vcheckVec(p)
	if !vec {
		per = 1
		if p.Storage.Packed() {
			per = 2
		}
	}
	units := int64(p.B) * int64(p.Lk) * int64(p.Hkv) * ((int64(p.D) + int64(per) - 1) / int64(per))
	if units >= 1<<31 {
		return fmt.Errorf("kern: %s: %d units to check (B=%d Lk=%d Hkv=%d D=%d), over 2^31", op, units, p.B, p.Lk, p.Hkv, p.D)
	}
	name := "select_vcheck_word"
	if vec {
		name = "select_vcheck_vec"
	}
	pipe, err := k.Pipeline(name, 3)
	if err != nil {
		return err
	}
	groups := min((units+selectVCheckWG-1)/selectVCheckWG, maxGroups) // the shader loops over the rest
	return r.Dispatch(pipe, [3]uint32{uint32(groups), 1, 1}, nil, params, vk.Bind(vb), flags)
}
