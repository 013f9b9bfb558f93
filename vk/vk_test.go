package vk_test

import (
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/shaders"
	"github.com/dmavk/dmavk/vk"
)

// The workload of these tests is the portable f32 matmul kernel: bindings A, B, C
// (float32, row-major), push constants M, N, K (uint32), 64x64 tiles of C per workgroup.

func matmulDesc(t testing.TB) vk.PipelineDesc {
	t.Helper()
	code, err := shaders.Get("matmul_f32")
	if err != nil {
		t.Fatal(err)
	}
	return vk.PipelineDesc{Name: "matmul_f32", SPIRV: code, Bindings: 3, PushSize: 12}
}

func matmulPipeline(t testing.TB, d *vk.Device) *vk.Pipeline {
	t.Helper()
	p, err := d.NewPipeline(matmulDesc(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func matmulPush(m, n, k int) []byte {
	push := make([]byte, 12)
	binary.LittleEndian.PutUint32(push[0:], uint32(m))
	binary.LittleEndian.PutUint32(push[4:], uint32(n))
	binary.LittleEndian.PutUint32(push[8:], uint32(k))
	return push
}

func matmulGroups(m, n int) [3]uint32 {
	return [3]uint32{uint32((n + 63) / 64), uint32((m + 63) / 64), 1}
}

// dispatchMatmul records C[m,n] = A[m,k] * B[k,n].
func dispatchMatmul(r *vk.Recorder, p *vk.Pipeline, a, b, c *vk.Buffer, m, n, k int) error {
	return r.Dispatch(p, matmulGroups(m, n), matmulPush(m, n, k), vk.Bind(a), vk.Bind(b), vk.Bind(c))
}

func randFloats(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

func f32Bytes(x []float32) []byte {
	b := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func bytesF32(b []byte) []float32 {
	x := make([]float32, len(b)/4)
	for i := range x {
		x[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return x
}

// checkProduct compares got with A*B computed in float64; the bound is the fp32
// accumulation error of k products relative to sum |a*b|.
func checkProduct(t testing.TB, got, a, b []float32, m, n, k int) {
	t.Helper()
	for i := range m {
		for j := range n {
			var want, scale float64
			for q := range k {
				p := float64(a[i*k+q]) * float64(b[q*n+j])
				want += p
				scale += math.Abs(p)
			}
			g := float64(got[i*n+j])
			if math.IsNaN(g) || math.Abs(g-want) > 1e-5*scale+1e-6 {
				t.Fatalf("C[%d,%d] = %g, want %g (%dx%dx%d)", i, j, g, want, m, n, k)
			}
		}
	}
}

// newBuffer allocates a buffer closed at the end of the test.
func newBuffer(t testing.TB, d *vk.Device, size int64) *vk.Buffer {
	t.Helper()
	b, err := d.NewBuffer(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func uploadFloats(t testing.TB, d *vk.Device, x []float32) *vk.Buffer {
	t.Helper()
	b := newBuffer(t, d, int64(4*len(x)))
	if err := b.Upload(context.Background(), 0, f32Bytes(x)); err != nil {
		t.Fatal(err)
	}
	return b
}

// multiplyOnce runs one product of fresh random operands on d and checks it.
func multiplyOnce(t testing.TB, d *vk.Device, p *vk.Pipeline, rng *rand.Rand, m, n, k int) {
	t.Helper()
	ctx := context.Background()
	a, b := randFloats(rng, m*k), randFloats(rng, k*n)
	ba, err := d.NewBuffer(int64(4 * len(a)))
	if err != nil {
		t.Fatal(err)
	}
	defer ba.Close()
	bb, err := d.NewBuffer(int64(4 * len(b)))
	if err != nil {
		t.Fatal(err)
	}
	defer bb.Close()
	bc, err := d.NewBuffer(int64(4 * m * n))
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	if err := ba.Upload(ctx, 0, f32Bytes(a)); err != nil {
		t.Fatal(err)
	}
	if err := bb.Upload(ctx, 0, f32Bytes(b)); err != nil {
		t.Fatal(err)
	}
	if err := d.Run(ctx, func(r *vk.Recorder) error { return dispatchMatmul(r, p, ba, bb, bc, m, n, k) }); err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 4*m*n)
	if err := bc.Download(ctx, 0, out); err != nil {
		t.Fatal(err)
	}
	checkProduct(t, bytesF32(out), a, b, m, n, k)
}

func TestMatmulWorkload(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	p := matmulPipeline(t, d)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range [][3]int{{1, 1, 1}, {5, 7, 3}, {65, 70, 33}} {
		multiplyOnce(t, d, p, rng, s[0], s[1], s[2])
	}
}
