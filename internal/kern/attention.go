package kern

import (
	"fmt"
	"math"

	"github.com/dmavk/dmavk/vk"
)

// AttnBuffers are the buffers of one attention forward call (shaders/attention.comp).
// Q, K, V and O hold Params.Storage: float32, or packed 16-bit elements (fp16 or bf16,
// two to a word); LSE is float32 [B][H][Lq]. Ord, U, UCount and Tau are the selection
// plan (package documentation).
// U and UCount may be nil in modes none and explicit, Tau unless the mode is row and
// causal, Mask and Bias when Params.Mask / Params.Bias are not Present (or the mode
// is not explicit).
type AttnBuffers struct {
	Q, K, V, O, LSE, Ord, U, UCount, Tau, Mask, Bias *vk.Buffer
	// CM2 holds the coopmat2 kernel's buffers (NewCM2Buffers); needed only when
	// AttentionPath says PathCoopMat2.
	CM2 *CM2Buffers
}

// AttnMaxD is the largest head dimension the portable attention kernel takes.
const AttnMaxD = 256

// attnBindings is the binding count of attention.comp.
const attnBindings = 12

// AttnTile is the tiling of the portable attention kernel for one head dimension:
// BR query rows and BC keys per chunk, 8*BR invocations per workgroup, Shared bytes
// of shared memory.
type AttnTile struct {
	BR, BC, Threads, Shared int
}

// attnShared is the shared memory attention.comp declares for (d, br, bc), in bytes.
func attnShared(d, br, bc int) int {
	nt := 8 * br
	floats := br*(d+1) + bc*(d+1) + bc*d + 2*br*(bc+1) // Qs, Ks, Vs, Ss, Ps
	words := (bc + nt) + 2*bc + nt + 2*br + 1          // klist, kord+kdel, scanb, tauS, stopFlag
	return 4 * (floats + words)
}

// AttnTiling chooses the tile of the portable attention kernel for head dimension d on
// a device with the given caps: the largest candidate whose shared memory and
// invocation count the device allows.
func AttnTiling(caps *vk.Caps, d int) (AttnTile, error) {
	if d < 8 || d > AttnMaxD || d%8 != 0 {
		return AttnTile{}, fmt.Errorf("kern: attention: head dimension D=%d unsupported (need a multiple of 8 in [8, %d])", d, AttnMaxD)
	}
	// Larger tiles first: fewer chunks (barriers) per key and more reuse of each K/V row.
	for _, c := range [][2]int{{16, 64}, {16, 32}, {16, 16}, {8, 16}, {8, 8}} {
		t := AttnTile{BR: c[0], BC: c[1], Threads: 8 * c[0], Shared: attnShared(d, c[0], c[1])}
		if uint32(t.Shared) <= caps.MaxSharedMemory && uint32(t.Threads) <= caps.MaxWorkgroupInvocations &&
			uint32(t.Threads) <= caps.MaxWorkgroupSize[0] {
			return t, nil
		}
	}
	return AttnTile{}, fmt.Errorf("kern: attention: D=%d needs %d bytes of shared memory at the smallest tile, %s has %d",
		d, attnShared(d, 8, 8), caps.Name, caps.MaxSharedMemory)
}

// floorDiv is a / b rounded toward -inf (b > 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// AttnTiles gives the first tile index and the number of tiles of br rows (aligned on
// key positions) that hold the Lq rows starting at position posOffset.
func AttnTiles(lq uint32, posOffset int32, br int) (first int64, n uint32) {
	first = floorDiv(int64(posOffset), int64(br))
	last := floorDiv(int64(posOffset)+int64(lq)-1, int64(br))
	return first, uint32(last - first + 1)
}

// viewElems is one past the largest element index a [b, l, h, d] view addresses.
func viewElems(v View, b, l, h, d uint32) uint64 {
	return uint64(v.Off) + uint64(b-1)*uint64(v.SB) + uint64(l-1)*uint64(v.SL) + uint64(h-1)*uint64(v.SH) + uint64(d)
}

// checkAttention validates p and the buffers of b against each other.
func checkAttention(p *Params, b *AttnBuffers) error {
	if p.B == 0 || p.Lq == 0 || p.Lk == 0 || p.H == 0 || p.Hkv == 0 {
		return fmt.Errorf("kern: attention: empty shape B=%d Lq=%d Lk=%d H=%d Hkv=%d", p.B, p.Lq, p.Lk, p.H, p.Hkv)
	}
	if p.H%p.Hkv != 0 || p.G != p.H/p.Hkv {
		return fmt.Errorf("kern: attention: H=%d, Hkv=%d, G=%d: need H a multiple of Hkv and G = H/Hkv", p.H, p.Hkv, p.G)
	}
	if p.Hb != p.H && p.Hb != p.Hkv {
		return fmt.Errorf("kern: attention: Hb=%d must be H=%d or Hkv=%d", p.Hb, p.H, p.Hkv)
	}
	if p.Causal > 1 {
		return fmt.Errorf("kern: attention: Causal=%d must be 0 or 1", p.Causal)
	}
	if !p.Storage.Valid() {
		return fmt.Errorf("kern: attention: unknown storage %v", p.Storage)
	}
	if math.IsNaN(float64(p.Scale)) || math.IsInf(float64(p.Scale), 0) {
		return fmt.Errorf("kern: attention: Scale=%v must be finite", p.Scale)
	}
	if !(p.Softcap >= 0) || math.IsInf(float64(p.Softcap), 0) {
		return fmt.Errorf("kern: attention: Softcap=%v must be finite and >= 0", p.Softcap)
	}
	for _, x := range []struct {
		name string
		buf  *vk.Buffer
	}{{"Q", b.Q}, {"K", b.K}, {"V", b.V}, {"O", b.O}, {"LSE", b.LSE}, {"Ord", b.Ord}} {
		if x.buf == nil {
			return fmt.Errorf("kern: attention: buffer %s is nil", x.name)
		}
	}
	need := func(name string, buf *vk.Buffer, bytes uint64) error {
		if buf == nil {
			return fmt.Errorf("kern: attention: buffer %s is nil but mode %d needs it", name, p.Mode)
		}
		if uint64(buf.Size()) < bytes {
			return fmt.Errorf("kern: attention: buffer %s has %d bytes, needs %d", name, buf.Size(), bytes)
		}
		return nil
	}
	// Tensor sizes: 16-bit tensors are read as whole 32-bit words.
	tensorBytes := func(elems uint64) uint64 {
		if p.Storage.Packed() {
			return (elems*2 + 3) &^ 3
		}
		return elems * 4
	}
	for _, t := range []struct {
		name    string
		buf     *vk.Buffer
		v       View
		l, h    uint32
		written bool
	}{{"Q", b.Q, p.Q, p.Lq, p.H, false}, {"K", b.K, p.K, p.Lk, p.Hkv, false}, {"V", b.V, p.V, p.Lk, p.Hkv, false}, {"O", b.O, p.O, p.Lq, p.H, true}} {
		if err := need(t.name, t.buf, tensorBytes(viewElems(t.v, p.B, t.l, t.h, p.D))); err != nil {
			return err
		}
		if p.Storage.Packed() && t.written && (t.v.Off|t.v.SB|t.v.SL|t.v.SH)&1 != 0 {
			return fmt.Errorf("kern: attention: %v O view %+v: offset and strides must be even (16-bit elements leave in pairs)", p.Storage, t.v)
		}
	}
	if err := need("LSE", b.LSE, uint64(p.B)*uint64(p.H)*uint64(p.Lq)*4); err != nil {
		return err
	}
	ordB, uB, ucB, tauB := PlanSizes(p)
	if err := need("Ord", b.Ord, uint64(ordB)); err != nil {
		return err
	}
	switch p.Mode {
	case ModeRow, ModeShared:
		if p.Window < 1 {
			return fmt.Errorf("kern: attention: mode %d needs Window >= 1, got %d", p.Mode, p.Window)
		}
		if c := uint32(BlockSize(int(p.Window))); p.BlockC != c {
			return fmt.Errorf("kern: attention: BlockC=%d, want BlockSize(%d) = %d", p.BlockC, p.Window, c)
		}
		if nb := (p.Lk + p.BlockC - 1) / p.BlockC; p.NBlocks != nb {
			return fmt.Errorf("kern: attention: NBlocks=%d, want ceil(Lk/BlockC) = %d", p.NBlocks, nb)
		}
		if p.NCap != p.Window+p.BlockC {
			return fmt.Errorf("kern: attention: NCap=%d, want Window+BlockC = %d", p.NCap, p.Window+p.BlockC)
		}
		if err := need("U", b.U, uint64(uB)); err != nil {
			return err
		}
		if err := need("UCount", b.UCount, uint64(ucB)); err != nil {
			return err
		}
		if p.Mode == ModeRow && p.Causal == 1 {
			if err := need("Tau", b.Tau, uint64(tauB)); err != nil {
				return err
			}
		}
	case ModeNone, ModeExplicit:
	default:
		return fmt.Errorf("kern: attention: unknown mode %d", p.Mode)
	}
	if p.Mode == ModeExplicit {
		heads := func(m Broadcast) uint64 { return uint64((p.H - 1) / m.HDiv) }
		last := func(m Broadcast) uint64 {
			return uint64(m.Off) + uint64(p.B-1)*uint64(m.SB) + heads(m)*uint64(m.SH) + uint64(p.Lq-1)*uint64(m.SI) + uint64(p.Lk-1)*uint64(m.SJ)
		}
		if m := p.Mask; m.Present {
			if m.HDiv == 0 {
				return fmt.Errorf("kern: attention: Mask.HDiv is 0")
			}
			if err := need("Mask", b.Mask, (last(m)/4+1)*4); err != nil { // bytes, read as words
				return err
			}
		}
		if m := p.Bias; m.Present {
			if m.HDiv == 0 {
				return fmt.Errorf("kern: attention: Bias.HDiv is 0")
			}
			if err := need("Bias", b.Bias, (last(m)+1)*4); err != nil {
				return err
			}
		}
	}
	return nil
}

// RecordAttention records the forward dispatch of shaders/attention.comp: O and LSE from
// Q, K, V and the plan; or of shaders/attention_cm.comp (tensor cores) when
// AttentionPath(p) says PathCoopMat; or, for PathCoopMat2, select_vcheck, select_pack
// and shaders/attention_cm2.comp (b.CM2 then holds their buffers). params already holds p
// (the caller ran r.Update and r.Barrier), and the plan buffers are ready. p.Scale is
// used as is (the caller resolves the default 1/sqrt(D)). stamp, when given, is called
// after the packing passes of PathCoopMat2 ("pack"), for a profiler's timestamp.
func (k *Kernels) RecordAttention(r *vk.Recorder, p *Params, params *vk.Buffer, b *AttnBuffers, stamp ...func(pass string) error) error {
	if params == nil || b == nil {
		return fmt.Errorf("kern: attention: nil params or buffers")
	}
	if params.Size() < ParamsSize {
		return fmt.Errorf("kern: attention: params buffer has %d bytes, needs %d", params.Size(), ParamsSize)
	}
	// The cooperative-matrix kernel reads fp16 and bf16 only: every other storage stays
	// on the portable kernel, whatever AttentionPath would say.
	switch k.AttentionPath(p) {
	case PathCoopMat2:
		return k.recordAttentionCM2(r, p, params, b, func(pass string) error {
			for _, s := range stamp {
				if err := s(pass); err != nil {
					return err
				}
			}
			return nil
		})
	case PathCoopMat:
		if p.Storage == StorageF16 || p.Storage == StorageBF16 {
			return k.recordAttentionCM(r, p, params, b)
		}
	}
	caps := k.d.Caps()
	tile, err := AttnTiling(&caps, int(p.D))
	if err != nil {
		return err
	}
	if err := checkAttention(p, b); err != nil {
		return err
	}
	pipe, err := k.Pipeline("attention", attnBindings, p.D, uint32(tile.BR), uint32(tile.BC), uint32(tile.Threads))
	if err != nil {
		return err
	}
	return dispatchAttention(r, caps, p, params, b, pipe, tile.BR, nil)
}

// dispatchAttention records one attention kernel (portable, coopmat or coopmat2: all take the
// same bindings) over the tiles of br rows, every head and batch; extra buffers follow
// the twelve bindings (attention_cm2.comp: K and V in place).
func dispatchAttention(r *vk.Recorder, caps vk.Caps, p *Params, params *vk.Buffer, b *AttnBuffers, pipe *vk.Pipeline, br int, push []byte, extra ...*vk.Buffer) error {
	_, tiles := AttnTiles(p.Lq, p.PosOffset, br)
	groups := [3]uint32{tiles, p.H, p.B}
	for i, g := range groups {
		if g > caps.MaxWorkgroupCount[i] {
			return fmt.Errorf("kern: attention: %d workgroups in dimension %d (tiles, heads, batch), %s allows %d", g, i, caps.Name, caps.MaxWorkgroupCount[i])
		}
	}
	// Unused plan, mask and bias bindings get the ord buffer: never read.
	or := func(x *vk.Buffer) *vk.Buffer {
		if x == nil {
			return b.Ord
		}
		return x
	}
	binds := []vk.Binding{vk.Bind(params), vk.Bind(b.Q), vk.Bind(b.K), vk.Bind(b.V), vk.Bind(b.Ord),
		vk.Bind(or(b.U)), vk.Bind(or(b.UCount)), vk.Bind(or(b.Tau)), vk.Bind(or(b.Mask)), vk.Bind(or(b.Bias)),
		vk.Bind(b.O), vk.Bind(b.LSE)}
	for _, x := range extra {
		binds = append(binds, vk.Bind(x))
	}
	return r.Dispatch(pipe, groups, push, binds...)
}
