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
	rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
	type variant struct {
		path Path
		half bool
	}
	variants := []variant{{Portable, false}, {Portable, true}, {CoopMat, true}}
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
