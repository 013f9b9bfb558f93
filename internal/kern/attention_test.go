package kern_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/internal/bf16"
	"github.com/dmavk/dmavk/internal/f16"
	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/ref"
	"github.com/dmavk/dmavk/vk"
)

// attnCase is one forward problem for the portable attention kernel.
type attnCase struct {
	name                  string
	B, Lq, Lk, H, Hkv, D  int
	hbKV                  bool // Hb = Hkv (else Hb = H)
	mode                  ref.Mode
	causal                bool
	w                     int
	f16, bf16             bool    // 16-bit storage (else float32)
	bhld                  bool    // [B, H, L, D] storage (else [B, L, H, D])
	off                   uint32  // element offset of every tensor in its buffer
	softcap               float64 // 0 = off
	weights               string  // "rand" (default), "equal", "large", "ties"
	qk                    float64 // magnitude of q and k (default 1)
	pad                   string  // "" none, "batch1" (every key of batch 1 padded), "rand", "sparse" (keys 97k + 5)
	maskShape, biasShape  []int   // explicit mode: broadcast shapes [B, heads, Lq, Lk]
	nanKey                int     // >= 0: V of this key (batch 0, kv head 0) holds a NaN
	inject                string  // non-finite values at random places of q, k, v, w (weights) or all: see injectNonFinite
	relTol                float64 // O tolerance (relative to max |O_ref|)
	lseAbs, lseRel        float64
	wantErr               string
	dOverride, hbOverride int
	wantPath              string // when set, AttentionPath must name this kernel
	pairs                 int    // coopmat2 split tests: (batch, bias head) pairs per GK/GV buffer
	decode                bool   // record RecordDecode instead of RecordAttention
	maxLk                 uint32 // RecordDecode's grid sized for this many keys (0: Lk)
}

// storage is the case's storage type.
func (c *attnCase) storage() kern.Storage {
	switch {
	case c.f16:
		return kern.StorageF16
	case c.bf16:
		return kern.StorageBF16
	}
	return kern.StorageF32
}

func (c *attnCase) defaults() {
	if c.B == 0 {
		c.B = 2
	}
	if c.H == 0 {
		c.H, c.Hkv = 4, 2
	}
	if c.D == 0 {
		c.D = 64
	}
	if c.Lk == 0 {
		c.Lk = c.Lq
	}
	if c.qk == 0 {
		c.qk = 1
	}
	if c.weights == "" {
		c.weights = "rand"
	}
	if c.relTol == 0 {
		// fp32: identical float32 inputs, float32 math: scores carry a few ulp of
		// absolute error (dot products of D terms, exp and log to a few ulp), which
		// moves each probability by about as much relatively; the accumulation of at
		// most a few hundred terms adds a few ulp more. 2e-5 leaves a margin of ~10x.
		// fp16: O itself is rounded to half (2^-11 relative, 2^-10 if the device
		// rounds toward zero). bf16: O is rounded to bfloat16 (8 significant bits) by the
		// kernel, to nearest: 2^-8 ~ 3.9e-3 relative; 1e-2 leaves a like margin.
		c.relTol = 2e-5
		if c.f16 {
			c.relTol = 2e-3
		}
		if c.bf16 {
			c.relTol = 1e-2
		}
		if c.weights == "large" {
			// Scores of magnitude ~2e4 carry float32's rounding, 2^-24 * 2e4 ~ 1.2e-3
			// absolute (twice: the sum and the shift by the row maximum), which moves
			// the probabilities of close competitors by as much relatively. The float64
			// reference rounds nothing, so this is the format's limit, not the kernel's.
			c.relTol = max(c.relTol, 3e-3)
		}
	}
	if c.lseAbs == 0 {
		c.lseAbs, c.lseRel = 1e-5, 1e-5
	}
	if c.qk > 1 {
		// Large q and k: a score is scale * (D products of size ~qk^2) summed in float32,
		// with an absolute error up to about 2 eps32 * scale * D * qk^2 (the float64
		// reference has none). It moves the LSE by as much, and each probability, and so
		// O, by as much relatively. Without this term such cases pass or fail by seed.
		const eps32 = 1.0 / (1 << 24)
		sErr := 2 * eps32 * c.qk * c.qk * math.Sqrt(float64(c.D))
		c.lseAbs = max(c.lseAbs, 1e-5+sErr)
		c.relTol += sErr
	}
}

// attnViewOf returns the view of a [B, L, H, D] tensor stored as [B, L, H, D] or [B, H, L, D].
func attnViewOf(c *attnCase, l, h int) kern.View {
	d := uint32(c.D)
	if c.bhld {
		return kern.View{Off: c.off, SB: uint32(h*l) * d, SL: d, SH: uint32(l) * d}
	}
	return kern.View{Off: c.off, SB: uint32(l*h) * d, SL: uint32(h) * d, SH: d}
}

func attnViewIndex(v kern.View, b, l, h, d int) int {
	return int(v.Off) + b*int(v.SB) + l*int(v.SL) + h*int(v.SH) + d
}

// attnRound rounds every element to the storage dtype so that the reference sees exactly
// what the GPU reads.
func attnRound(x []float64, st kern.Storage) {
	for i, v := range x {
		f := float32(v)
		switch st {
		case kern.StorageF16:
			f = f16.ToFloat32(f16.FromFloat32(f))
		case kern.StorageBF16:
			f = bf16.Round(f)
		}
		x[i] = float64(f)
	}
}

// attnEncodeTensor writes t into a buffer image laid out by v; the gaps hold NaN so a read
// outside the tensor shows.
func attnEncodeTensor(t *ref.Tensor4, v kern.View, st kern.Storage) []byte {
	n := attnViewIndex(v, t.B-1, t.L-1, t.H-1, t.D-1) + 1
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(math.NaN())
	}
	for b := range t.B {
		for l := range t.L {
			for h := range t.H {
				for d := range t.D {
					vals[attnViewIndex(v, b, l, h, d)] = float32(t.At(b, l, h, d))
				}
			}
		}
	}
	return attnEncodeFloats(vals, st)
}

func attnEncodeFloats(vals []float32, st kern.Storage) []byte {
	if st.Packed() {
		out := make([]byte, (2*len(vals)+3)&^3)
		for i, x := range vals {
			h := f16.FromFloat32(x)
			if st == kern.StorageBF16 {
				h = bf16.FromFloat32(x)
			}
			binary.LittleEndian.PutUint16(out[2*i:], h)
		}
		return out
	}
	out := make([]byte, 4*len(vals))
	for i, x := range vals {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(x))
	}
	return out
}

func attnDecode(buf []byte, e int, st kern.Storage) float64 {
	switch st {
	case kern.StorageF16:
		return float64(f16.ToFloat32(binary.LittleEndian.Uint16(buf[2*e:])))
	case kern.StorageBF16:
		return float64(bf16.ToFloat32(binary.LittleEndian.Uint16(buf[2*e:])))
	}
	return float64(math.Float32frombits(binary.LittleEndian.Uint32(buf[4*e:])))
}

func attnU32Bytes(x []uint32) []byte {
	out := make([]byte, 4*max(len(x), 1))
	for i, v := range x {
		binary.LittleEndian.PutUint32(out[4*i:], v)
	}
	return out
}

// attnBroadcast gives the element strides of a row-major broadcast tensor of shape s
// (size-1 dimensions get stride 0) and the head divisor for query head h.
func attnBroadcast(s []int, c *attnCase) kern.Broadcast {
	st := func(dim int, stride int) uint32 {
		if s[dim] == 1 {
			return 0
		}
		return uint32(stride)
	}
	hdiv := uint32(1)
	if s[1] != c.H && s[1] != 1 { // Hkv heads
		hdiv = uint32(c.H / c.Hkv)
	}
	return kern.Broadcast{Off: 4, SB: st(0, s[1]*s[2]*s[3]), SH: st(1, s[2]*s[3]), SI: st(2, s[3]), SJ: st(3, 1), HDiv: hdiv, Present: true}
}

type attnEnv struct {
	d *vk.Device
	k *kern.Kernels
}

func newAttnEnv(t *testing.T) *attnEnv {
	d := vktest.Device(t, vk.Features{})
	k := kern.New(d)
	t.Cleanup(func() { k.Close() })
	return &attnEnv{d: d, k: k}
}

func (e *attnEnv) buffer(t *testing.T, data []byte) *vk.Buffer {
	t.Helper()
	b, err := e.d.NewBuffer(int64(max((len(data)+3)&^3, 4)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if len(data) > 0 {
		if err := b.Upload(context.Background(), 0, data); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func runAttnCase(t *testing.T, e *attnEnv, c attnCase) {
	c.defaults()
	seed := uint64(len(c.name))
	for _, ch := range c.name {
		seed = seed*131 + uint64(ch)
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	hb := c.H
	if c.hbKV {
		hb = c.Hkv
	}
	q := ref.RandTensor4(rng, c.B, c.Lq, c.H, c.D, c.qk)
	k := ref.RandTensor4(rng, c.B, c.Lk, c.Hkv, c.D, c.qk)
	v := ref.RandTensor4(rng, c.B, c.Lk, c.Hkv, c.D, 1)
	for _, x := range []*ref.Tensor4{q, k, v} {
		attnRound(x.Data, c.storage())
	}
	if c.nanKey >= 0 && c.nanKey < c.Lk && c.name != "" && strings.Contains(c.name, "nan") {
		v.Set(0, c.nanKey, 0, 3, math.NaN())
	}

	// Weights, float32 as the plan stores them.
	delta := make([]float64, c.B*hb*c.Lk)
	for i := range delta {
		switch c.weights {
		case "equal":
			delta[i] = 1
		case "large": // wide spread of large magnitudes of both signs
			delta[i] = 2e4 * (2*rng.Float64() - 1)
		case "ties": // few distinct values: the tie rule decides
			delta[i] = float64(rng.IntN(3)) - 1
		default:
			delta[i] = 4 * (2*rng.Float64() - 1)
		}
	}
	attnRound(delta, kern.StorageF32)

	var padding [][]bool
	if c.pad != "" {
		padding = make([][]bool, c.B)
		for b := range c.B {
			padding[b] = make([]bool, c.Lk)
			for j := range c.Lk {
				padding[b][j] = !(c.pad == "batch1" && b == 1) && !(c.pad == "rand" && rng.IntN(4) == 0) &&
					!(c.pad == "sparse" && j%97 == 5)
			}
		}
	}

	scale := float32(1 / math.Sqrt(float64(c.D)))
	opts := ref.Options{Window: c.w, Mode: c.mode, Causal: c.causal, Scale: float64(scale),
		Softcap: float64(float32(c.softcap)), KeyPadding: padding}

	// Explicit mask and bias.
	var maskBytes []byte
	var biasVals []float32
	var maskB, biasB kern.Broadcast
	if s := c.maskShape; s != nil {
		m := ref.NewBroadcast4Bool(s[0], s[1], s[2], s[3])
		for i := range m.Data {
			m.Data[i] = rng.IntN(3) != 0
		}
		opts.Mask = m
		maskB = attnBroadcast(s, &c)
		maskBytes = make([]byte, int(maskB.Off)+len(m.Data))
		for i, x := range m.Data {
			if x {
				maskBytes[int(maskB.Off)+i] = 1 + uint8(rng.IntN(255)) // any non-zero byte is true
			}
		}
	}
	if s := c.biasShape; s != nil {
		x := ref.NewBroadcast4(s[0], s[1], s[2], s[3])
		x.Data = ref.Round32(ref.RandSlice(rng, len(x.Data), 2))
		opts.Bias = x
		biasB = attnBroadcast(s, &c)
		biasVals = make([]float32, int(biasB.Off)+len(x.Data))
		for i, y := range x.Data {
			biasVals[int(biasB.Off)+i] = float32(y)
		}
	}

	if c.inject != "" {
		// Fresh places for the non-finite values on every run (the rest of the inputs
		// follow the name).
		injectNonFinite(t, rand.New(rand.NewPCG(freshSeed(t), seed)), c.inject, q, k, v, delta, hb, opts)
	}

	// The plan, on the CPU.
	ord := make([]uint32, c.B*hb*c.Lk)
	for b := range c.B {
		for h := range hb {
			for j := range c.Lk {
				if padding == nil || padding[b][j] {
					ord[(b*hb+h)*c.Lk+j] = kern.Ord(float32(delta[(b*hb+h)*c.Lk+j]))
				}
			}
		}
	}
	p := &kern.Params{B: uint32(c.B), Lq: uint32(c.Lq), Lk: uint32(c.Lk), H: uint32(c.H), Hkv: uint32(c.Hkv),
		Hb: uint32(hb), D: uint32(c.D), G: uint32(c.H / c.Hkv), Mode: uint32(c.mode), Causal: attnB2U(c.causal),
		Storage: c.storage(), PosOffset: int32(c.Lk - c.Lq), Scale: scale, Softcap: float32(c.softcap),
		KeyPadding: padding != nil,
		Q:          attnViewOf(&c, c.Lq, c.H), K: attnViewOf(&c, c.Lk, c.Hkv), V: attnViewOf(&c, c.Lk, c.Hkv), O: attnViewOf(&c, c.Lq, c.H),
		Mask: maskB, Bias: biasB}
	if c.w > 0 {
		p.Window = uint32(c.w)
		p.BlockC = uint32(kern.BlockSize(c.w))
		p.NBlocks = (p.Lk + p.BlockC - 1) / p.BlockC
		p.NCap = p.Window + p.BlockC
	}
	rowCausal := c.mode == ref.ModeRow && c.causal
	var uData, ucData, tauData []uint32
	if c.mode == ref.ModeRow || c.mode == ref.ModeShared {
		nb, ncap := int(p.NBlocks), int(p.NCap)
		uData = make([]uint32, c.B*hb*(nb+1)*ncap*2)
		ucData = make([]uint32, c.B*hb*(nb+1))
		tauData = make([]uint32, c.B*hb*c.Lq*2)
		for bh := range c.B * hb {
			pl := kern.BuildPlanCPU(ord[bh*c.Lk:(bh+1)*c.Lk], c.w, c.Lq, rowCausal)
			for blk, list := range pl.U {
				ucData[bh*(nb+1)+blk] = uint32(len(list))
				for x, key := range list {
					at := ((bh*(nb+1)+blk)*ncap + x) * 2
					uData[at], uData[at+1] = key.Ord, key.Idx
				}
			}
			for i, key := range pl.Tau {
				tauData[(bh*c.Lq+i)*2], tauData[(bh*c.Lq+i)*2+1] = key.Ord, key.Idx
			}
		}
	}
	if c.dOverride != 0 {
		p.D = uint32(c.dOverride)
	}
	if c.hbOverride != 0 {
		p.Hb = uint32(c.hbOverride)
	}

	// GPU.
	bufs := &kern.AttnBuffers{
		Q: e.buffer(t, attnEncodeTensor(q, p.Q, p.Storage)), K: e.buffer(t, attnEncodeTensor(k, p.K, p.Storage)),
		V: e.buffer(t, attnEncodeTensor(v, p.V, p.Storage)), Ord: e.buffer(t, attnU32Bytes(ord)),
	}
	oImage := attnEncodeTensor(ref.NewTensor4(c.B, c.Lq, c.H, c.D), p.O, p.Storage)
	bufs.O = e.buffer(t, make([]byte, len(oImage)))
	bufs.LSE = e.buffer(t, make([]byte, 4*c.B*c.H*c.Lq))
	if uData != nil {
		bufs.U, bufs.UCount = e.buffer(t, attnU32Bytes(uData)), e.buffer(t, attnU32Bytes(ucData))
		if rowCausal {
			bufs.Tau = e.buffer(t, attnU32Bytes(tauData))
		}
	}
	if maskBytes != nil {
		bufs.Mask = e.buffer(t, maskBytes)
	}
	if biasVals != nil {
		bufs.Bias = e.buffer(t, attnEncodeFloats(biasVals, kern.StorageF32))
	}
	path := e.k.AttentionPath(p)
	if c.wantPath != "" && path != c.wantPath {
		t.Fatalf("path %s, want %s", path, c.wantPath)
	}
	if path == kern.PathCoopMat2 && c.wantErr == "" {
		cm2, err := kern.NewCM2Buffers(e.d, p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cm2.Close() })
		bufs.CM2 = cm2
		if c.pairs > 0 && (cm2.PairsPer != c.pairs || len(cm2.GK) < 2) {
			t.Fatalf("%d pairs per buffer over %d buffers, want %d per buffer and a split", cm2.PairsPer, len(cm2.GK), c.pairs)
		}
	}
	params := e.buffer(t, make([]byte, kern.ParamsSize))
	err := e.d.Run(context.Background(), func(r *vk.Recorder) error {
		if err := r.Update(params, 0, p.Bytes()); err != nil {
			return err
		}
		// Poison the outputs: anything left unwritten reads as NaN.
		if err := r.Fill(bufs.O, 0, bufs.O.Size(), 0x7fc07e00); err != nil {
			return err
		}
		if err := r.Fill(bufs.LSE, 0, bufs.LSE.Size(), 0x7fc00000); err != nil {
			return err
		}
		r.Barrier()
		if c.decode {
			return e.k.RecordDecode(r, p, params, bufs, e.buffer(t, make([]byte, e.k.DecodePartSize(p, c.maxLk))), c.maxLk)
		}
		return e.k.RecordAttention(r, p, params, bufs)
	})
	if c.wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Fatalf("error %v, want one mentioning %q", err, c.wantErr)
		}
		t.Logf("rejected: %v", err)
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	oRaw := make([]byte, bufs.O.Size())
	lseRaw := make([]byte, bufs.LSE.Size())
	if err := bufs.O.Download(context.Background(), 0, oRaw); err != nil {
		t.Fatal(err)
	}
	if err := bufs.LSE.Download(context.Background(), 0, lseRaw); err != nil {
		t.Fatal(err)
	}

	// Reference, float64 at the very same inputs.
	deltaRef := delta
	oRef, lseRef, err := ref.Forward(q, k, v, deltaRef, hb, opts)
	if err != nil {
		t.Fatal(err)
	}
	if c.inject != "" {
		checkNonFinite(t, &c, p, oRef, lseRef, oRaw, lseRaw)
		return
	}
	var nanRows map[[3]int]bool // rows that keep the NaN key
	if c.nanKey >= 0 && strings.Contains(c.name, "nan") {
		keep, err := ref.Keep(delta, hb, ref.ShapeOf(q, k), opts)
		if err != nil {
			t.Fatal(err)
		}
		nanRows = map[[3]int]bool{}
		for h := range c.H {
			if h/(c.H/c.Hkv) != 0 {
				continue
			}
			for i := range c.Lq {
				if keep[((0*c.H+h)*c.Lq+i)*c.Lk+c.nanKey] {
					nanRows[[3]int{0, h, i}] = true
				}
			}
		}
		if len(nanRows) == 0 {
			t.Fatalf("no row keeps the NaN key %d: the case tests nothing", c.nanKey)
		}
	}

	got := make([]float64, len(oRef.Data))
	want := make([]float64, len(oRef.Data))
	empty := 0
	var lseWorst float64
	for b := range c.B {
		for h := range c.H {
			for i := range c.Lq {
				li := (b*c.H+h)*c.Lq + i
				gl := float64(math.Float32frombits(binary.LittleEndian.Uint32(lseRaw[4*li:])))
				wl := lseRef[li]
				if nanRows[[3]int{b, h, i}] {
					// The reference keeps the NaN too; the GPU row must show it.
					hasNaN := false
					for d := range c.D {
						hasNaN = hasNaN || math.IsNaN(attnDecode(oRaw, attnViewIndex(p.O, b, i, h, d), p.Storage))
					}
					if !hasNaN {
						t.Errorf("row (b=%d h=%d i=%d) keeps the NaN key but its O has no NaN", b, h, i)
					}
					continue
				}
				switch {
				case math.IsInf(wl, -1):
					empty++
					if !math.IsInf(gl, -1) {
						t.Errorf("LSE[b=%d h=%d i=%d] = %v, want -Inf (empty row)", b, h, i, gl)
					}
				case math.IsNaN(gl) || math.Abs(gl-wl) > c.lseAbs+c.lseRel*math.Abs(wl):
					t.Errorf("LSE[b=%d h=%d i=%d] = %v, want %v", b, h, i, gl, wl)
				default:
					lseWorst = max(lseWorst, math.Abs(gl-wl)/(1+math.Abs(wl)))
				}
				for d := range c.D {
					x := oRef.Index(b, i, h, d)
					want[x] = oRef.Data[x]
					got[x] = attnDecode(oRaw, attnViewIndex(p.O, b, i, h, d), p.Storage)
					if math.IsNaN(got[x]) {
						t.Fatalf("O[b=%d i=%d h=%d d=%d] is NaN (want %v)", b, i, h, d, want[x])
					}
				}
			}
		}
	}
	rel := ref.RelErr(got, want)
	if rel > c.relTol {
		worst, at := 0.0, 0
		for i := range got {
			if d := math.Abs(got[i] - want[i]); d > worst {
				worst, at = d, i
			}
		}
		t.Errorf("O relative error %.3g > %.3g (worst at flat %d: got %v want %v)", rel, c.relTol, at, got[at], want[at])
	}
	t.Logf("O rel err %.2e, LSE err/(1+|lse|) %.2e, %d empty rows", rel, lseWorst, empty)
}

func attnB2U(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// attnCommonCases are the cases both attention kernels run (the coopmat tests set fp16):
// every mode, causal and not, odd lengths, Lq != Lk both ways, GQA and MQA, bias heads.
func attnCommonCases() []attnCase {
	var cs []attnCase
	add := func(c attnCase) { cs = append(cs, c) }
	row, shared, none, expl := ref.ModeRow, ref.ModeShared, ref.ModeNone, ref.ModeExplicit
	// Modes, causal and not, odd lengths.
	for _, l := range []int{1, 7, 65, 130} {
		add(attnCase{name: fmt.Sprintf("row/causal/L%d", l), Lq: l, mode: row, causal: true, w: 16})
		add(attnCase{name: fmt.Sprintf("shared/causal/L%d", l), Lq: l, mode: shared, causal: true, w: 20, hbKV: true})
		add(attnCase{name: fmt.Sprintf("none/causal/L%d", l), Lq: l, mode: none, causal: true})
		add(attnCase{name: fmt.Sprintf("explicit/causal/L%d", l), Lq: l, mode: expl, causal: true,
			maskShape: []int{2, 1, l, l}, biasShape: []int{1, 4, 1, l}})
	}
	add(attnCase{name: "row/noncausal/L65", Lq: 65, mode: row, w: 8})
	add(attnCase{name: "shared/noncausal/L130", Lq: 130, mode: shared, w: 24, bhld: true})
	add(attnCase{name: "none/noncausal/L65", Lq: 65, mode: none, hbKV: true})
	add(attnCase{name: "explicit/noncausal/mask-kvheads/bias-full", Lq: 65, mode: expl,
		maskShape: []int{1, 2, 65, 65}, biasShape: []int{2, 4, 65, 65}})
	add(attnCase{name: "explicit/causal/mask-rows-broadcast", Lq: 70, mode: expl, causal: true,
		maskShape: []int{2, 4, 1, 70}})
	add(attnCase{name: "explicit/causal/bias-only/softcap", Lq: 33, mode: expl, causal: true,
		biasShape: []int{2, 2, 33, 1}, softcap: 3})
	add(attnCase{name: "explicit/nomask/pad", Lq: 40, mode: expl, causal: true, pad: "rand"})
	// Lq != Lk: bottom-right alignment; Lq > Lk leaves the first rows empty when causal.
	add(attnCase{name: "row/causal/Lq7-Lk130", Lq: 7, Lk: 130, mode: row, causal: true, w: 16})
	add(attnCase{name: "row/causal/Lq130-Lk7", Lq: 130, Lk: 7, mode: row, causal: true, w: 4})
	add(attnCase{name: "row/noncausal/Lq130-Lk7", Lq: 130, Lk: 7, mode: row, w: 4})
	add(attnCase{name: "shared/causal/Lq100-Lk33", Lq: 100, Lk: 33, mode: shared, causal: true, w: 5})
	add(attnCase{name: "none/causal/Lq65-Lk20/bhld", Lq: 65, Lk: 20, mode: none, causal: true, bhld: true})
	add(attnCase{name: "explicit/causal/Lq9-Lk70", Lq: 9, Lk: 70, mode: expl, causal: true,
		maskShape: []int{2, 4, 9, 70}})
	// GQA / MQA, bias heads.
	add(attnCase{name: "row/MQA/Hb=Hkv", Lq: 65, H: 4, Hkv: 1, hbKV: true, mode: row, causal: true, w: 8})
	add(attnCase{name: "row/MQA/Hb=H", Lq: 65, H: 4, Hkv: 1, mode: row, causal: true, w: 8})
	add(attnCase{name: "row/MHA", Lq: 40, H: 2, Hkv: 2, mode: row, causal: true, w: 8, B: 1})
	add(attnCase{name: "row/GQA/Hb=Hkv/bhld/off", Lq: 130, hbKV: true, mode: row, causal: true, w: 32, bhld: true, off: 8})
	// Windows and weights: w = 1, w >= L, ties, equal weights (= sliding window), large.
	add(attnCase{name: "row/w1", Lq: 65, mode: row, causal: true, w: 1})
	add(attnCase{name: "row/w>=L", Lq: 130, mode: row, causal: true, w: 200})
	add(attnCase{name: "shared/w>=L", Lq: 65, mode: shared, causal: true, w: 100})
	add(attnCase{name: "row/equal-weights=sliding", Lq: 130, mode: row, causal: true, w: 16, weights: "equal"})
	add(attnCase{name: "row/ties", Lq: 130, mode: row, causal: true, w: 10, weights: "ties"})
	add(attnCase{name: "row/large-weights", Lq: 130, mode: row, causal: true, w: 16, weights: "large"})
	add(attnCase{name: "shared/large-weights/noncausal", Lq: 65, mode: shared, w: 16, weights: "large"})
	return cs
}

func attnCases() []attnCase {
	var cs []attnCase
	add := func(c attnCase) {
		if c.nanKey == 0 && !strings.Contains(c.name, "nan") {
			c.nanKey = -1
		}
		cs = append(cs, c)
	}
	row, shared, none, expl := ref.ModeRow, ref.ModeShared, ref.ModeNone, ref.ModeExplicit
	for _, c := range attnCommonCases() {
		add(c)
	}
	// Head dimensions.
	for _, d := range []int{32, 96, 128, 256, 40} {
		add(attnCase{name: fmt.Sprintf("row/D%d", d), Lq: 70, D: d, mode: row, causal: true, w: 12, B: 1})
		add(attnCase{name: fmt.Sprintf("none/D%d/f16", d), Lq: 37, D: d, mode: none, causal: true, B: 1, f16: true})
	}
	// Windows and weights (besides the common ones).
	add(attnCase{name: "none/large-weights", Lq: 65, mode: none, causal: true, weights: "large"})
	// Key padding, empty rows.
	add(attnCase{name: "row/pad-batch1", Lq: 65, mode: row, causal: true, w: 8, pad: "batch1"})
	add(attnCase{name: "shared/pad-rand", Lq: 65, mode: shared, causal: true, w: 8, pad: "rand"})
	add(attnCase{name: "none/pad-batch1/noncausal", Lq: 20, mode: none, pad: "batch1"})
	add(attnCase{name: "row/pad-rand/noncausal", Lq: 65, mode: row, w: 8, pad: "rand"})
	// Softcap.
	add(attnCase{name: "row/softcap", Lq: 65, mode: row, causal: true, w: 16, softcap: 2})
	add(attnCase{name: "none/softcap/large", Lq: 65, mode: none, causal: true, softcap: 5, weights: "large"})
	// Many candidates: several fill windows and chunks per tile, several plan blocks.
	add(attnCase{name: "row/multiblock", B: 1, Lq: 300, mode: row, causal: true, w: 100})
	add(attnCase{name: "row/multiblock-w40", B: 1, Lq: 300, mode: row, causal: true, w: 40, pad: "rand"})
	add(attnCase{name: "none/noncausal/L300", B: 1, H: 2, Hkv: 1, Lq: 300, mode: none})
	add(attnCase{name: "shared/noncausal/w200", B: 1, Lq: 300, mode: shared, w: 200})
	// fp16 storage.
	add(attnCase{name: "row/f16", Lq: 130, mode: row, causal: true, w: 16, f16: true})
	add(attnCase{name: "explicit/f16/bhld/off", Lq: 65, mode: expl, causal: true, f16: true, bhld: true, off: 6,
		maskShape: []int{2, 1, 65, 65}, biasShape: []int{1, 1, 65, 65}})
	add(attnCase{name: "row/f16/D256", Lq: 65, D: 256, mode: row, causal: true, w: 16, f16: true, B: 1})
	// Overflow-prone fp16: q, k ~ 100 make scores of thousands; float32 math stays finite.
	add(attnCase{name: "row/f16/big-qk", Lq: 130, mode: row, causal: true, w: 16, f16: true, qk: 100})
	add(attnCase{name: "none/f16/big-qk/softcap", Lq: 65, mode: none, causal: true, f16: true, qk: 100, softcap: 30})
	// bf16 storage (the portable kernel, or coopmat2 where bf16 cooperative matrices
	// exist and the mode is row, shared or none): rounding of the inputs
	// and of O, every mode, both layouts, an offset, D = 256, large scores, softcap.
	add(attnCase{name: "row/bf16", Lq: 130, mode: row, causal: true, w: 16, bf16: true})
	add(attnCase{name: "shared/bf16/noncausal/bhld", Lq: 65, mode: shared, w: 16, bf16: true, bhld: true})
	add(attnCase{name: "explicit/bf16/bhld/off", Lq: 65, mode: expl, causal: true, bf16: true, bhld: true, off: 6,
		maskShape: []int{2, 1, 65, 65}, biasShape: []int{1, 1, 65, 65}})
	add(attnCase{name: "row/bf16/D256/Lq7-Lk130", Lq: 7, Lk: 130, D: 256, mode: row, causal: true, w: 16, bf16: true, B: 1})
	add(attnCase{name: "none/bf16/big-qk/softcap", Lq: 65, mode: none, causal: true, bf16: true, qk: 100, softcap: 30})
	add(attnCase{name: "row/bf16/pad-rand/MQA", Lq: 65, H: 4, Hkv: 1, mode: row, causal: true, w: 8, bf16: true, pad: "rand"})
	// A NaN in one key's V reaches only the rows that keep that key.
	add(attnCase{name: "row/nan-v/sliding", Lq: 130, mode: row, causal: true, w: 8, nanKey: 50, weights: "equal"})
	add(attnCase{name: "none/nan-v", Lq: 65, Lk: 65, mode: none, causal: true, nanKey: 30})
	add(attnCase{name: "none/nan-v/bf16", Lq: 65, Lk: 65, mode: none, causal: true, nanKey: 30, bf16: true})
	// Rejected problems.
	add(attnCase{name: "err/D12", Lq: 8, D: 16, dOverride: 12, mode: none, wantErr: "D=12"})
	add(attnCase{name: "err/D264", Lq: 8, D: 16, dOverride: 264, mode: none, wantErr: "D=264"})
	add(attnCase{name: "err/Hb", Lq: 8, mode: none, hbOverride: 3, wantErr: "Hb=3"})
	add(attnCase{name: "err/f16-odd-offset", Lq: 8, mode: none, f16: true, off: 3, wantErr: "even"})
	add(attnCase{name: "err/bf16-odd-offset", Lq: 8, mode: none, bf16: true, off: 3, wantErr: "even"})
	return cs
}

func TestAttention(t *testing.T) {
	e := newAttnEnv(t)
	for _, c := range attnCases() {
		t.Run(c.name, func(t *testing.T) { runAttnCase(t, e, c) })
	}
}

// TestAttentionStorage: bf16 takes coopmat2, else the KHR cooperative-matrix path, where
// bf16 cooperative matrices of the kind exist, else the portable one; and an unknown
// storage code is rejected before any dispatch.
func TestAttentionStorage(t *testing.T) {
	e := newAttnEnv(t)
	caps := e.d.Caps()
	for _, d := range []uint32{64, 128} {
		want := kern.PathPortable
		if _, err := kern.AttnCM2TilingFor(&caps, int(d), kern.StorageBF16); err == nil {
			want = kern.PathCoopMat2
		} else if _, err := kern.AttnCMTilingFor(&caps, int(d), kern.StorageBF16); err == nil {
			want = kern.PathCoopMat
		}
		if path := e.k.AttentionPath(&kern.Params{Storage: kern.StorageBF16, D: d}); path != want {
			t.Errorf("bf16 D=%d: path %s, want %s", d, path, want)
		}
		if path := e.k.AttentionPath(&kern.Params{Storage: kern.StorageF32, D: d}); path != kern.PathPortable {
			t.Errorf("fp32 D=%d: path %s", d, path)
		}
	}
	p := &kern.Params{B: 1, Lq: 8, Lk: 8, H: 1, Hkv: 1, Hb: 1, D: 32, G: 1, Mode: kern.ModeNone, Storage: 3,
		Q: kern.View{SL: 32}, K: kern.View{SL: 32}, V: kern.View{SL: 32}, O: kern.View{SL: 32}}
	buf := e.buffer(t, make([]byte, 8*32*4))
	params := e.buffer(t, make([]byte, kern.ParamsSize))
	err := e.d.Run(context.Background(), func(r *vk.Recorder) error {
		return e.k.RecordAttention(r, p, params, &kern.AttnBuffers{Q: buf, K: buf, V: buf, O: buf, LSE: buf, Ord: buf})
	})
	if err == nil || !strings.Contains(err.Error(), "storage") {
		t.Errorf("storage 3: error %v, want one about the storage", err)
	}
}

// TestAttentionBF16Rounding checks the kernel's bf16 stores bit for bit: with q = 0 and
// equal weights every row of O is the mean of two keys' V, (v0 + v1) / 2: the kernel
// computes it in float32 (p = exp(0) = 1, l = 2) as Go does here, exactly unless v0
// and v1 are 2^16 apart, and it often lies between two bfloat16 values or on a tie. O
// must be that value rounded to nearest, ties to even, as bf16.FromFloat32 rounds it.
func TestAttentionBF16Rounding(t *testing.T) {
	e := newAttnEnv(t)
	const B, L, H, D = 2, 2, 4, 256
	rng := rand.New(rand.NewPCG(5, 6))
	view := kern.View{SB: L * H * D, SL: H * D, SH: D}
	p := &kern.Params{B: B, Lq: L, Lk: L, H: H, Hkv: H, Hb: H, D: D, G: 1, Mode: kern.ModeNone,
		Storage: kern.StorageBF16, Scale: 1, Q: view, K: view, V: view, O: view}
	n := B * L * H * D
	v := make([]float32, n)
	for i := range v {
		v[i] = bf16.Round(float32(rng.NormFloat64() * math.Ldexp(1, rng.IntN(9)-4)))
	}
	kv := make([]float32, n)
	for i := range kv {
		kv[i] = float32(rng.NormFloat64())
	}
	ord := make([]uint32, B*H*L)
	for i := range ord {
		ord[i] = kern.Ord(1)
	}
	bufs := &kern.AttnBuffers{
		Q: e.buffer(t, make([]byte, 2*n)), K: e.buffer(t, attnEncodeFloats(kv, kern.StorageBF16)),
		V: e.buffer(t, attnEncodeFloats(v, kern.StorageBF16)), Ord: e.buffer(t, attnU32Bytes(ord)),
		O: e.buffer(t, make([]byte, 2*n)), LSE: e.buffer(t, make([]byte, 4*B*H*L)),
	}
	params := e.buffer(t, make([]byte, kern.ParamsSize))
	if err := e.d.Run(context.Background(), func(r *vk.Recorder) error {
		if err := r.Update(params, 0, p.Bytes()); err != nil {
			return err
		}
		r.Barrier()
		return e.k.RecordAttention(r, p, params, bufs)
	}); err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 2*n)
	if err := bufs.O.Download(context.Background(), 0, raw); err != nil {
		t.Fatal(err)
	}
	ties, inexact, bad := 0, 0, 0
	for b := range B {
		for i := range L {
			for h := range H {
				for d := range D {
					v0, v1 := v[attnViewIndex(view, b, 0, h, d)], v[attnViewIndex(view, b, 1, h, d)]
					mean := (v0 + v1) * 0.5
					want := bf16.FromFloat32(mean)
					got := binary.LittleEndian.Uint16(raw[2*attnViewIndex(view, b, i, h, d):])
					if low := math.Float32bits(mean) & 0xffff; low == 0x8000 {
						ties++
					} else if low != 0 {
						inexact++
					}
					if got != want {
						if bad++; bad <= 10 {
							t.Errorf("O[b=%d i=%d h=%d d=%d]: bits %#04x, want %#04x (mean %#08x)", b, i, h, d, got, want, math.Float32bits(mean))
						}
					}
				}
			}
		}
	}
	if ties < 100 || inexact < 100 {
		t.Fatalf("only %d ties and %d other inexact values: the test checks little", ties, inexact)
	}
	t.Logf("%d values, %d ties, %d other inexact, %d wrong", B*L*H*D, ties, inexact, bad)
}

func TestAttentionTiling(t *testing.T) {
	caps := vk.Caps{Name: "test", MaxSharedMemory: 48 << 10, MaxWorkgroupInvocations: 1024, MaxWorkgroupSize: [3]uint32{1024, 1024, 64}}
	for _, d := range []int{8, 32, 64, 96, 128, 256} {
		tile, err := kern.AttnTiling(&caps, d)
		if err != nil {
			t.Fatalf("D=%d: %v", d, err)
		}
		if 64%tile.BR != 0 || tile.BC%8 != 0 || tile.Shared > 48<<10 {
			t.Fatalf("D=%d: bad tile %+v", d, tile)
		}
		t.Logf("D=%d: %+v", d, tile)
	}
	for _, d := range []int{0, 4, 12, 264} {
		if _, err := kern.AttnTiling(&caps, d); err == nil {
			t.Errorf("D=%d accepted", d)
		}
	}
	small := caps
	small.MaxSharedMemory = 16 << 10
	if _, err := kern.AttnTiling(&small, 256); err == nil || !strings.Contains(err.Error(), "shared memory") {
		t.Errorf("D=256 on 16 KiB: %v", err)
	}
	first, n := kern.AttnTiles(130, -123, 16)
	if first != -8 || n != 9 {
		t.Errorf("AttnTiles(130, -123, 16) = %d, %d; want -8, 9", first, n)
	}
}

// BenchmarkAttention times one forward dispatch on the GPU (timestamps): mode row at
// window w against dense causal attention (mode none), L = 4096, D = 128, fp16.
func BenchmarkAttention(b *testing.B) {
	const L, H, D = 4096, 16, 128
	d := vktest.Device(b, vk.Features{})
	if d.Caps().Type == vk.DeviceCPU {
		b.Skipf("%s is a CPU device: dense attention at L=%d would take minutes", d.Caps().Name, L)
	}
	k := kern.New(d)
	defer k.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	buf := func(data []byte) *vk.Buffer {
		x, err := d.NewBuffer(int64(max(len(data), 4)))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { x.Close() })
		if err := x.Upload(context.Background(), 0, data); err != nil {
			b.Fatal(err)
		}
		return x
	}
	rnd := func(n int) []byte {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(2*rng.Float64() - 1)
		}
		return attnEncodeFloats(v, kern.StorageF16)
	}
	ord := make([]uint32, L)
	for j := range ord {
		ord[j] = kern.Ord(float32(4 * (2*rng.Float64() - 1)))
	}
	view := func(h int) kern.View { return kern.View{SB: uint32(L * h * D), SL: uint32(h * D), SH: D} }
	q, kk, v := buf(rnd(L*H*D)), buf(rnd(L*D)), buf(rnd(L*D))
	for _, bc := range []struct {
		name string
		mode uint32
		w    int
	}{{"none", kern.ModeNone, 0}, {"row/w256", kern.ModeRow, 256}, {"row/w1024", kern.ModeRow, 1024}} {
		b.Run(bc.name, func(b *testing.B) {
			p := &kern.Params{B: 1, Lq: L, Lk: L, H: H, Hkv: 1, Hb: 1, D: D, G: H, Mode: bc.mode, Causal: 1, Storage: kern.StorageF16,
				Scale: float32(1 / math.Sqrt(D)), Q: view(H), K: view(1), V: view(1), O: view(H)}
			bufs := &kern.AttnBuffers{Q: q, K: kk, V: v, Ord: buf(attnU32Bytes(ord)), O: buf(make([]byte, L*H*D*2)), LSE: buf(make([]byte, L*H*4))}
			kept := float64(L) * float64(L+1) / 2
			if bc.w > 0 {
				p.Window, p.BlockC = uint32(bc.w), uint32(kern.BlockSize(bc.w))
				p.NBlocks = (L + p.BlockC - 1) / p.BlockC
				p.NCap = p.Window + p.BlockC
				pl := kern.BuildPlanCPU(ord, bc.w, L, true)
				nb, ncap := int(p.NBlocks), int(p.NCap)
				u, uc, tau := make([]uint32, (nb+1)*ncap*2), make([]uint32, nb+1), make([]uint32, 2*L)
				for blk, list := range pl.U {
					uc[blk] = uint32(len(list))
					for x, key := range list {
						u[(blk*ncap+x)*2], u[(blk*ncap+x)*2+1] = key.Ord, key.Idx
					}
				}
				for i, key := range pl.Tau {
					tau[2*i], tau[2*i+1] = key.Ord, key.Idx
				}
				bufs.U, bufs.UCount, bufs.Tau = buf(attnU32Bytes(u)), buf(attnU32Bytes(uc)), buf(attnU32Bytes(tau))
				kept = 0
				for i := range L {
					kept += float64(min(i+1, bc.w))
				}
			}
			params := buf(make([]byte, kern.ParamsSize))
			const reps = 5
			var total float64
			for range b.N {
				ts, err := d.RunTimed(context.Background(), func(r *vk.Recorder) error {
					if err := r.Update(params, 0, p.Bytes()); err != nil {
						return err
					}
					r.Barrier()
					if err := r.Timestamp("start"); err != nil {
						return err
					}
					for range reps {
						if err := k.RecordAttention(r, p, params, bufs); err != nil {
							return err
						}
					}
					return r.Timestamp("end")
				})
				if err != nil {
					b.Fatal(err)
				}
				if len(ts) == 2 {
					total += ts[1].Nanos / reps
				}
			}
			ns := total / float64(b.N)
			b.ReportMetric(ns/1e6, "gpu-ms")
			b.ReportMetric(4*kept*H*D/ns/1e3, "kept-TFLOP/s")
		})
	}
}
