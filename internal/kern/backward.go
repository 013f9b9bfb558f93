package kern

import (
	"encoding/binary"
	"fmt"

	"github.com/dmavk/dmavk/vk"
)

// BwdBuffers are the buffers of one attention backward call (spec section 4).
//
// Inputs: the forward's inputs and plan (the embedded AttnBuffers: Q, K, V, Ord, U,
// UCount, Tau, Mask, Bias exactly as RecordAttention got them, the plan rebuilt by
// RecordPlan for the same Params), its outputs O and LSE, and DO, the gradient of O, in
// Q's storage type through the view DOView.
//
// Outputs, float32 whatever Params.Storage, each addressed by its own view (in float32
// elements): DQ ([B, Lq, H, D], DQView), DK and DV ([B, Lk, Hkv, D], summed over each
// GQA group; DKView, DVView) and DDelta, float32 [B][Hb][Lk] (index (b*Hb+c)*Lk+j: the
// gradient of the weights, summed over rows and over the query heads of bias head c).
// DSum is scratch, float32 [B][H][Lq] (dot(dO_i, O_i)); Perm is scratch of the
// deterministic mode only (BwdPermSize bytes: the key pass's order of the keys).
type BwdBuffers struct {
	AttnBuffers
	DO                     *vk.Buffer
	DOView                 View
	DQ, DK, DV             *vk.Buffer
	DQView, DKView, DVView View
	DDelta, DSum, Perm     *vk.Buffer
	// CM2, when set, sends the call to the tensor-core backward BackwardPath names for
	// p (coopmat2, or KHR cooperative matrices; an error when it says portable): its
	// packed keys and per-region sums (NewBwdCM2Buffers). Perm is then not needed.
	CM2 *BwdCM2Buffers
}

// bwdBindings is the binding count of attention_bwd.comp, attention_bwd_kv.comp and
// attention_bwd_order.comp (one list).
const bwdBindings = 19

// bwdOrderRun is the run of consecutive keys attention_bwd_order.comp sorts (its
// workgroup size).
const bwdOrderRun = 256

// bwdPush is the size of their push-constant block: four views.
const bwdPush = 64

// BwdTile is the tiling of the backward passes for one head dimension: the query pass
// takes BR rows and BC keys per chunk (8*BR invocations), the key pass BK keys and BRK
// rows per chunk (8*BK invocations).
type BwdTile struct {
	BR, BC, BK, BRK int
}

// bwdQueryShared and bwdKeyShared are the bytes of shared memory the two shaders declare.
func bwdQueryShared(d, br, bc int) int {
	nt := 8 * br
	floats := 2*br*(d+1) + 2*bc*(d+1) + 2*br*(bc+1) + nt // Qs, dOs, Ks, Vs, Ps, dSs, red
	words := (bc + nt) + 2*bc + nt + 2*br + 1            // klist, kord+kdel, scanb, tauS, stopFlag
	return 4 * (floats + words)
}

func bwdKeyShared(d, bk, brk int) int {
	floats := 2*bk*(d+1) + 2*brk*(d+1) + 2*brk*(bk+1) + 2*brk // Ks, Vs, Qs, dOs, Ps, dSs, row lse/Dsum
	words := 4*bk + 2                                         // kLo, kHi, kord, kdel, range
	return 4 * (floats + words)
}

// BwdTiling chooses the tiles of the backward passes for head dimension d: the largest
// candidates whose shared memory and invocation counts the device allows.
func BwdTiling(caps *vk.Caps, d int) (BwdTile, error) {
	if d < 8 || d > AttnMaxD || d%8 != 0 {
		return BwdTile{}, fmt.Errorf("kern: backward: head dimension D=%d unsupported (need a multiple of 8 in [8, %d])", d, AttnMaxD)
	}
	fits := func(shared, threads int) bool {
		return uint32(shared) <= caps.MaxSharedMemory && uint32(threads) <= caps.MaxWorkgroupInvocations &&
			uint32(threads) <= caps.MaxWorkgroupSize[0]
	}
	var t BwdTile
	// The last candidates (4 keys, resp. 4 rows, per chunk) are for D = 256 on devices with
	// 32 KiB of shared memory.
	for _, c := range [][2]int{{16, 32}, {16, 16}, {8, 16}, {8, 8}, {8, 4}} {
		if fits(bwdQueryShared(d, c[0], c[1]), 8*c[0]) {
			t.BR, t.BC = c[0], c[1]
			break
		}
	}
	for _, c := range [][2]int{{16, 32}, {16, 16}, {8, 16}, {8, 8}, {8, 4}} {
		if fits(bwdKeyShared(d, c[0], c[1]), 8*c[0]) {
			t.BK, t.BRK = c[0], c[1]
			break
		}
	}
	if t.BR == 0 || t.BK == 0 {
		return BwdTile{}, fmt.Errorf("kern: backward: D=%d needs %d bytes of shared memory at the smallest tile, %s has %d",
			d, max(bwdQueryShared(d, 8, 4), bwdKeyShared(d, 8, 4)), caps.Name, caps.MaxSharedMemory)
	}
	return t, nil
}

// BwdDSumSize is the byte size of BwdBuffers.DSum for p.
func BwdDSumSize(p *Params) int64 { return int64(p.B) * int64(p.H) * int64(p.Lq) * 4 }

// BwdPermSize is the byte size of BwdBuffers.Perm for p: uint32 [B][Hkv][Lk].
func BwdPermSize(p *Params) int64 { return int64(p.B) * int64(p.Hkv) * int64(p.Lk) * 4 }

// BwdDDeltaSize is the byte size of BwdBuffers.DDelta for p.
func BwdDDeltaSize(p *Params) int64 { return int64(p.B) * int64(p.Hb) * int64(p.Lk) * 4 }

// checkBackward validates the buffers of b that RecordAttention does not know.
func checkBackward(p *Params, b *BwdBuffers, deterministic bool) error {
	if deterministic && b.CM2 == nil && (b.Perm == nil || b.Perm.Size() < BwdPermSize(p)) {
		return fmt.Errorf("kern: backward: the deterministic mode needs a Perm buffer of %d bytes", BwdPermSize(p))
	}
	f32 := func(v View, l, h uint32) uint64 { return viewElems(v, p.B, l, h, p.D) * 4 }
	tensorBytes := func(elems uint64) uint64 {
		if p.Storage.Packed() {
			return (elems*2 + 3) &^ 3
		}
		return elems * 4
	}
	for _, x := range []struct {
		name string
		buf  *vk.Buffer
		need uint64
	}{
		{"DO", b.DO, tensorBytes(viewElems(b.DOView, p.B, p.Lq, p.H, p.D))},
		{"DQ", b.DQ, f32(b.DQView, p.Lq, p.H)},
		{"DK", b.DK, f32(b.DKView, p.Lk, p.Hkv)},
		{"DV", b.DV, f32(b.DVView, p.Lk, p.Hkv)},
		{"DDelta", b.DDelta, uint64(BwdDDeltaSize(p))},
		{"DSum", b.DSum, uint64(BwdDSumSize(p))},
	} {
		if x.buf == nil {
			return fmt.Errorf("kern: backward: buffer %s is nil", x.name)
		}
		if uint64(x.buf.Size()) < x.need {
			return fmt.Errorf("kern: backward: buffer %s has %d bytes, needs %d", x.name, x.buf.Size(), x.need)
		}
	}
	// The gradients are distinct buffers: the fast mode zeroes each one whole.
	outs := []*vk.Buffer{b.DQ, b.DK, b.DV, b.DDelta, b.DSum}
	if deterministic && b.CM2 == nil {
		outs = append(outs, b.Perm)
	}
	for i := range outs {
		for j := range i {
			if outs[i] == outs[j] {
				return fmt.Errorf("kern: backward: the gradient and DSum buffers must be distinct")
			}
		}
	}
	return nil
}

// RecordBackward records the portable backward pass of attention: dQ, dK, dV and
// dDelta from the forward's inputs, plan, O, LSE and dO (BwdBuffers). params already
// holds p (the caller ran r.Update and r.Barrier), the plan buffers are ready, and O and
// LSE are what RecordAttention wrote for the same p. p.Scale is used as is.
//
// Two modes (both compute dQ in one query pass that walks each tile's kept keys as the
// forward does, so its work is proportional to the kept (row, key) pairs):
//
//   - deterministic false (fast): the query pass also adds every tile's contributions
//     to dK, dV and dDelta with atomic compare-and-swap loops; the buffers DK, DV and
//     DDelta are zeroed first, whole. Their last bits vary from run to run (order of
//     float additions).
//   - deterministic true: the query pass writes dQ only; a key pass
//     (attention_bwd_kv.comp) then computes dK, dV and dDelta with one invocation per
//     output element summing in a fixed order: results are bit-identical run to run.
//     Its keys are ordered first (attention_bwd_order.comp, into Perm) so that a tile's
//     keys are kept by about the same rows: it computes scores for the kept pairs only,
//     and loads 1.15 to 1.4 times as many rows as there are kept pairs (mode row,
//     random weights; see the shader).
//
// With b.CM2 set the coopmat2 backward runs instead (recordBackwardCM2): tensor-core
// passes without float atomics, deterministic in both modes. stamp, when given, is
// called after each of its passes, for a profiler's timestamps.
//
// The recording ends with a barrier: the gradients are ready for later commands.
func (k *Kernels) RecordBackward(r *vk.Recorder, p *Params, params *vk.Buffer, b *BwdBuffers, deterministic bool, stamp ...func(pass string) error) error {
	if params == nil || b == nil {
		return fmt.Errorf("kern: backward: nil params or buffers")
	}
	if params.Size() < ParamsSize {
		return fmt.Errorf("kern: backward: params buffer has %d bytes, needs %d", params.Size(), ParamsSize)
	}
	caps := k.d.Caps()
	if err := checkAttention(p, &b.AttnBuffers); err != nil {
		return err
	}
	if err := checkBackward(p, b, deterministic); err != nil {
		return err
	}
	// Indices are 32-bit in the shaders.
	for _, x := range []struct {
		name string
		v    View
		l, h uint32
	}{{"dO", b.DOView, p.Lq, p.H}, {"dQ", b.DQView, p.Lq, p.H}, {"dK", b.DKView, p.Lk, p.Hkv}, {"dV", b.DVView, p.Lk, p.Hkv}} {
		if viewElems(x.v, p.B, x.l, x.h, p.D) > 1<<32 {
			return fmt.Errorf("kern: backward: the %s view passes 2^32 elements", x.name)
		}
	}
	if b.CM2 != nil {
		all := func(pass string) error {
			for _, s := range stamp {
				if err := s(pass); err != nil {
					return err
				}
			}
			return nil
		}
		if k.BackwardPath(p, b.DOView) == PathCoopMat {
			return k.recordBackwardCM(r, p, params, b, all)
		}
		return k.recordBackwardCM2(r, p, params, b, all) // or the reason it cannot
	}
	tile, err := BwdTiling(&caps, int(p.D))
	if err != nil {
		return err
	}
	scatter := uint32(1)
	if deterministic {
		scatter = 0
	}
	qpipe, err := k.pipelinePush("attention_bwd", bwdBindings, bwdPush, p.D, uint32(tile.BR), uint32(tile.BC), uint32(8*tile.BR), scatter)
	if err != nil {
		return err
	}
	var kpipe, opipe *vk.Pipeline
	if deterministic {
		if kpipe, err = k.pipelinePush("attention_bwd_kv", bwdBindings, bwdPush, p.D, uint32(tile.BK), uint32(tile.BRK), uint32(8*tile.BK)); err != nil {
			return err
		}
		if opipe, err = k.pipelinePush("attention_bwd_order", bwdBindings, bwdPush); err != nil {
			return err
		}
	}
	push := bwdPushBytes(b)
	or := func(x *vk.Buffer) *vk.Buffer {
		if x == nil {
			return b.Ord // unused plan, mask and bias bindings: never read
		}
		return x
	}
	binds := []vk.Binding{vk.Bind(params), vk.Bind(b.Q), vk.Bind(b.K), vk.Bind(b.V), vk.Bind(b.Ord),
		vk.Bind(or(b.U)), vk.Bind(or(b.UCount)), vk.Bind(or(b.Tau)), vk.Bind(or(b.Mask)), vk.Bind(or(b.Bias)),
		vk.Bind(b.O), vk.Bind(b.LSE), vk.Bind(b.DO), vk.Bind(b.DQ), vk.Bind(b.DK), vk.Bind(b.DV),
		vk.Bind(b.DDelta), vk.Bind(b.DSum), vk.Bind(b.DSum)}
	if deterministic {
		binds[18] = vk.Bind(b.Perm) // else unused: any buffer
	}

	if !deterministic {
		for _, buf := range []*vk.Buffer{b.DK, b.DV, b.DDelta} {
			if err := r.Fill(buf, 0, buf.Size(), 0); err != nil {
				return err
			}
		}
		r.Barrier()
	}
	_, tiles := AttnTiles(p.Lq, p.PosOffset, tile.BR)
	groups := [3]uint32{tiles, p.H, p.B}
	for i, g := range groups {
		if g > caps.MaxWorkgroupCount[i] {
			return fmt.Errorf("kern: backward: %d workgroups in dimension %d (tiles, heads, batch), %s allows %d", g, i, caps.Name, caps.MaxWorkgroupCount[i])
		}
	}
	kgroups := [3]uint32{Groups(int(p.Lk), tile.BK), p.Hkv, p.B}
	ogroups := [3]uint32{Groups(int(p.Lk), bwdOrderRun), p.Hkv, p.B}
	if deterministic {
		for i, g := range kgroups {
			if g > caps.MaxWorkgroupCount[i] {
				return fmt.Errorf("kern: backward: %d key-pass workgroups in dimension %d, %s allows %d", g, i, caps.Name, caps.MaxWorkgroupCount[i])
			}
		}
		// The keys' order for the key pass; independent of the query pass.
		if err := r.Dispatch(opipe, ogroups, push, binds...); err != nil {
			return err
		}
	}
	if err := r.Dispatch(qpipe, groups, push, binds...); err != nil {
		return err
	}
	r.Barrier()
	if !deterministic {
		return nil
	}
	if err := r.Dispatch(kpipe, kgroups, push, binds...); err != nil {
		return err
	}
	r.Barrier()
	return nil
}

// bwdPushBytes is the backward passes' push-constant block: the views of dO, dQ, dK, dV.
func bwdPushBytes(b *BwdBuffers) []byte {
	push := make([]byte, 0, bwdPush)
	for _, v := range []View{b.DOView, b.DQView, b.DKView, b.DVView} {
		for _, x := range []uint32{v.Off, v.SB, v.SL, v.SH} {
			push = binary.LittleEndian.AppendUint32(push, x)
		}
	}
	return push
}
