package kern

import (
	"fmt"

	"github.com/dmavk/dmavk/vk"
)

// weightsConfig is the tiling of shaders/weights.comp (its specialization constants):
// 256 invocations, cx along the bias heads with tn heads each, 256/cx along the keys with
// tm keys each, K walked in steps of bk.
type weightsConfig struct {
	cx, tn, tm, bk uint32
}

func (c weightsConfig) keys() uint32  { return 256 / c.cx * c.tm }
func (c weightsConfig) heads() uint32 { return c.cx * c.tn }

// shared is the bytes of shared memory the shader declares.
func (c weightsConfig) shared() uint32 { return 4 * c.bk * (c.keys() + 1 + c.heads()) }

// weightsMaxShared caps the shared memory of one workgroup below the device limit, so
// that several workgroups fit on a multiprocessor.
const weightsMaxShared = 24 << 10

// chooseWeights tiles hb bias heads: a tile spans the next power of two of hb up to 64
// heads (more heads take several tiles), and 64 to 256 keys, so that few lanes idle when
// hb is small.
func chooseWeights(hb, maxShared uint32) (weightsConfig, error) {
	w := uint32(1)
	for w < min(hb, 64) {
		w *= 2
	}
	c := weightsConfig{tn: min(4, w)}
	c.cx = w / c.tn
	c.tm = max(1, 64/(256/c.cx))
	limit := min(maxShared, weightsMaxShared)
	for c.bk = 32; c.bk > 1 && c.shared() > limit; c.bk /= 2 {
	}
	if c.shared() > maxShared {
		return c, fmt.Errorf("kern: weights: the tile needs %d bytes of shared memory, the device has %d", c.shared(), maxShared)
	}
	return c, nil
}

// WeightsSizes gives the least byte sizes of the buffers of RecordWeights for p: V
// (as addressed by p.V in p's storage dtype, rounded up to whole 32-bit words), Wdt,
// bdt (0 unless p.HasBdt), A and delta.
func WeightsSizes(p *Params) (v, wdt, bdt, a, delta int64) {
	last := weightsLastV(p)
	if p.Storage.Packed() {
		v = (last/2 + 1) * 4
	} else {
		v = (last + 1) * 4
	}
	wdt = int64(p.Hkv) * int64(p.D) * int64(p.Hb) * 4
	if p.HasBdt {
		bdt = int64(p.Hb) * 4
	}
	a = int64(p.Hb) * 4
	delta = int64(p.B) * int64(p.Hb) * int64(p.Lk) * 4
	return v, wdt, bdt, a, delta
}

// weightsLastV is the index of the last element of V that p.V addresses.
func weightsLastV(p *Params) int64 {
	return int64(p.V.Off) + int64(p.B-1)*int64(p.V.SB) + int64(p.Lk-1)*int64(p.V.SL) +
		int64(p.Hkv-1)*int64(p.V.SH) + int64(p.D-1)
}

// RecordWeights records the dynamic-weights dispatch (spec section 1): from V
// ([B, Lk, Hkv, D] through the view p.V, in p.Storage: float32, or packed fp16 or
// bf16), Wdt (float32 [Hkv*D][Hb] row-major), bdt (float32 [Hb], read only when
// p.HasBdt; when absent any buffer, or nil, may be given) and A (float32 [Hb]) it
// writes delta, float32 [B][Hb][Lk] (index (b*Hb+c)*Lk+j), in form p.Form (0 exp, 1
// linear). params must already hold p (the caller does r.Update(params, 0, p.Bytes()) and r.Barrier() before);
// the fields read are B, Lk, Hkv, Hb, D, Storage, V, Form and HasBdt. A later reader of
// delta needs a Barrier after it.
func (k *Kernels) RecordWeights(r *vk.Recorder, p *Params, params, v, wdt, bdt, a, delta *vk.Buffer) error {
	if err := checkWeightsParams("weights", p); err != nil {
		return err
	}
	if params == nil || v == nil || wdt == nil || a == nil || delta == nil {
		return fmt.Errorf("kern: weights: nil buffer")
	}
	if bdt == nil {
		if p.HasBdt {
			return fmt.Errorf("kern: weights: HasBdt is set but bdt is nil")
		}
		bdt = a // any buffer: the shader does not read it
	}
	// The shader indexes with 32-bit integers.
	const maxIndex = 1<<32 - 1
	if k64 := int64(p.Hkv) * int64(p.D); k64*int64(p.Hb) > maxIndex || int64(p.B)*int64(p.Hb)*int64(p.Lk) > maxIndex {
		return fmt.Errorf("kern: weights: shape B=%d Lk=%d Hkv=%d D=%d Hb=%d overflows 32-bit indices", p.B, p.Lk, p.Hkv, p.D, p.Hb)
	}
	if last := weightsLastV(p); last > maxIndex {
		return fmt.Errorf("kern: weights: the V view reaches element %d, beyond 32-bit indices", last)
	}
	wantV, wantW, wantB, wantA, wantD := WeightsSizes(p)
	for _, c := range []struct {
		name string
		buf  *vk.Buffer
		want int64
	}{
		{"params", params, ParamsSize}, {"V", v, wantV}, {"Wdt", wdt, wantW},
		{"bdt", bdt, wantB}, {"A", a, wantA}, {"delta", delta, wantD},
	} {
		if c.buf.Size() < c.want {
			return fmt.Errorf("kern: weights: %s buffer has %d bytes, needs %d (B=%d Lk=%d Hkv=%d D=%d Hb=%d %v)",
				c.name, c.buf.Size(), c.want, p.B, p.Lk, p.Hkv, p.D, p.Hb, p.Storage)
		}
	}
	caps := k.d.Caps()
	cfg, err := chooseWeights(p.Hb, caps.MaxSharedMemory)
	if err != nil {
		return err
	}
	groups := [3]uint32{Groups(int(p.Lk), int(cfg.keys())), Groups(int(p.Hb), int(cfg.heads())), p.B}
	for i, g := range groups {
		if g > caps.MaxWorkgroupCount[i] {
			return fmt.Errorf("kern: weights: %d workgroups along dimension %d (B=%d Lk=%d Hb=%d), the device allows %d",
				g, i, p.B, p.Lk, p.Hb, caps.MaxWorkgroupCount[i])
		}
	}
	pipe, err := k.Pipeline("weights", 6, cfg.cx, cfg.tn, cfg.tm, cfg.bk)
	if err != nil {
		return err
	}
	return r.Dispatch(pipe, groups, nil, vk.Bind(params), vk.Bind(v), vk.Bind(wdt), vk.Bind(bdt), vk.Bind(a), vk.Bind(delta))
}

// checkWeightsParams checks the fields of p the dynamic weights and their backward read
// (op names the caller in the error).
func checkWeightsParams(op string, p *Params) error {
	if p.B == 0 || p.Lk == 0 || p.Hkv == 0 || p.D == 0 || p.Hb == 0 {
		return fmt.Errorf("kern: %s: empty shape B=%d Lk=%d Hkv=%d D=%d Hb=%d", op, p.B, p.Lk, p.Hkv, p.D, p.Hb)
	}
	if p.Form != 0 && p.Form != 1 {
		return fmt.Errorf("kern: %s: unknown form %d (0 exp, 1 linear)", op, p.Form)
	}
	if !p.Storage.Valid() {
		return fmt.Errorf("kern: %s: unknown storage %v", op, p.Storage)
	}
	return nil
}
