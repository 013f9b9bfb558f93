package matmul

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/dmavk/dmavk/internal/f16"
	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/vk"
	"gonum.org/v1/gonum/mat"
)

func upload(t *testing.T, d *vk.Device, data []byte) *vk.Buffer {
	t.Helper()
	// Packed halves are read as 32-bit words: round the size up to whole words.
	b, err := d.NewBuffer(int64((len(data) + 3) &^ 3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if err := b.Upload(context.Background(), 0, data); err != nil {
		t.Fatal(err)
	}
	return b
}

// operands draws A and B, rounded to fp16 when asked so that the reference sees the
// very numbers the GPU does.
func operands(rng *rand.Rand, m, n, k int, half bool) (a, b *mat.Dense, abytes, bbytes []byte) {
	enc := func(rows, cols int) (*mat.Dense, []byte) {
		x := mat.NewDense(rows, cols, nil)
		var buf []byte
		for i := range rows {
			for j := range cols {
				v := float32(rng.NormFloat64())
				if half {
					h := f16.FromFloat32(v)
					v = f16.ToFloat32(h)
					buf = binary.LittleEndian.AppendUint16(buf, h)
				} else {
					buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
				}
				x.Set(i, j, float64(v))
			}
		}
		return x, buf
	}
	a, abytes = enc(m, k)
	b, bbytes = enc(k, n)
	return
}

// shapes covers the edges: tiny, odd, K and N not multiples of 8 (scalar loads), and
// multiples of 8 or of the workgroup tile (16-byte loads, direct stores of C).
var shapes = [][3]int{
	{1, 1, 1}, {7, 5, 3}, {64, 64, 64}, {65, 63, 17}, {100, 129, 70}, {33, 200, 257},
	{256, 256, 256}, {384, 128, 96}, {128, 128, 32}, {136, 72, 40}, {200, 264, 48},
	{129, 136, 200}, {8, 8, 8}, {130, 130, 130}, {512, 64, 8},
	// Whole tiles with K past several unrolled steps and a remainder: the coopmat2
	// kernel's fast loop, both of its parts.
	{256, 512, 576}, {384, 256, 1088},
}

func TestMatmulAgainstGonum(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k, err := New(d)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if k.Has(CoopMat) {
		t.Logf("coopmat: shape %v, tiling %v", k.Shape(), k.Tiling())
	}
	if k.Has(CoopMat2) {
		t.Logf("coopmat2: shape %v, tile %v", k.CM2Shape(), k.CM2Tiling())
	} else {
		t.Logf("coopmat2: %v", k.CoopMat2Err())
	}
	caps := d.Caps()
	if cm2Ready(&caps) == nil && len(cm2Shapes(&caps)) > 0 && !k.Has(CoopMat2) {
		t.Errorf("%s can run the coopmat2 kernel but has no CoopMat2 path: %v", caps.Name, k.CoopMat2Err())
	}
	rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
	type variant struct {
		path Path
		half bool
	}
	variants := []variant{{Portable, false}, {Portable, true}, {CoopMat, true}, {CoopMat2, true}}
	for _, v := range variants {
		for _, s := range shapes {
			m, n, kk := s[0], s[1], s[2]
			t.Run(fmt.Sprintf("%s/f16=%v/%dx%dx%d", v.path, v.half, m, n, kk), func(t *testing.T) {
				if !k.Has(v.path) {
					if v.path == CoopMat && requireCoopMat() {
						t.Fatalf("DMAVK_REQUIRE_COOPMAT is set but %s offers no fp16 cooperative matrix", d.Caps().Name)
					}
					t.Skipf("%s has no %s path", d.Caps().Name, v.path)
				}
				checkProduct(t, d, k, v.path, v.half, rng, m, n, kk)
			})
		}
	}
}

// TestCoopMatTilings runs every built-in tiling that suits the device, the small kernel
// included, on every shape.
func TestCoopMatTilings(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	caps := d.Caps()
	shape, ok := caps.HasCoopMat(vk.ComponentF16, vk.ComponentF16, vk.ComponentF32)
	if !ok || !caps.Float16 {
		if requireCoopMat() {
			t.Fatalf("DMAVK_REQUIRE_COOPMAT is set but %s offers no fp16 cooperative matrix", caps.Name)
		}
		t.Skipf("%s has no fp16 cooperative matrix", caps.Name)
	}
	rng := rand.New(rand.NewPCG(rand.Uint64(), 2))
	// Beyond the built-in ones: a tall tile with one K step per barrier, a lone subgroup.
	extra := []Tiling{{WM: 4, WN: 2, TM: 4, TN: 4, BK: int(shape.K)}, {WM: 1, WN: 1, TM: 1, TN: 1, BK: int(shape.K)}}
	ran := 0
	for _, tl := range append(tilings(shape), extra...) {
		if err := tl.check(shape, &caps); err != nil {
			t.Logf("tiling %v skipped: %v", tl, err)
			continue
		}
		ran++
		t.Run(tl.String(), func(t *testing.T) {
			k, err := NewTiling(d, &tl)
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close()
			for _, s := range shapes {
				checkProduct(t, d, k, CoopMat, true, rng, s[0], s[1], s[2])
			}
		})
	}
	if ran < 2 {
		t.Fatalf("only %d tilings suit %s", ran, caps.Name)
	}
}

// TestCoopMat2Tilings runs the built-in coopmat2 tile and a few others that suit the
// device on every shape.
func TestCoopMat2Tilings(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	caps := d.Caps()
	if err := cm2Ready(&caps); err != nil {
		t.Skip(err)
	}
	def, shape, err := ChooseCM2(&caps, nil)
	if err != nil {
		t.Skip(err)
	}
	rng := rand.New(rand.NewPCG(rand.Uint64(), 3))
	gm, gn, gk := int(shape.MGranularity), int(shape.NGranularity), int(shape.KGranularity)
	cands := []CM2Tiling{def,
		{BM: def.BM, BN: def.BN, BK: 2 * def.BK, Threads: def.Threads},
		{BM: 2 * def.BM, BN: def.BN, BK: def.BK, Threads: def.Threads},
		{BM: 128, BN: 128, BK: 32, Threads: def.Threads},
		{BM: 128, BN: 128, BK: 64, Threads: def.Threads},
		{BM: gm, BN: gn, BK: gk, Threads: def.Threads},
	}
	for _, s := range cm2Shapes(&caps) { // the smallest workgroup too
		if int(s.WorkgroupInvocations) < def.Threads {
			cands = append(cands, CM2Tiling{BM: roundUp(64, int(s.MGranularity), 0), BN: roundUp(64, int(s.NGranularity), 0), BK: roundUp(32, int(s.KGranularity), 0), Threads: int(s.WorkgroupInvocations)})
			break
		}
	}
	for _, tl := range cands {
		if _, _, err := ChooseCM2(&caps, &tl); err != nil {
			t.Logf("tile %v skipped: %v", tl, err)
			continue
		}
		t.Run(tl.String(), func(t *testing.T) {
			k, err := NewWith(d, nil, &tl)
			if err != nil {
				t.Fatal(err)
			}
			defer k.Close()
			if !k.Has(CoopMat2) || k.CM2Tiling() != tl {
				t.Fatalf("tile %v not loaded: %v", tl, k.CoopMat2Err())
			}
			for _, s := range shapes {
				checkProduct(t, d, k, CoopMat2, true, rng, s[0], s[1], s[2])
			}
		})
	}
}

// h200Caps resembles what an NVIDIA H200 reports for VK_NV_cooperative_matrix2.
func h200Caps() vk.Caps {
	flex := func(m, n, k, inv uint32) vk.CoopMatFlexShape {
		return vk.CoopMatFlexShape{MGranularity: m, NGranularity: n, KGranularity: k,
			A: vk.ComponentF16, B: vk.ComponentF16, C: vk.ComponentF32, Result: vk.ComponentF32,
			Scope: vk.ScopeWorkgroup, WorkgroupInvocations: inv}
	}
	return vk.Caps{
		Name:                    "synthetic H200",
		MaxSharedMemory:         49152,
		MaxWorkgroupSize:        [3]uint32{1024, 1024, 64},
		MaxWorkgroupInvocations: 1024,
		SubgroupSize:            32,
		Float16:                 true,
		Storage16:               true,
		CoopMat:                 true,
		CoopMat2:                true,
		CoopMat2Flags: vk.CoopMat2Features{WorkgroupScope: true, FlexibleDimensions: true, Reductions: true,
			Conversions: true, PerElementOperations: true, TensorAddressing: true, BlockLoads: true},
		CoopMat2Props: vk.CoopMat2Props{WorkgroupScopeMaxWorkgroupSize: 256, FlexibleDimensionsMaxDimension: 256,
			WorkgroupScopeReservedSharedMemory: 1024},
		CoopMatFlexShapes: []vk.CoopMatFlexShape{
			{MGranularity: 16, NGranularity: 8, KGranularity: 16, A: vk.ComponentF16, B: vk.ComponentF16,
				C: vk.ComponentF16, Result: vk.ComponentF16, Scope: vk.ScopeSubgroup},
			flex(16, 16, 16, 32), flex(16, 16, 16, 64), flex(32, 16, 16, 128), flex(32, 32, 16, 256),
		},
	}
}

func TestChooseCM2(t *testing.T) {
	caps := h200Caps()
	got, s, err := ChooseCM2(&caps, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (CM2Tiling{BM: 128, BN: 256, BK: 32, Threads: 256}); got != want || s.WorkgroupInvocations != 256 || s.MGranularity != 32 {
		t.Errorf("H200-like caps: tile %v (shape %v), want %v on 32x32x16", got, s, want)
	}

	// A smaller workgroup-scope limit takes the 128-invocation entry.
	small := h200Caps()
	small.CoopMat2Props.WorkgroupScopeMaxWorkgroupSize = 128
	if got, s, err := ChooseCM2(&small, nil); err != nil || got != (CM2Tiling{128, 128, 32, 128}) || s.NGranularity != 16 {
		t.Errorf("limit 128: %v, %v, %v", got, s, err)
	}

	// Forced tiles must match an entry's invocations and granularity.
	for _, c := range []struct {
		tile CM2Tiling
		ok   bool
	}{
		{CM2Tiling{256, 128, 64, 256}, true},
		{CM2Tiling{64, 64, 32, 64}, true},
		{CM2Tiling{48, 64, 32, 128}, false},   // 48 is no multiple of 32
		{CM2Tiling{128, 128, 32, 512}, false}, // above the workgroup-scope limit
		{CM2Tiling{128, 128, 32, 96}, false},  // no such entry
		{CM2Tiling{512, 128, 32, 256}, false}, // above the largest flexible dimension
		{CM2Tiling{128, 128, 24, 256}, false}, // K step no multiple of 16
	} {
		got, s, err := ChooseCM2(&caps, &c.tile)
		if (err == nil) != c.ok || c.ok && (got != c.tile || int(s.WorkgroupInvocations) != c.tile.Threads) {
			t.Errorf("forced %v: %v, %v, %v", c.tile, got, s, err)
		}
	}

	// Without workgroup scope or tensor addressing (Mesa's lavapipe) there is no path.
	for _, f := range []func(*vk.Caps){
		func(c *vk.Caps) { c.CoopMat2Flags.WorkgroupScope = false },
		func(c *vk.Caps) { c.CoopMat2Flags.TensorAddressing = false },
		func(c *vk.Caps) { c.CoopMat2Flags.FlexibleDimensions = false },
		func(c *vk.Caps) { c.CoopMat2 = false },
		func(c *vk.Caps) { c.CoopMatFlexShapes = c.CoopMatFlexShapes[:1] },
	} {
		c := h200Caps()
		f(&c)
		if got, _, err := ChooseCM2(&c, nil); err == nil {
			t.Errorf("caps %+v: tile %v, want none", c.CoopMat2Flags, got)
		}
	}
}

func TestParseCM2Tiling(t *testing.T) {
	for _, c := range []struct {
		in   string
		want CM2Tiling
		ok   bool
	}{
		{"128x128x32x256", CM2Tiling{128, 128, 32, 256}, true},
		{"256x128x64x256", CM2Tiling{256, 128, 64, 256}, true},
		{"128x128x32", CM2Tiling{}, false},
		{"128x128x32x256x1", CM2Tiling{}, false},
		{"0x128x32x256", CM2Tiling{}, false},
		{"128,128,32,256", CM2Tiling{}, false},
	} {
		got, err := ParseCM2Tiling(c.in)
		if (err == nil) != c.ok || c.ok && got != c.want {
			t.Errorf("ParseCM2Tiling(%q) = %v, %v", c.in, got, err)
		}
	}
}

func TestParseTiling(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Tiling
		ok   bool
	}{
		{"2,4,4,2,32", Tiling{WM: 2, WN: 4, TM: 4, TN: 2, BK: 32}, true},
		{"small,2,2", Tiling{Small: true, TM: 2, TN: 2}, true},
		{"2,4", Tiling{}, false},
		{"small", Tiling{}, false},
	} {
		got, err := ParseTiling(c.in)
		if (err == nil) != c.ok || c.ok && got != c.want {
			t.Errorf("ParseTiling(%q) = %v, %v", c.in, got, err)
		}
	}
}

// checkProduct multiplies random m x kk and kk x n matrices on the path and compares
// with gonum.
func checkProduct(t *testing.T, d *vk.Device, k *Kernel, path Path, half bool, rng *rand.Rand, m, n, kk int) {
	t.Helper()
	a, b, ab, bb := operands(rng, m, n, kk, half)
	ba, bbuf := upload(t, d, ab), upload(t, d, bb)
	bc, err := d.NewBuffer(int64(m * n * 4))
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	// Poison C so an unwritten element cannot pass.
	poison := make([]byte, m*n*4)
	for i := range m * n {
		binary.LittleEndian.PutUint32(poison[4*i:], math.Float32bits(float32(math.NaN())))
	}
	if err := bc.Upload(context.Background(), 0, poison); err != nil {
		t.Fatal(err)
	}
	if err := k.Multiply(context.Background(), path, half, ba, bbuf, bc, m, n, kk); err != nil {
		t.Fatal(err)
	}
	out := make([]byte, m*n*4)
	if err := bc.Download(context.Background(), 0, out); err != nil {
		t.Fatal(err)
	}
	var want mat.Dense
	want.Mul(a, b)
	// fp32 accumulation of kk products: error grows like sqrt(kk) * eps32 * |a||b|.
	var worst float64
	for i := range m {
		for j := range n {
			got := float64(math.Float32frombits(binary.LittleEndian.Uint32(out[4*(i*n+j):])))
			var scale float64
			for q := range kk {
				scale += math.Abs(a.At(i, q) * b.At(q, j))
			}
			err := math.Abs(got - want.At(i, j))
			if math.IsNaN(got) || err > 1e-5*scale+1e-6 {
				t.Fatalf("%dx%dx%d: C[%d,%d] = %g, want %g (|err| %g, scale %g)", m, n, kk, i, j, got, want.At(i, j), err, scale)
			}
			worst = max(worst, err/(scale+1e-30))
		}
	}
	t.Logf("%dx%dx%d: max error / sum|a*b| = %.2e", m, n, kk, worst)
}

// requireCoopMat: the software-device runner sets DMAVK_REQUIRE_COOPMAT=1 on Mesa 26,
// so a cooperative-matrix test there fails instead of skipping.
func requireCoopMat() bool { return os.Getenv("DMAVK_REQUIRE_COOPMAT") == "1" }
