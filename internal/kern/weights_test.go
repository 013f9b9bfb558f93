package kern

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
	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/ref"
	"github.com/dmavk/dmavk/vk"
)

// weightsCase is one shape of the dynamic-weights test.
type weightsCase struct {
	B, Lk, Hkv, D, Hb int
	storage           Storage
	headMajor         bool   // V stored [B, Hkv, Lk, D] instead of [B, Lk, Hkv, D]
	off               uint32 // element offset of the V view
	bdt               bool
	big               bool // Wdt scaled so that dt ~ N(0, 100^2): softplus overflow territory
}

func (c weightsCase) String() string {
	layout := "BLHD"
	if c.headMajor {
		layout = "BHLD"
	}
	s := fmt.Sprintf("B%d_Lk%d_Hkv%d_D%d_Hb%d_%v_%s_off%d", c.B, c.Lk, c.Hkv, c.D, c.Hb, c.storage, layout, c.off)
	if c.bdt {
		s += "_bdt"
	}
	if c.big {
		s += "_bigdt"
	}
	return s
}

var weightsCases = []weightsCase{
	{B: 1, Lk: 1, Hkv: 1, D: 32, Hb: 1},
	{B: 2, Lk: 7, Hkv: 2, D: 64, Hb: 2, storage: StorageF16, headMajor: true, bdt: true, off: 3},
	{B: 1, Lk: 65, Hkv: 4, D: 128, Hb: 16, headMajor: true, bdt: true},
	{B: 2, Lk: 300, Hkv: 2, D: 96, Hb: 4, storage: StorageF16, off: 1},
	{B: 1, Lk: 300, Hkv: 4, D: 256, Hb: 4, bdt: true, off: 5},
	{B: 2, Lk: 65, Hkv: 1, D: 256, Hb: 4, storage: StorageF16, headMajor: true},
	{B: 1, Lk: 65, Hkv: 1, D: 96, Hb: 3, bdt: true},
	{B: 2, Lk: 7, Hkv: 4, D: 32, Hb: 8, storage: StorageF16, bdt: true},
	{B: 1, Lk: 300, Hkv: 4, D: 128, Hb: 64, bdt: true, headMajor: true},
	{B: 2, Lk: 65, Hkv: 2, D: 32, Hb: 96, storage: StorageF16, bdt: true}, // two bias-head tiles
	{B: 1, Lk: 300, Hkv: 4, D: 64, Hb: 8, bdt: true, big: true},
	{B: 2, Lk: 300, Hkv: 2, D: 128, Hb: 8, storage: StorageF16, headMajor: true, big: true, off: 7},
	{B: 2, Lk: 65, Hkv: 1, D: 256, Hb: 1, big: true},
	{B: 2, Lk: 7, Hkv: 2, D: 64, Hb: 2, storage: StorageBF16, headMajor: true, bdt: true, off: 3},
	{B: 2, Lk: 300, Hkv: 2, D: 96, Hb: 4, storage: StorageBF16, off: 1},
	{B: 2, Lk: 65, Hkv: 2, D: 32, Hb: 96, storage: StorageBF16, bdt: true},
}

// weightsInputs are one case's inputs, as the GPU gets them and as float64.
type weightsInputs struct {
	p        Params
	v        *ref.Tensor4
	wp       ref.WeightParams
	vBytes   []byte
	wdt, bdt []float32
	a        []float32
}

func makeWeightsInputs(rng *rand.Rand, c weightsCase) *weightsInputs {
	in := &weightsInputs{}
	p := &in.p
	p.B, p.Lk, p.Hkv, p.D, p.Hb = uint32(c.B), uint32(c.Lk), uint32(c.Hkv), uint32(c.D), uint32(c.Hb)
	p.H, p.G = uint32(c.Hb), 1
	p.Storage, p.HasBdt = c.storage, c.bdt
	p.V.Off = c.off
	if c.headMajor {
		p.V.SB, p.V.SL, p.V.SH = uint32(c.Hkv*c.Lk*c.D), uint32(c.D), uint32(c.Lk*c.D)
	} else {
		p.V.SB, p.V.SL, p.V.SH = uint32(c.Lk*c.Hkv*c.D), uint32(c.Hkv*c.D), uint32(c.D)
	}
	vSize, _, _, _, _ := WeightsSizes(p)
	elem := int64(4)
	if c.storage.Packed() {
		elem = 2
	}
	// Junk everywhere (padding and the offset included), then the tensor at its view.
	n := vSize / elem
	in.vBytes = make([]byte, vSize)
	put := func(i int64, x float32) float32 {
		switch c.storage {
		case StorageF16:
			h := f16.FromFloat32(x)
			binary.LittleEndian.PutUint16(in.vBytes[2*i:], h)
			return f16.ToFloat32(h)
		case StorageBF16:
			h := bf16.FromFloat32(x)
			binary.LittleEndian.PutUint16(in.vBytes[2*i:], h)
			return bf16.ToFloat32(h)
		}
		binary.LittleEndian.PutUint32(in.vBytes[4*i:], math.Float32bits(x))
		return x
	}
	for i := range n {
		put(i, float32(1e3*rng.NormFloat64()))
	}
	in.v = ref.NewTensor4(c.B, c.Lk, c.Hkv, c.D)
	for b := range c.B {
		for j := range c.Lk {
			for h := range c.Hkv {
				for d := range c.D {
					i := int64(p.V.Off) + int64(b)*int64(p.V.SB) + int64(j)*int64(p.V.SL) + int64(h)*int64(p.V.SH) + int64(d)
					in.v.Set(b, j, h, d, float64(put(i, float32(rng.NormFloat64()))))
				}
			}
		}
	}
	k := c.Hkv * c.D
	ws := 1 / math.Sqrt(float64(k)) // dt ~ N(0, 1)
	if c.big {
		ws *= 100 // dt ~ N(0, 100^2)
	}
	in.wdt = make([]float32, k*c.Hb)
	in.wp.Wdt = make([]float64, k*c.Hb)
	for i := range in.wdt {
		in.wdt[i] = float32(ws * rng.NormFloat64())
		in.wp.Wdt[i] = float64(in.wdt[i])
	}
	if c.bdt {
		in.bdt = make([]float32, c.Hb)
		in.wp.Bdt = make([]float64, c.Hb)
		for i := range in.bdt {
			in.bdt[i] = float32(rng.NormFloat64())
			in.wp.Bdt[i] = float64(in.bdt[i])
		}
	}
	// A of both signs, and 0 for one head in four (head 3, 7, ...).
	amax := 2.0
	if c.big {
		amax = 0.45 // |A * softplus(dt)| stays mostly inside float32's exp range
	}
	in.a = make([]float32, c.Hb)
	in.wp.A = make([]float64, c.Hb)
	for i := range in.a {
		if i%4 != 3 {
			in.a[i] = float32(amax * (2*rng.Float64() - 1))
		}
		in.wp.A[i] = float64(in.a[i])
	}
	in.wp.Hb = c.Hb
	return in
}

func f32Bytes(x []float32) []byte {
	out := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
	}
	return out
}

func newBuffer(t testing.TB, d *vk.Device, data []byte, size int64) *vk.Buffer {
	t.Helper()
	size = max(size, int64(len(data)), 4)
	buf, err := d.NewBuffer((size + 3) &^ 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { buf.Close() })
	if len(data) > 0 {
		if err := buf.Upload(context.Background(), 0, data); err != nil {
			t.Fatal(err)
		}
	}
	return buf
}

// weightsBuffers holds one case's device buffers.
type weightsBuffers struct {
	params, v, wdt, bdt, a, delta *vk.Buffer
}

func uploadWeights(t testing.TB, d *vk.Device, in *weightsInputs) *weightsBuffers {
	_, _, _, _, deltaSize := WeightsSizes(&in.p)
	wb := &weightsBuffers{
		params: newBuffer(t, d, nil, ParamsSize),
		v:      newBuffer(t, d, in.vBytes, 0),
		wdt:    newBuffer(t, d, f32Bytes(in.wdt), 0),
		a:      newBuffer(t, d, f32Bytes(in.a), 0),
		delta:  newBuffer(t, d, nil, deltaSize),
	}
	if in.bdt != nil {
		wb.bdt = newBuffer(t, d, f32Bytes(in.bdt), 0)
	}
	return wb
}

// runWeights records the parameters, poisons delta with NaN and records the kernel, then
// returns delta.
func runWeights(t *testing.T, k *Kernels, p *Params, wb *weightsBuffers) []float32 {
	t.Helper()
	d := k.Device()
	err := d.Run(context.Background(), func(r *vk.Recorder) error {
		if err := r.Update(wb.params, 0, p.Bytes()); err != nil {
			return err
		}
		if err := r.Fill(wb.delta, 0, wb.delta.Size(), 0x7fc00000); err != nil {
			return err
		}
		r.Barrier()
		if err := k.RecordWeights(r, p, wb.params, wb.v, wb.wdt, wb.bdt, wb.a, wb.delta); err != nil {
			return err
		}
		r.Barrier()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, int(p.B*p.Hb*p.Lk)*4)
	if err := wb.delta.Download(context.Background(), 0, raw); err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}

// u is the unit roundoff of float32.
const u = 0x1p-24

// dtBound returns dt in float64 and a bound on the error of the GPU's float32 dt: every
// output sums its K products in order with fma, so step k rounds the partial sum S_k
// (relative error <= u), and a compiler that does not fuse also rounds each product t_k;
// adding bdt rounds once more. The rounding errors are independent with zero mean and
// standard deviation <= u|x|/sqrt(3), so their sum lies within
// 6 u sqrt(sum S_k^2 + sum t_k^2) (more than ten standard deviations); the bias adds
// u |dt|. This is the absolute error that softplus and exp carry on to delta, and it
// grows with |dt|: that is why a fixed relative tolerance cannot hold at large |dt|.
func dtBound(in *weightsInputs, b, j, c int) (dt, bound float64) {
	var s, sq float64
	hb := in.wp.Hb
	for h := range in.v.H {
		row := in.v.Row(b, j, h)
		for d, x := range row {
			t := x * in.wp.Wdt[(h*in.v.D+d)*hb+c]
			s += t
			sq += s*s + t*t
		}
	}
	if in.wp.Bdt != nil {
		s += in.wp.Bdt[c]
	}
	return s, 6*u*math.Sqrt(sq) + u*math.Abs(s)
}

// weightTolerance bounds |got - want| for delta of bias head c at dt, whose float32 value
// is off by at most edt:
//
//	softplus: sp' = sigmoid(dt), so sp is off by sigmoid(dt)*edt, plus its own float32
//	  rounding: exp(-|dt|) within (3 + 2|dt|) ulp (Vulkan's bound for exp), carried
//	  into log1p(e) <= e, and a few ulp of sp for the sums;
//	z = A*sp: |A| times that, plus u|z| for the product;
//	exp form: delta = exp(z) carries the absolute error of z as a relative error of
//	  delta, plus exp's own (3 + 2|z|) ulp;
//	linear form: delta = z.
//
// On top comes the 1e-5 relative slack of float32 math, and 2^-126 absolute for a
// result that the device flushes from a subnormal to zero.
func weightTolerance(form uint32, a, dt, edt float64) (tol float64) {
	sp := ref.Softplus(dt)
	lp := sp - max(dt, 0) // log1p(exp(-|dt|))
	esp := ref.Sigmoid(dt)*edt + 4*u*sp + (4+2*math.Abs(dt))*u*lp
	z := a * sp
	ez := math.Abs(a)*esp + u*math.Abs(z)
	if form == 0 {
		want := math.Exp(z)
		return want*(1e-5+ez+(3+2*math.Abs(z))*u) + 0x1p-126
	}
	return 1e-5*math.Abs(z) + ez + 0x1p-126
}

func TestWeights(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	seed := rand.Uint64()
	t.Logf("device %s, seed %#x", d.Caps().Name, seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	for _, c := range weightsCases {
		in := makeWeightsInputs(rng, c)
		wb := uploadWeights(t, d, in)
		for _, form := range []ref.WeightForm{ref.FormExp, ref.FormLinear} {
			t.Run(fmt.Sprintf("%v/%v", c, form), func(t *testing.T) {
				p := in.p
				p.Form = uint32(form)
				got := runWeights(t, k, &p, wb)
				wp := in.wp
				wp.Form = form
				want := ref.DynamicWeights64(in.v, wp)
				checkWeights(t, in, p.Form, got, want, c.big)
			})
		}
	}
}

func checkWeights(t *testing.T, in *weightsInputs, form uint32, got []float32, want []float64, big bool) {
	t.Helper()
	B, Lk, Hb := in.v.B, in.v.L, in.wp.Hb
	var worst, worstRel, maxDt float64
	var worstAt string
	flushed := 0
	bad := 0
	for b := range B {
		for c := range Hb {
			for j := range Lk {
				i := (b*Hb+c)*Lk + j
				g, w := float64(got[i]), want[i]
				a := in.wp.A[c]
				if a == 0 {
					// The public initialisation: exactly 1 (exp) or 0 (linear).
					if exact := float64(1 - form); g != exact {
						t.Errorf("delta[b=%d c=%d j=%d] = %g with A = 0, want exactly %g", b, c, j, g, exact)
						bad++
					}
					continue
				}
				dt, edt := dtBound(in, b, j, c)
				maxDt = max(maxDt, math.Abs(dt))
				tol := weightTolerance(form, a, dt, edt)
				var err float64
				switch {
				case math.IsInf(g, 0):
					// Overflow: fine only where the true value is within tol of float32's range.
					if math.Signbit(g) != math.Signbit(w) || math.Abs(w)+tol < math.MaxFloat32 {
						err = math.Inf(1)
					}
				default:
					err = math.Abs(g - w) // NaN (an unwritten output) fails below
				}
				if !(err <= tol) {
					if bad < 10 {
						t.Errorf("delta[b=%d c=%d j=%d] = %g, want %g (|err| %.3g > tol %.3g; A %g, dt %g, dt bound %.3g)",
							b, c, j, g, w, err, tol, a, dt, edt)
					}
					bad++
					continue
				}
				if math.Abs(w) < 0x1p-125 {
					flushed++ // in or near float32's subnormal range: err/tol says nothing
					continue
				}
				if err/tol > worst {
					worstAt = fmt.Sprintf("b=%d c=%d j=%d got %g want %g A %g dt %g edt %.3g err %.3g tol %.3g", b, c, j, g, w, a, dt, edt, err, tol)
				}
				worst = max(worst, err/tol)
				if !math.IsInf(g, 0) {
					worstRel = max(worstRel, err/math.Abs(w))
				}
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d weights wrong", bad, len(got))
	}
	if big && maxDt < 150 {
		t.Errorf("max |dt| = %.1f: the large-dt case should reach beyond exp's float32 range (88.7)", maxDt)
	}
	t.Logf("max |dt| %.3g, worst |err|/tol %.3f (%s), worst relative error %.3g; %d weights below 2^-125",
		maxDt, worst, worstAt, worstRel, flushed)
}

func TestWeightsErrors(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	c := weightsCase{B: 2, Lk: 7, Hkv: 2, D: 32, Hb: 4, bdt: true}
	in := makeWeightsInputs(rng, c)
	wb := uploadWeights(t, d, in)
	small := newBuffer(t, d, nil, 8)
	cases := []struct {
		name string
		edit func(p *Params, b *weightsBuffers)
		want string
	}{
		{"empty", func(p *Params, b *weightsBuffers) { p.Lk = 0 }, "empty shape"},
		{"form", func(p *Params, b *weightsBuffers) { p.Form = 2 }, "unknown form"},
		{"nobdt", func(p *Params, b *weightsBuffers) { b.bdt = nil }, "bdt is nil"},
		{"V", func(p *Params, b *weightsBuffers) { p.V.Off = 1 }, "V buffer has"},
		{"Wdt", func(p *Params, b *weightsBuffers) { b.wdt = small }, "Wdt buffer has"},
		{"bdt", func(p *Params, b *weightsBuffers) { b.bdt = small }, "bdt buffer has"},
		{"A", func(p *Params, b *weightsBuffers) { b.a = small }, "A buffer has"},
		{"delta", func(p *Params, b *weightsBuffers) { b.delta = small }, "delta buffer has"},
		{"params", func(p *Params, b *weightsBuffers) { b.params = small }, "params buffer has"},
		{"index", func(p *Params, b *weightsBuffers) { p.V.Off = 1<<32 - 100 }, "32-bit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, b := in.p, *wb
			tc.edit(&p, &b)
			err := d.Run(context.Background(), func(r *vk.Recorder) error {
				return k.RecordWeights(r, &p, b.params, b.v, b.wdt, b.bdt, b.a, b.delta)
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestWeightsTiles checks the tiling for every Hb against shared memory limits: the
// minimum Vulkan guarantees (16 KiB) and NVIDIA's 48 KiB.
func TestWeightsTiles(t *testing.T) {
	for _, limit := range []uint32{16 << 10, 48 << 10} {
		for hb := uint32(1); hb <= 300; hb++ {
			c, err := chooseWeights(hb, limit)
			if err != nil {
				t.Fatalf("Hb %d, %d bytes: %v", hb, limit, err)
			}
			if c.shared() > limit || c.tm > 4 || c.tn > 4 || c.cx > 16 || 256%c.cx != 0 || c.bk < 8 {
				t.Fatalf("Hb %d, %d bytes: bad tiling %+v (%d bytes)", hb, limit, c, c.shared())
			}
			if c.heads() < min(hb, 64) || c.keys() < 64 {
				t.Fatalf("Hb %d: tile of %d keys x %d heads", hb, c.keys(), c.heads())
			}
		}
	}
}

// BenchmarkWeights reports the GPU time of the dispatch (timestamps) for model-sized
// shapes, fp16 V in [B, L, H, D].
func BenchmarkWeights(b *testing.B) {
	d := vktest.Device(b, vk.Features{})
	if caps := d.Caps(); !caps.Timestamps() {
		b.Skip("no timestamps")
	}
	k := New(d)
	defer k.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []weightsCase{
		{B: 1, Lk: 32768, Hkv: 8, D: 128, Hb: 8, storage: StorageF16, bdt: true},
		{B: 1, Lk: 32768, Hkv: 8, D: 128, Hb: 32, storage: StorageF16, bdt: true},
		{B: 4, Lk: 8192, Hkv: 2, D: 256, Hb: 64, storage: StorageF16},
	} {
		b.Run(c.String(), func(b *testing.B) {
			in := makeWeightsInputs(rng, c)
			wb := uploadWeights(b, d, in)
			p := in.p
			// Back-to-back dispatches in one submission, so that the GPU stays busy (and
			// clocked up) between them.
			const reps = 20
			var total float64
			for b.Loop() {
				ts, err := d.RunTimed(context.Background(), func(r *vk.Recorder) error {
					if err := r.Update(wb.params, 0, p.Bytes()); err != nil {
						return err
					}
					r.Barrier()
					for i := range reps + 1 {
						if i == 1 {
							if err := r.Timestamp("start"); err != nil {
								return err
							}
						}
						if err := k.RecordWeights(r, &p, wb.params, wb.v, wb.wdt, wb.bdt, wb.a, wb.delta); err != nil {
							return err
						}
						r.Barrier()
					}
					return r.Timestamp("end")
				})
				if err != nil {
					b.Fatal(err)
				}
				total += (ts[1].Nanos - ts[0].Nanos) / reps
			}
			us := total / float64(b.N) / 1e3
			vbytes := float64(c.B*c.Lk*c.Hkv*c.D) * 2
			b.ReportMetric(us, "gpu-us/op")
			b.ReportMetric(vbytes/(us*1e3), "V-GB/s")
		})
	}
}
