package kern

import (
	"encoding/binary"
	"fmt"

	"github.com/dmavk/dmavk/vk"
)

// WeightsBwdBuffers are the buffers of RecordWeightsBackward. V, Wdt, Bdt and A are
// RecordWeights' inputs (Bdt may be nil when Params.HasBdt is false); DDelta is the
// gradient of the weights, float32 [B][Hb][Lk] (BwdBuffers.DDelta). Outputs, float32:
// DA [Hb], DWdt [Hkv*D][Hb] (Wdt's layout), DBdt [Hb] (written only when
// Params.HasBdt; may then be nil otherwise), and DV, the [B, Lk, Hkv, D] float32
// tensor addressed by DVView to which the term of dV through Vf is added (zero it first
// for the term alone; give BwdBuffers.DV for the total). Scratch holds
// WeightsBwdScratchSize bytes.
type WeightsBwdBuffers struct {
	V, Wdt, Bdt, A, DDelta *vk.Buffer
	DA, DWdt, DBdt         *vk.Buffer
	DV                     *vk.Buffer
	DVView                 View
	Scratch                *vk.Buffer
}

// WeightsBwdScratchSize is the byte size of WeightsBwdBuffers.Scratch for p: ddt and
// the terms of dA, float32 [2][B*Lk][Hb], then the partial sums of the parameter
// gradients per segment of weightsBwdSeg rows, [S][Hkv*D + 2][Hb]: linear in B*Lk.
func WeightsBwdScratchSize(p *Params) int64 {
	n, kk, hb := int64(p.B)*int64(p.Lk), int64(p.Hkv)*int64(p.D), int64(p.Hb)
	s := (n + weightsBwdSeg - 1) / weightsBwdSeg
	return 4 * (2*n*hb + s*(kk+2)*hb)
}

const (
	weightsBwdBindings = 11
	weightsBwdWG       = 64  // local_size_x of weights_bwd.comp
	weightsBwdSeg      = 256 // its SEG: rows per partial sum of the parameter gradients
)

// RecordWeightsBackward records the backward of the dynamic weights (spec section 1,
// ref.WeightsBackward): from dDelta to dA, dWdt, dBdt and the term of dV through Vf,
// in four passes of shaders/weights_bwd.comp, each sum in a fixed order (results are
// bit-identical run to run). params already holds p; the fields read are B, Lk, Hkv, Hb,
// D, Storage, V, Form and HasBdt. The recording ends with a barrier.
func (k *Kernels) RecordWeightsBackward(r *vk.Recorder, p *Params, params *vk.Buffer, b *WeightsBwdBuffers) error {
	if err := checkWeightsParams("weights backward", p); err != nil {
		return err
	}
	if params == nil || b == nil {
		return fmt.Errorf("kern: weights backward: nil params or buffers")
	}
	bdt, dbdt := b.Bdt, b.DBdt
	if !p.HasBdt {
		// Never read or written: any buffer fills the bindings.
		if bdt == nil {
			bdt = b.A
		}
		if dbdt == nil {
			dbdt = b.DA
		}
	}
	n, kk, hb := int64(p.B)*int64(p.Lk), int64(p.Hkv)*int64(p.D), int64(p.Hb)
	// The shader counts items in 32-bit integers, grid-stride.
	segs := (n + weightsBwdSeg - 1) / weightsBwdSeg
	if n*hb >= 1<<30 || n*kk >= 1<<31 || segs*(kk+2)*hb >= 1<<30 || weightsLastV(p) >= 1<<32 ||
		viewElems(b.DVView, p.B, p.Lk, p.Hkv, p.D) > 1<<32 {
		return fmt.Errorf("kern: weights backward: shape B=%d Lk=%d Hkv=%d D=%d Hb=%d overflows 32-bit indices", p.B, p.Lk, p.Hkv, p.D, p.Hb)
	}
	wantV, wantW, wantB, wantA, wantD := WeightsSizes(p)
	for _, c := range []struct {
		name string
		buf  *vk.Buffer
		want int64
	}{
		{"params", params, ParamsSize}, {"V", b.V, wantV}, {"Wdt", b.Wdt, wantW}, {"bdt", bdt, wantB}, {"A", b.A, wantA},
		{"dDelta", b.DDelta, wantD}, {"dA", b.DA, wantA}, {"dWdt", b.DWdt, wantW}, {"dBdt", dbdt, wantB},
		{"dV", b.DV, int64(viewElems(b.DVView, p.B, p.Lk, p.Hkv, p.D)) * 4}, {"scratch", b.Scratch, WeightsBwdScratchSize(p)},
	} {
		if c.buf == nil {
			return fmt.Errorf("kern: weights backward: buffer %s is nil", c.name)
		}
		if c.buf.Size() < c.want {
			return fmt.Errorf("kern: weights backward: %s buffer has %d bytes, needs %d (B=%d Lk=%d Hkv=%d D=%d Hb=%d %v)",
				c.name, c.buf.Size(), c.want, p.B, p.Lk, p.Hkv, p.D, p.Hb, p.Storage)
		}
	}
	push := make([]byte, 0, 16)
	for _, x := range []uint32{b.DVView.Off, b.DVView.SB, b.DVView.SL, b.DVView.SH} {
		push = binary.LittleEndian.AppendUint32(push, x)
	}
	maxX := int64(k.d.Caps().MaxWorkgroupCount[0])
	// Passes in order: ddt, partial sums, their reduction, dV (the shader's numbering).
	for _, x := range []struct {
		pass  uint32
		items int64
	}{{0, n * hb}, {1, segs * (kk + 2) * hb}, {3, (kk + 2) * hb}, {2, n * kk}} {
		pass, items := x.pass, x.items
		pipe, err := k.pipelinePush("weights_bwd", weightsBwdBindings, len(push), pass)
		if err != nil {
			return err
		}
		groups := min((items+weightsBwdWG-1)/weightsBwdWG, maxX) // the shader loops over the rest
		if err := r.Dispatch(pipe, [3]uint32{uint32(groups), 1, 1}, push,
			vk.Bind(params), vk.Bind(b.V), vk.Bind(b.Wdt), vk.Bind(bdt), vk.Bind(b.A), vk.Bind(b.DDelta),
			vk.Bind(b.Scratch), vk.Bind(b.DWdt), vk.Bind(b.DA), vk.Bind(dbdt), vk.Bind(b.DV)); err != nil {
			return err
		}
		r.Barrier()
	}
	return nil
}
