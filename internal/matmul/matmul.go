// Package matmul is a tiled matrix product on the GPU, C (f32) = A * B with fp32 or fp16
// inputs: the smallest real kernel that exercises the whole chain (embedded SPIR-V,
// specialization constants, push constants, subgroup-size control, cooperative
// matrices) and proves the host layer against gonum.
package matmul

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/dmavk/dmavk/shaders"
	"github.com/dmavk/dmavk/vk"
)

// Path is an implementation of the product.
type Path int

const (
	// Portable runs on every Vulkan device.
	Portable Path = iota
	// CoopMat runs on tensor cores through VK_KHR_cooperative_matrix (fp16 inputs only).
	CoopMat
)

func (p Path) String() string {
	if p == CoopMat {
		return "coopmat"
	}
	return "portable"
}

// Kernel holds the pipelines of one device.
type Kernel struct {
	d        *vk.Device
	f32, f16 *vk.Pipeline
	coop     *vk.Pipeline
	shape    vk.CoopMatShape
}

// New compiles the pipelines the device supports.
func New(d *vk.Device) (*Kernel, error) {
	k := &Kernel{d: d}
	var err error
	if k.f32, err = load(d, "matmul_f32", nil, 0); err != nil {
		return nil, err
	}
	if k.f16, err = load(d, "matmul_f16", nil, 0); err != nil {
		k.Close()
		return nil, err
	}
	caps := d.Caps()
	if shape, ok := caps.HasCoopMat(vk.ComponentF16, vk.ComponentF16, vk.ComponentF32); ok && caps.Float16 {
		sg := caps.SubgroupSize
		var required uint32
		if caps.SubgroupSizeControl && caps.SubgroupSizeComputeReq && caps.MinSubgroupSize != caps.MaxSubgroupSize {
			required = sg // cooperative matrices are sized for this subgroup: pin it
		}
		tm, tn := uint32(2), uint32(2)
		spec := []uint32{shape.M, shape.N, shape.K, sg, tm, tn, 4 * sg}
		if k.coop, err = load(d, "matmul_coopmat", spec, required); err != nil {
			k.Close()
			return nil, err
		}
		k.shape = shape
	}
	return k, nil
}

func load(d *vk.Device, name string, spec []uint32, subgroup uint32) (*vk.Pipeline, error) {
	code, err := shaders.Get(name)
	if err != nil {
		return nil, err
	}
	return d.NewPipeline(vk.PipelineDesc{Name: name, SPIRV: code, Bindings: 3, PushSize: 12, Spec: spec, SubgroupSize: subgroup})
}

// Has reports whether the path is available on this device.
func (k *Kernel) Has(p Path) bool { return p == Portable || k.coop != nil }

// Shape is the cooperative-matrix shape the CoopMat path uses.
func (k *Kernel) Shape() vk.CoopMatShape { return k.shape }

// Multiply computes C[m,n] = A[m,kk] * B[kk,n] (row-major) and waits for it. With f16,
// A and B hold IEEE half-precision bits, two per 32-bit word.
func (k *Kernel) Multiply(ctx context.Context, p Path, f16 bool, a, b, c *vk.Buffer, m, n, kk int) error {
	return k.d.Run(ctx, func(r *vk.Recorder) error { return k.Record(r, p, f16, a, b, c, m, n, kk) })
}

func (k *Kernel) plan(p Path, f16 bool, a, b, c *vk.Buffer, m, n, kk int) (*vk.Pipeline, [3]uint32, []byte, error) {
	var groups [3]uint32
	if m <= 0 || n <= 0 || kk <= 0 {
		return nil, groups, nil, fmt.Errorf("matmul: bad shape %dx%dx%d", m, n, kk)
	}
	elem := int64(4)
	if f16 {
		elem = 2
	}
	// fp16 operands are read as 32-bit words: the buffers must cover the last word.
	words := func(elems int) int64 { return (int64(elems)*elem + 3) &^ 3 }
	if a.Size() < words(m*kk) || b.Size() < words(kk*n) || c.Size() < int64(m*n)*4 {
		return nil, groups, nil, fmt.Errorf("matmul: buffers too small for %dx%dx%d", m, n, kk)
	}
	pipe, bm, bn := k.f32, 64, 64
	if f16 {
		pipe = k.f16
	}
	if p == CoopMat {
		if k.coop == nil {
			return nil, groups, nil, fmt.Errorf("matmul: no cooperative-matrix path on %s", k.d.Caps().Name)
		}
		if !f16 {
			return nil, groups, nil, fmt.Errorf("matmul: the cooperative-matrix path takes fp16 inputs")
		}
		pipe, bm, bn = k.coop, int(4*k.shape.M), int(4*k.shape.N)
	}
	push := make([]byte, 12)
	binary.LittleEndian.PutUint32(push[0:], uint32(m))
	binary.LittleEndian.PutUint32(push[4:], uint32(n))
	binary.LittleEndian.PutUint32(push[8:], uint32(kk))
	groups = [3]uint32{uint32((n + bn - 1) / bn), uint32((m + bm - 1) / bm), 1}
	return pipe, groups, push, nil
}

// Record records the product into r instead of running it (for timing with other
// commands in one submission); see Multiply.
func (k *Kernel) Record(r *vk.Recorder, p Path, f16 bool, a, b, c *vk.Buffer, m, n, kk int) error {
	pipe, groups, push, err := k.plan(p, f16, a, b, c, m, n, kk)
	if err != nil {
		return err
	}
	return r.Dispatch(pipe, groups, push, vk.Bind(a), vk.Bind(b), vk.Bind(c))
}

// Close destroys the pipelines.
func (k *Kernel) Close() error {
	for _, p := range []*vk.Pipeline{k.f32, k.f16, k.coop} {
		if p != nil {
			p.Close()
		}
	}
	return nil
}
