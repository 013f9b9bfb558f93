package kern

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/vk"
)

// packCase is one shape of the pack test.
type packCase struct {
	b, lq, lk, h, hkv, d, w int
	hbIsH                   bool // Hb = H (else Hb = Hkv)
	mode                    uint32
	causal                  bool
	storage                 Storage
	bhld                    bool   // K and V stored [B, Hkv, Lk, D] (else [B, Lk, Hkv, D])
	kOff, vOff              uint32 // element offsets of the views
	pad                     int    // padNone, padSome, padAll
	groups                  int64  // > 0: at most this many workgroups (grid-stride rounds)
	wantVec                 bool   // the 16-byte variant runs
}

func (c packCase) String() string {
	layout := "BLHD"
	if c.bhld {
		layout = "BHLD"
	}
	hb := "Hkv"
	if c.hbIsH {
		hb = "H"
	}
	mode := map[uint32]string{ModeRow: "row", ModeShared: "shared"}[c.mode]
	if c.causal {
		mode += "-causal"
	}
	s := fmt.Sprintf("%s/B%d_Lq%d_Lk%d_H%d_Hkv%d_Hb=%s_D%d_w%d/%v_%s_off%d,%d/%s",
		mode, c.b, c.lq, c.lk, c.h, c.hkv, hb, c.d, c.w, c.storage, layout, c.kOff, c.vOff, padNames[c.pad])
	if c.groups > 0 {
		s += fmt.Sprintf("/groups%d", c.groups)
	}
	return s
}

var packCases = []packCase{
	// Mode row, causal: one region per block.
	{b: 2, lq: 300, lk: 300, h: 4, hkv: 2, d: 64, w: 7, hbIsH: true, mode: ModeRow, causal: true, storage: StorageF16, pad: padSome, wantVec: true},
	{b: 1, lq: 200, lk: 333, h: 2, hkv: 2, d: 128, w: 64, mode: ModeRow, causal: true, storage: StorageBF16, bhld: true, kOff: 8, vOff: 16, wantVec: true},
	{b: 2, lq: 150, lk: 150, h: 6, hkv: 2, d: 128, w: 100, mode: ModeRow, causal: true, storage: StorageF16, bhld: true, pad: padSome, wantVec: true},
	{b: 2, lq: 100, lk: 1000, h: 4, hkv: 1, d: 32, w: 1, hbIsH: true, mode: ModeRow, causal: true, storage: StorageBF16, pad: padSome, wantVec: true},
	{b: 2, lq: 50, lk: 50, h: 2, hkv: 1, d: 128, w: 60, mode: ModeRow, causal: true, storage: StorageF16, kOff: 1, vOff: 3}, // w >= L, odd offsets
	{b: 1, lq: 70, lk: 70, h: 3, hkv: 3, d: 20, w: 70, hbIsH: true, mode: ModeRow, causal: true, storage: StorageF16, bhld: true, pad: padSome},
	{b: 2, lq: 130, lk: 130, h: 2, hkv: 2, d: 6, w: 3, mode: ModeRow, causal: true, storage: StorageBF16, kOff: 5, pad: padAll},
	{b: 1, lq: 65, lk: 129, h: 2, hkv: 1, d: 256, w: 2, mode: ModeRow, causal: true, storage: StorageF16, bhld: true, wantVec: true},
	{b: 2, lq: 300, lk: 300, h: 4, hkv: 2, d: 64, w: 7, hbIsH: true, mode: ModeRow, causal: true, storage: StorageF16, pad: padSome, groups: 3, wantVec: true},
	{b: 1, lq: 200, lk: 200, h: 2, hkv: 2, d: 20, w: 30, mode: ModeRow, causal: true, storage: StorageBF16, bhld: true, kOff: 1, groups: 2},
	// Mode shared, and row without causality: one region per (batch, bias head).
	{b: 2, lq: 130, lk: 130, h: 6, hkv: 2, d: 20, w: 3, mode: ModeShared, causal: false, storage: StorageF16, bhld: true, pad: padSome},
	{b: 1, lq: 100, lk: 70, h: 4, hkv: 1, d: 6, w: 70, hbIsH: true, mode: ModeShared, causal: true, storage: StorageBF16, kOff: 3, vOff: 2},
	{b: 2, lq: 65, lk: 65, h: 2, hkv: 2, d: 128, w: 1, mode: ModeRow, causal: false, storage: StorageF16, kOff: 1, vOff: 1},
	{b: 2, lq: 40, lk: 500, h: 4, hkv: 2, d: 128, w: 100, hbIsH: true, mode: ModeShared, causal: true, storage: StorageBF16, bhld: true, pad: padSome, wantVec: true},
	{b: 1, lq: 300, lk: 300, h: 8, hkv: 2, d: 64, w: 200, mode: ModeRow, causal: false, storage: StorageF16, kOff: 24, vOff: 8, pad: padAll, wantVec: true},
	{b: 2, lq: 30, lk: 30, h: 2, hkv: 2, d: 2, w: 50, hbIsH: true, mode: ModeShared, causal: false, storage: StorageF16, groups: 1},
}

// packView is the view of a [B, L, Hkv, D] tensor stored [B, L, Hkv, D] or [B, Hkv, L, D].
func packView(c packCase, off uint32) View {
	lk, hkv, d := uint32(c.lk), uint32(c.hkv), uint32(c.d)
	if c.bhld {
		return View{Off: off, SB: hkv * lk * d, SL: d, SH: lk * d}
	}
	return View{Off: off, SB: lk * hkv * d, SL: hkv * d, SH: d}
}

// packParams builds the parameters of c as the attention caller does.
func packParams(c packCase) *Params {
	hb := c.hkv
	if c.hbIsH {
		hb = c.h
	}
	p := planParams(c.b, hb, c.lq, c.lk, c.w, c.mode, c.causal)
	p.H, p.Hkv, p.G, p.D = uint32(c.h), uint32(c.hkv), uint32(c.h/c.hkv), uint32(c.d)
	p.Storage = c.storage
	p.K, p.V = packView(c, c.kOff), packView(c, c.vOff)
	return p
}

// randomBytes is n random bytes, n rounded up to 4.
func randomBytes(rng *rand.Rand, n int64) []byte {
	out := make([]byte, (n+3)&^3)
	for i := 0; i < len(out); i += 4 {
		binary.LittleEndian.PutUint32(out[i:], rng.Uint32())
	}
	return out
}

// packGather is the CPU pack: GK (or GV) from the tensor's buffer image src, through
// view v, and the downloaded U and ucount.
func packGather(t *testing.T, p *Params, v View, src []byte, u []Key, ucount []uint32) []byte {
	t.Helper()
	R, NP, D := PackRegions(p), PackRows(p), int(p.D)
	nb, ncap, hb := int(p.NBlocks), int(p.NCap), int(p.Hb)
	out := make([]byte, PackSize(p))
	for r := range R {
		bh, list := r, r*(nb+1)+nb
		if packRowCausal(p) {
			bh = r / nb
			list = bh*(nb+1) + r%nb
		}
		b, h := bh/hb, bh%hb
		kvh := h
		if p.Hb != p.Hkv {
			kvh = h / int(p.G)
		}
		n := int(ucount[list])
		if n > ncap {
			t.Fatalf("region %d: ucount[%d] = %d > ncap %d", r, list, n, ncap)
		}
		for i := range n {
			idx := int(u[list*ncap+i].Idx)
			if idx >= int(p.Lk) {
				t.Fatalf("region %d: U[%d][%d] has key %d >= Lk %d", r, list, i, idx, p.Lk)
			}
			e := int(v.Off) + b*int(v.SB) + idx*int(v.SL) + kvh*int(v.SH)
			copy(out[2*((r*NP+i)*D):][:2*D], src[2*e:])
		}
	}
	return out
}

// poisonBytes is n bytes of the poison word.
func poisonBytes(n int) []byte {
	out := make([]byte, n)
	for i := 0; i+4 <= n; i += 4 {
		binary.LittleEndian.PutUint32(out[i:], poison)
	}
	return out
}

// comparePack reports the first difference between got and want (GK or GV, then the
// poison tail that must stay) by region, row and element.
func comparePack(t *testing.T, what string, p *Params, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	size := int(PackSize(p))
	bad := 0
	for i := range got {
		if got[i] == want[i] {
			continue
		}
		if bad++; bad > 5 {
			continue
		}
		if i >= size {
			t.Errorf("%s: byte %d past PackSize %d written: %#x", what, i, size, got[i])
			continue
		}
		e := i / 2
		D, NP := int(p.D), PackRows(p)
		r, row, col := e/(NP*D), e/D%NP, e%D
		t.Errorf("%s: region %d row %d element %d: got %#04x, want %#04x", what, r, row, col,
			binary.LittleEndian.Uint16(got[2*e:]), binary.LittleEndian.Uint16(want[2*e:]))
	}
	t.Errorf("%s: %d bytes differ", what, bad)
}

func TestPack(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(selectSeed(t), 11))
	for _, c := range packCases {
		t.Run(c.String(), func(t *testing.T) {
			p := packParams(c)
			if got := packVec(p); got != c.wantVec {
				t.Fatalf("packVec = %v, want %v", got, c.wantVec)
			}
			if np := PackRows(p); np%64 != 0 || np < int(p.NCap) || np >= int(p.NCap)+64 {
				t.Fatalf("PackRows = %d for ncap %d", np, p.NCap)
			}
			// K and V: random 16-bit patterns everywhere (NaN and Inf included: the copy
			// is raw), the gaps and the offset too.
			kImg := randomBytes(rng, viewBytes(p, p.K))
			vImg := randomBytes(rng, viewBytes(p, p.V))
			kb, vb := newBuf(t, d, int64(len(kImg))), newBuf(t, d, int64(len(vImg)))
			for _, x := range []struct {
				b   *vk.Buffer
				img []byte
			}{{kb, kImg}, {vb, vImg}} {
				if err := x.b.Upload(ctx, 0, x.img); err != nil {
					t.Fatal(err)
				}
			}
			delta := genWeights(rng, []int{wNormal, wNormal, wDup3, wEqual}[rng.IntN(4)], c.b*int(p.Hb)*c.lk)
			db := f32Bytes(delta)
			dbuf := newBuf(t, d, int64(len(db)))
			if err := dbuf.Upload(ctx, 0, db); err != nil {
				t.Fatal(err)
			}
			valid := genPadding(rng, c.pad, c.b, c.lk)
			var pbuf *vk.Buffer
			p.KeyPadding = valid != nil
			if valid != nil {
				pb := make([]byte, (c.b*c.lk+3)&^3)
				for b := range valid {
					for j, ok := range valid[b] {
						if ok {
							pb[b*c.lk+j] = 1
						}
					}
				}
				pbuf = newBuf(t, d, int64(len(pb)))
				if err := pbuf.Upload(ctx, 0, pb); err != nil {
					t.Fatal(err)
				}
			}
			plan, err := NewPlanBuffers(d, p)
			if err != nil {
				t.Fatal(err)
			}
			defer plan.Close()
			params := newBuf(t, d, ParamsSize)
			const tail = 64 // bytes past PackSize that must stay poison
			size := PackSize(p)
			gk, gv := newBuf(t, d, size+tail), newBuf(t, d, size+tail)
			groups := c.groups
			if groups == 0 {
				groups = int64(d.Caps().MaxWorkgroupCount[0])
			}
			err = d.Run(ctx, func(r *vk.Recorder) error {
				for _, b := range []*vk.Buffer{plan.Ord, plan.U, plan.UCount, plan.Tau, plan.Scratch, gk, gv} {
					if err := r.Fill(b, 0, b.Size(), poison); err != nil {
						return err
					}
				}
				if err := r.Update(params, 0, p.Bytes()); err != nil {
					return err
				}
				r.Barrier()
				if err := k.RecordPlan(r, p, params, dbuf, pbuf, plan); err != nil {
					return err
				}
				return k.recordPack(r, p, params, kb, vb, plan, gk, gv, 0, int(p.B*p.Hb), groups)
			})
			if err != nil {
				t.Fatal(err)
			}
			u, ucount := keys(download(t, plan.U)), u32s(download(t, plan.UCount))
			// The plan that drives the gather is the CPU's (else the test could pass on
			// an empty plan).
			nb, ncap := int(p.NBlocks), int(p.NCap)
			kept := 0
			for bh := range c.b * int(p.Hb) {
				cpu := BuildPlanCPU(oracleOrd(p, delta, valid, bh/int(p.Hb), bh%int(p.Hb)), c.w, c.lq, false)
				for e, want := range cpu.U {
					list := bh*(nb+1) + e
					if got := u[list*ncap:][:min(int(ucount[list]), ncap)]; int(ucount[list]) != len(want) || firstDiff(got, want) >= 0 {
						t.Fatalf("bh %d: U_%d differs from BuildPlanCPU (ucount %d, want %d)", bh, e, ucount[list], len(want))
					}
					kept += len(want)
				}
			}
			if (kept == 0) != (c.pad == padAll) {
				t.Fatalf("%d keys in the U lists with padding %s", kept, padNames[c.pad])
			}
			for _, x := range []struct {
				name string
				buf  *vk.Buffer
				view View
				img  []byte
			}{{"GK", gk, p.K, kImg}, {"GV", gv, p.V, vImg}} {
				want := append(packGather(t, p, x.view, x.img, u, ucount), poisonBytes(tail)...)
				comparePack(t, x.name, p, download(t, x.buf), want)
			}
			t.Logf("R=%d NP=%d, %d kept rows, vec=%v", PackRegions(p), PackRows(p), kept, packVec(p))
		})
	}
}

func TestPackSizes(t *testing.T) {
	for _, c := range []struct {
		mode          uint32
		causal        bool
		lk, w, b, hb  int
		wantR, wantNP int
	}{
		{ModeRow, true, 1000, 1, 2, 3, 2 * 3 * 16, 128}, // C = 64, ncap = 65
		{ModeRow, true, 300, 64, 1, 1, 5, 128},          // ncap = 128
		{ModeRow, false, 300, 65, 1, 2, 2, 256},         // C = 128, ncap = 193
		{ModeShared, true, 300, 7, 2, 2, 4, 128},        // ncap = 71
		{ModeShared, false, 5000, 2048, 1, 8, 8, 4096},  // ncap = 4096
		{ModeNone, true, 300, 7, 2, 2, 0, 128},
		{ModeExplicit, false, 300, 7, 2, 2, 0, 128},
	} {
		p := planParams(c.b, c.hb, c.lk, c.lk, c.w, c.mode, c.causal)
		p.D = 96
		if r, np := PackRegions(p), PackRows(p); r != c.wantR || np != c.wantNP {
			t.Errorf("mode %d causal %v Lk %d w %d: R %d NP %d, want %d %d", c.mode, c.causal, c.lk, c.w, r, np, c.wantR, c.wantNP)
		}
		if s := PackSize(p); s != int64(c.wantR*c.wantNP*96*2) {
			t.Errorf("PackSize %d, want %d", s, c.wantR*c.wantNP*96*2)
		}
	}
}

func TestPackErrors(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	c := packCase{b: 2, lq: 100, lk: 100, h: 4, hkv: 2, d: 64, w: 7, mode: ModeRow, causal: true, storage: StorageF16}
	base := packParams(c)
	plan, err := NewPlanBuffers(d, base)
	if err != nil {
		t.Fatal(err)
	}
	defer plan.Close()
	params := newBuf(t, d, ParamsSize)
	kb, vb := newBuf(t, d, viewBytes(base, base.K)), newBuf(t, d, viewBytes(base, base.V))
	gk, gv := newBuf(t, d, PackSize(base)), newBuf(t, d, PackSize(base))
	small := newBuf(t, d, 16)
	type args struct {
		kb, vb, gk, gv *vk.Buffer
		plan           PlanBuffers
	}
	for _, tc := range []struct {
		name string
		edit func(p *Params, a *args)
		want string
	}{
		{"oddD", func(p *Params, a *args) { p.D = 63 }, "D=63, must be even"},
		{"bigD", func(p *Params, a *args) { p.D = 258 }, "at most 256"},
		{"fp32", func(p *Params, a *args) { p.Storage = StorageF32 }, "must be 16-bit"},
		{"storage", func(p *Params, a *args) { p.Storage = 7 }, "unknown storage"},
		{"none", func(p *Params, a *args) { p.Mode = ModeNone }, "no plan to pack"},
		{"explicit", func(p *Params, a *args) { p.Mode = ModeExplicit }, "no plan to pack"},
		{"hb", func(p *Params, a *args) { p.Hb = 3 }, "neither H"},
		{"g", func(p *Params, a *args) { p.G = 1 }, "want G=H/Hkv"},
		{"empty", func(p *Params, a *args) { p.Lk = 0 }, "empty shape"},
		{"window", func(p *Params, a *args) { p.Window = 8 }, "window 8 wants"},
		{"K", func(p *Params, a *args) { a.kb = small }, "K buffer has"},
		{"V", func(p *Params, a *args) { p.V.Off = 2 }, "V buffer has"},
		{"U", func(p *Params, a *args) { a.plan.U = small }, "U buffer has"},
		{"ucount", func(p *Params, a *args) { a.plan.UCount = nil }, "ucount buffer is nil"},
		{"GK", func(p *Params, a *args) { a.gk = small }, "GK buffer has"},
		{"GV", func(p *Params, a *args) { p.Causal = 0; p.Mode = ModeShared; a.gv = small }, "GV buffer has"},
		{"index", func(p *Params, a *args) { p.K.Off = 1<<32 - 100 }, "32-bit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := *base
			a := args{kb, vb, gk, gv, *plan}
			tc.edit(&p, &a)
			err := d.Run(context.Background(), func(r *vk.Recorder) error {
				return k.RecordPack(r, &p, params, a.kb, a.vb, &a.plan, a.gk, a.gv)
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// vcheckCase is one shape of the V check test.
type vcheckCase struct {
	b, lk, hkv, d int
	storage       Storage
	bhld          bool
	gap           uint32 // elements between consecutive rows of a head's layout (junk: NaN)
	off           uint32
	groups        int64
	wantVec       bool
}

func (c vcheckCase) String() string {
	layout := "BLHD"
	if c.bhld {
		layout = "BHLD"
	}
	s := fmt.Sprintf("B%d_Lk%d_Hkv%d_D%d/%v_%s_gap%d_off%d", c.b, c.lk, c.hkv, c.d, c.storage, layout, c.gap, c.off)
	if c.groups > 0 {
		s += fmt.Sprintf("/groups%d", c.groups)
	}
	return s
}

// view is the case's V view: rows of D elements followed by gap junk elements.
func (c vcheckCase) view() View {
	lk, hkv, pitch := uint32(c.lk), uint32(c.hkv), uint32(c.d)+c.gap
	if c.bhld {
		return View{Off: c.off, SB: hkv*lk*pitch + c.gap, SL: pitch, SH: lk * pitch}
	}
	return View{Off: c.off, SB: lk*hkv*pitch + c.gap, SL: hkv * pitch, SH: pitch}
}

var vcheckCases = func() []vcheckCase {
	var cs []vcheckCase
	for _, st := range []Storage{StorageF16, StorageBF16, StorageF32} {
		cs = append(cs,
			vcheckCase{b: 2, lk: 50, hkv: 3, d: 64, storage: st, wantVec: true},
			vcheckCase{b: 2, lk: 37, hkv: 2, d: 128, storage: st, bhld: true, gap: 8, off: 8, wantVec: true},
			vcheckCase{b: 1, lk: 300, hkv: 4, d: 32, storage: st, groups: 2, wantVec: true},
			vcheckCase{b: 2, lk: 20, hkv: 3, d: 6, storage: st, gap: 1, off: 1},
			vcheckCase{b: 3, lk: 9, hkv: 2, d: 5, storage: st, bhld: true, gap: 3, off: 3},
			vcheckCase{b: 2, lk: 33, hkv: 2, d: 20, storage: st, gap: 2, off: 2, groups: 1, wantVec: false},
			vcheckCase{b: 1, lk: 1, hkv: 1, d: 1, storage: st},
		)
	}
	return cs
}()

// Bit patterns of the V check test, per storage: finite values that must not flag
// (the largest, subnormals, zeros) and non-finite ones (NaNs, +Inf, -Inf).
var (
	vcheckFinite = map[Storage][]uint32{
		StorageF16:  {0x7bff, 0xfbff, 0x0001, 0x8000, 0x0000, 0x3c00, 0x7800},
		StorageBF16: {0x7f7f, 0xff7f, 0x0001, 0x8000, 0x0000, 0x3f80, 0x7f00},
		StorageF32:  {0x7f7fffff, 0xff7fffff, 0x00000001, 0x80000000, 0, 0x3f800000, 0x7f000000},
	}
	vcheckNonFinite = map[Storage][]uint32{
		StorageF16:  {0x7c00, 0xfc00, 0x7e00, 0x7c01, 0xffff},
		StorageBF16: {0x7f80, 0xff80, 0x7fc0, 0x7f81, 0xffff},
		StorageF32:  {0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffffffff},
	}
)

func TestVCheck(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(selectSeed(t), 12))
	for _, c := range vcheckCases {
		t.Run(c.String(), func(t *testing.T) {
			p := &Params{B: uint32(c.b), Lq: uint32(c.lk), Lk: uint32(c.lk), H: uint32(c.hkv), Hkv: uint32(c.hkv),
				Hb: uint32(c.hkv), G: 1, D: uint32(c.d), Storage: c.storage, V: c.view()}
			if got := vcheckVec(p); got != c.wantVec {
				t.Fatalf("vcheckVec = %v, want %v", got, c.wantVec)
			}
			elem := 4
			if c.storage.Packed() {
				elem = 2
			}
			img := make([]byte, viewBytes(p, p.V)+16)
			n := len(img) / elem
			put := func(i int, bits uint32) {
				if elem == 2 {
					binary.LittleEndian.PutUint16(img[2*i:], uint16(bits))
				} else {
					binary.LittleEndian.PutUint32(img[4*i:], bits)
				}
			}
			nans := vcheckNonFinite[c.storage]
			finite := vcheckFinite[c.storage]
			// Junk everywhere: NaN, which must not be seen outside the view.
			for i := range n {
				put(i, nans[rng.IntN(len(nans))])
			}
			at := func(b, j, h, e int) int {
				v := p.V
				return int(v.Off) + b*int(v.SB) + j*int(v.SL) + h*int(v.SH) + e
			}
			for b := range c.b {
				for j := range c.lk {
					for h := range c.hkv {
						for e := range c.d {
							bits := finite[rng.IntN(len(finite))]
							if rng.IntN(2) == 0 { // random finite values too
								x := float32(rng.NormFloat64())
								switch c.storage {
								case StorageF16:
									bits = 0x3800 | rng.Uint32N(0x400)
								case StorageBF16:
									bits = math.Float32bits(x) >> 16
								default:
									bits = math.Float32bits(x)
								}
							}
							put(at(b, j, h, e), bits)
						}
					}
				}
			}
			// Poison some heads: one to three non-finite values each, at the first and
			// last element of the head in turn.
			want := make([]bool, c.b*c.hkv)
			for i := range want {
				want[i] = rng.IntN(2) == 0
			}
			if len(want) > 1 {
				want[0], want[len(want)-1] = true, false
			}
			for i, poisoned := range want {
				if !poisoned {
					continue
				}
				b, h := i/c.hkv, i%c.hkv
				for m := range 1 + rng.IntN(3) {
					j, e := rng.IntN(c.lk), rng.IntN(c.d)
					switch (i + m) % 3 {
					case 0:
						j, e = 0, 0
					case 1:
						j, e = c.lk-1, c.d-1
					}
					put(at(b, j, h, e), nans[rng.IntN(len(nans))])
				}
			}
			vb := newBuf(t, d, int64(len(img)))
			if err := vb.Upload(ctx, 0, img); err != nil {
				t.Fatal(err)
			}
			params := newBuf(t, d, ParamsSize)
			flags := newBuf(t, d, VCheckSize(p)+16)
			groups := c.groups
			if groups == 0 {
				groups = int64(d.Caps().MaxWorkgroupCount[0])
			}
			err := d.Run(ctx, func(r *vk.Recorder) error {
				if err := r.Fill(flags, 0, flags.Size(), poison); err != nil {
					return err
				}
				if err := r.Update(params, 0, p.Bytes()); err != nil {
					return err
				}
				r.Barrier()
				return k.recordVCheck(r, p, params, vb, flags, groups)
			})
			if err != nil {
				t.Fatal(err)
			}
			got := u32s(download(t, flags))
			for i, w := range want {
				if g := got[i]; (g != 0) != w {
					t.Errorf("flags[b=%d kvh=%d] = %#x, want nonzero = %v", i/c.hkv, i%c.hkv, g, w)
				}
			}
			for i, g := range got[len(want):] {
				if g != poison {
					t.Errorf("flags word %d past B*Hkv written: %#x", len(want)+i, g)
				}
			}
		})
	}
}

func TestVCheckErrors(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	c := vcheckCase{b: 2, lk: 10, hkv: 2, d: 8, storage: StorageBF16}
	base := &Params{B: 2, Lq: 10, Lk: 10, H: 2, Hkv: 2, Hb: 2, G: 1, D: 8, Storage: c.storage, V: c.view()}
	params := newBuf(t, d, ParamsSize)
	vb := newBuf(t, d, viewBytes(base, base.V))
	flags := newBuf(t, d, VCheckSize(base))
	for _, tc := range []struct {
		name string
		edit func(p *Params, v, f **vk.Buffer)
		want string
	}{
		{"empty", func(p *Params, v, f **vk.Buffer) { p.D = 0 }, "empty shape"},
		{"storage", func(p *Params, v, f **vk.Buffer) { p.Storage = 3 }, "unknown storage"},
		{"V", func(p *Params, v, f **vk.Buffer) { p.V.Off = 1 }, "V buffer has"},
		{"fp32", func(p *Params, v, f **vk.Buffer) { p.Storage = StorageF32 }, "V buffer has"},
		{"flags", func(p *Params, v, f **vk.Buffer) { p.B = 3; p.V.Off = 0; *v = newBuf(t, d, 4096) }, "flags buffer has"},
		{"nil", func(p *Params, v, f **vk.Buffer) { *f = nil }, "flags buffer is nil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, v, f := *base, vb, flags
			tc.edit(&p, &v, &f)
			err := d.Run(context.Background(), func(r *vk.Recorder) error {
				return k.RecordVCheck(r, &p, params, v, f)
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
