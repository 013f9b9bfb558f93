package kern

import (
	"fmt"

	"github.com/dmavk/dmavk/vk"
)

// BwdCMTile is the tiling of the KHR cooperative-matrix backward
// (shaders/attention_bwd_cm.comp): bands of Shape.M rows per subgroup, NSG subgroups of
// SG invocations (BR = NSG * Shape.M rows of the tile: query rows in the row pass,
// packed keys in the key pass), BC keys (row pass) or rows (key pass) per chunk.
type BwdCMTile struct {
	BR, BC, NSG, SG, Threads int
	Shape                    vk.CoopMatShape
}

// bwdCMShared is the shared memory the two passes declare at most (the row pass's Q and
// dO rows included), in bytes.
func bwdCMShared(d, br, bc, nsg int, s vk.CoopMatShape) int {
	tile := 3*4*br*bc + 2*br*bc + 4*nsg*int(s.M)*int(s.N) + 16
	row := 2*2*br*d + 2*2*bc*d + 12*br + 8*bc       // q and dO of the tile, k and v of the chunk
	key := 16*br + 16*bc + 16 + 2*2*bc*d + 2*2*br*d // and the chunk's q and dO, the tile's k and v
	return tile + max(row, key)
}

// bwdCMMaxRegs caps the accumulator elements one invocation holds (2 D M / SG: dK and
// dV of the key pass).
const bwdCMMaxRegs = 256

// BwdCMTiling chooses the KHR backward's tile for head dimension d: the largest that the
// device's f16 x f16 + f32 subgroup shape (as the KHR forward's), shared memory and
// invocation limits allow.
func BwdCMTiling(caps *vk.Caps, d int) (BwdCMTile, error) {
	if d < 16 || d > AttnCMMaxD || d%16 != 0 {
		return BwdCMTile{}, fmt.Errorf("kern: backward (coopmat): head dimension D=%d unsupported (need a multiple of 16 in [16, %d])", d, AttnCMMaxD)
	}
	s, err := attnCMShape(caps, StorageF16) // the KHR backward is fp16 only
	if err != nil {
		return BwdCMTile{}, fmt.Errorf("kern: backward (coopmat): %w", err)
	}
	ms, ns, ks := int(s.M), int(s.N), int(s.K)
	sg := int(caps.SubgroupSize)
	for _, br := range []int{64, 32, 16} {
		for _, bc := range []int{64, 32, 16} {
			nsg := br / ms
			nt := nsg * sg
			if br%ms != 0 || bc%ns != 0 || bc%ks != 0 || d%ns != 0 || d%ks != 0 || 2*d*ms/sg > bwdCMMaxRegs ||
				uint32(nt) > caps.MaxWorkgroupInvocations || uint32(nt) > caps.MaxWorkgroupSize[0] ||
				uint32(bwdCMShared(d, br, bc, nsg, s)) > caps.MaxSharedMemory {
				continue
			}
			return BwdCMTile{BR: br, BC: bc, NSG: nsg, SG: sg, Threads: nt, Shape: s}, nil
		}
	}
	return BwdCMTile{}, fmt.Errorf("kern: backward (coopmat): no tile for D=%d with shape %s, subgroup size %d and %d bytes of shared memory", d, s, sg, caps.MaxSharedMemory)
}

// bwdCMEligible says whether the KHR backward computes p with dO through doView (fp16,
// modes row and shared over packed keys), and its tile, or why not.
func bwdCMEligible(caps *vk.Caps, p *Params, doView View) (BwdCMTile, error) {
	fail := func(format string, a ...any) (BwdCMTile, error) {
		return BwdCMTile{}, fmt.Errorf("kern: backward (coopmat): "+format, a...)
	}
	if p.Storage != StorageF16 {
		return fail("fp16 storage only, got %v", p.Storage)
	}
	if p.Mode != ModeRow && p.Mode != ModeShared {
		return fail("mode %d is not row or shared", p.Mode)
	}
	t, err := BwdCMTiling(caps, int(p.D))
	if err != nil {
		return t, err
	}
	aligned := func(v View) bool {
		return v.Off%8 == 0 && (p.B == 1 || v.SB%8 == 0) && (p.Lq == 1 || v.SL%8 == 0) && (p.H == 1 || v.SH%8 == 0)
	}
	if !aligned(p.Q) || !aligned(doView) {
		return fail("Q or dO offsets and strides not multiples of 8 elements")
	}
	if int(p.Lq) < t.BC {
		return fail("Lq=%d below one row chunk (%d rows)", p.Lq, t.BC)
	}
	lim := cm2PackLimit(caps)
	if n := PackSize(p); n > lim {
		return fail("the packed keys need %d bytes, over %s's largest allocation or binding", n, caps.Name)
	}
	if n := bwdCM2Partials(p); n > lim || n/4 > 1<<32-1 {
		return fail("the per-region gradients need %d bytes, over %s's largest allocation or binding", n, caps.Name)
	}
	if g := PackRows(p) / t.BR; uint32(g) > caps.MaxWorkgroupCount[0] || uint32(PackRegions(p)) > caps.MaxWorkgroupCount[1] {
		return fail("%d regions of %d key tiles exceed %s's workgroup counts", PackRegions(p), g, caps.Name)
	}
	return t, nil
}

// bwdCMPipelines returns the KHR backward's row and key pipelines for p and tile.
func (k *Kernels) bwdCMPipelines(p *Params, t BwdCMTile) (row, key *vk.Pipeline, err error) {
	spec := []uint32{p.D, uint32(t.BC), t.Shape.M, t.Shape.N, t.Shape.K, uint32(t.SG), uint32(t.NSG), uint32(t.Threads)}
	sg := k.pinnedSubgroup(uint32(t.SG))
	if row, err = k.pipeline(pipeKey{name: "attention_bwd_cm_row", bindings: bwdCM2Bindings, push: bwdPush, subgroup: sg}, spec, nil); err != nil {
		return nil, nil, err
	}
	if key, err = k.pipeline(pipeKey{name: "attention_bwd_cm_key", bindings: bwdCM2Bindings, push: bwdPush, subgroup: sg}, spec, nil); err != nil {
		return nil, nil, err
	}
	return row, key, nil
}

// recordBackwardCM records the KHR backward: the pack (unless b.CM2 came packed), its
// row and key passes (shaders/attention_bwd_cm.comp) and the coopmat2 backward's reduce
// pass, into the same buffers as recordBackwardCM2 (b.CM2, NewBwdCM2Buffers).
func (k *Kernels) recordBackwardCM(r *vk.Recorder, p *Params, params *vk.Buffer, b *BwdBuffers, stamp func(string) error) error {
	caps := k.d.Caps()
	tile, err := bwdCMEligible(&caps, p, b.DOView)
	if err != nil {
		return err
	}
	c := b.CM2
	rows := int64(PackRegions(p)) * int64(PackRows(p))
	if err := checkSizes("backward (coopmat)",
		sizedBuf{"CM2.GK", c.GK, PackSize(p)}, sizedBuf{"CM2.GV", c.GV, PackSize(p)},
		sizedBuf{"CM2.PdK", c.PdK, bwdCM2Partials(p)}, sizedBuf{"CM2.PdV", c.PdV, bwdCM2Partials(p)},
		sizedBuf{"CM2.PdD", c.PdD, rows * 4}); err != nil {
		return err
	}
	rowPipe, keyPipe, err := k.bwdCMPipelines(p, tile)
	if err != nil {
		return err
	}
	return k.recordBackwardPasses(r, p, params, b, stamp, []*vk.Pipeline{rowPipe}, []*vk.Pipeline{keyPipe}, tile.BR, tile.BR)
}
