// Package matmul is a tiled matrix product on the GPU, C (f32) = A * B with fp32 or fp16
// inputs: the smallest real kernel that exercises the whole chain (embedded SPIR-V,
// specialization constants, push constants, subgroup-size control, cooperative
// matrices) and proves the host layer against gonum.
package matmul

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"strings"

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
	// CoopMat2 runs on tensor cores through VK_NV_cooperative_matrix2 with
	// workgroup-scope matrices and tensor-addressing loads and stores; the driver stages
	// the operands through shared memory itself (fp16 inputs only).
	CoopMat2
)

func (p Path) String() string {
	switch p {
	case CoopMat:
		return "coopmat"
	case CoopMat2:
		return "coopmat2"
	}
	return "portable"
}

// Kernel holds the pipelines of one device.
type Kernel struct {
	d        *vk.Device
	f32, f16 *vk.Pipeline
	coop     *vk.Pipeline
	shape    vk.CoopMatShape
	tile     Tiling
	cm2      *vk.Pipeline
	cm2Tile  CM2Tiling
	cm2Shape vk.CoopMatFlexShape
	cm2Err   error
}

// Tiling is the work split of the cooperative-matrix kernel
// (shaders/matmul_coopmat.comp): a workgroup of WM x WN subgroups owns a tile of C of
// (WM*TM*shape.M) x (WN*TN*shape.N) and steps through K by BK. Small selects the
// original 2 x 2 subgroup kernel (TM x TN accumulators each, K step 2 * shape.K) for
// shapes and devices the tiled one cannot serve.
type Tiling struct {
	Small              bool
	WM, WN, TM, TN, BK int
}

func (t Tiling) String() string {
	if t.Small {
		return fmt.Sprintf("small %dx%d", t.TM, t.TN)
	}
	return fmt.Sprintf("%dx%d subgroups of %dx%d, bk %d", t.WM, t.WN, t.TM, t.TN, t.BK)
}

// Block is the tile of C one workgroup computes.
func (t Tiling) Block(s vk.CoopMatShape) (bm, bn int) {
	if t.Small {
		return 2 * t.TM * int(s.M), 2 * t.TN * int(s.N)
	}
	return t.WM * t.TM * int(s.M), t.WN * t.TN * int(s.N)
}

// shared is the shared memory the kernel declares, in bytes.
func (t Tiling) shared(s vk.CoopMatShape) int {
	bm, bn := t.Block(s)
	if t.Small {
		bk := 2 * int(s.K)
		return 2*(bm*(bk+8)+bk*(bn+8)) + 4*bm*(bn+8)
	}
	return 16 * 2 * (bm*(t.BK/8+1) + t.BK*(bn/8+1))
}

// check reports why the tiling does not suit the device, or nil.
func (t Tiling) check(s vk.CoopMatShape, caps *vk.Caps) error {
	sg := int(caps.SubgroupSize)
	nt := t.WM * t.WN * sg
	if t.Small {
		nt = 4 * sg
	}
	ms, ns, ks := int(s.M), int(s.N), int(s.K)
	switch {
	case t.TM < 1 || t.TN < 1 || !t.Small && (t.WM < 1 || t.WN < 1):
		return fmt.Errorf("empty tiling")
	case nt > int(caps.MaxWorkgroupInvocations) || nt > int(caps.MaxWorkgroupSize[0]):
		return fmt.Errorf("%d invocations exceed the device's workgroup limits", nt)
	case t.shared(s) > int(caps.MaxSharedMemory):
		return fmt.Errorf("%d bytes of shared memory exceed the device's %d", t.shared(s), caps.MaxSharedMemory)
	case t.Small:
		return nil
	case ks%8 != 0 || ns%8 != 0:
		return fmt.Errorf("shape %dx%dx%d: K and N must be multiples of 8", ms, ns, ks)
	case t.BK < ks || t.BK%ks != 0 || t.BK%8 != 0:
		return fmt.Errorf("K step %d is not a multiple of %d and 8", t.BK, ks)
	case ms*ns%4 != 0 || t.WM*t.WN*ms*ns/4 > 2*t.WM*t.TM*ms*(t.BK/8+1):
		return fmt.Errorf("epilogue scratch does not fit")
	}
	return nil
}

// spec is the kernel's specialization constants.
func (t Tiling) spec(s vk.CoopMatShape, sg uint32) []uint32 {
	u := func(x int) uint32 { return uint32(x) }
	if t.Small {
		return []uint32{s.M, s.N, s.K, sg, u(t.TM), u(t.TN), 4 * sg}
	}
	return []uint32{s.M, s.N, s.K, sg, u(t.TM), u(t.TN), u(t.WM*t.WN) * sg, u(t.WM), u(t.WN), u(t.BK)}
}

// tilings are the candidates, best first: New takes the first that suits the device.
// The first is 128 x 128 of C per workgroup with 16 x 16 x 16 (NVIDIA): 8 subgroups of
// 64 x 32 (4 x 2 accumulators), double-buffered 128 x 32 and 32 x 128 tiles of A and B
// in 37 KiB of shared memory; 64 x 64 with lavapipe's 8 x 8 x 8 (19 KiB).
func tilings(s vk.CoopMatShape) []Tiling {
	bk := max(32, 2*int(s.K))
	return []Tiling{
		{WM: 2, WN: 4, TM: 4, TN: 2, BK: bk},
		{WM: 2, WN: 2, TM: 4, TN: 4, BK: bk},
		{WM: 2, WN: 2, TM: 4, TN: 2, BK: bk},
		{WM: 2, WN: 2, TM: 2, TN: 2, BK: bk},
		{WM: 2, WN: 2, TM: 1, TN: 1, BK: int(s.K)},
		{Small: true, TM: 2, TN: 2},
		{Small: true, TM: 1, TN: 1},
	}
}

// ParseTiling reads "WM,WN,TM,TN,BK" or "small,TM,TN" (DMAVK_MATMUL_TILING, for tuning).
func ParseTiling(str string) (Tiling, error) {
	var t Tiling
	if strings.HasPrefix(str, "small,") {
		t.Small = true
		if _, err := fmt.Sscanf(str, "small,%d,%d", &t.TM, &t.TN); err != nil {
			return t, fmt.Errorf("matmul: tiling %q: %v", str, err)
		}
		return t, nil
	}
	if _, err := fmt.Sscanf(str, "%d,%d,%d,%d,%d", &t.WM, &t.WN, &t.TM, &t.TN, &t.BK); err != nil {
		return t, fmt.Errorf("matmul: tiling %q: %v", str, err)
	}
	return t, nil
}

// New compiles the pipelines the device supports. The cooperative-matrix tiling is the
// first of the built-in candidates that suits the device, or DMAVK_MATMUL_TILING when
// set (see ParseTiling); the coopmat2 tile is ChooseCM2's, or DMAVK_MATMUL_CM2 when set
// (see ParseCM2Tiling).
func New(d *vk.Device) (*Kernel, error) {
	var force *Tiling
	if env := os.Getenv("DMAVK_MATMUL_TILING"); env != "" {
		t, err := ParseTiling(env)
		if err != nil {
			return nil, err
		}
		force = &t
	}
	var cm2 *CM2Tiling
	if env := os.Getenv("DMAVK_MATMUL_CM2"); env != "" {
		t, err := ParseCM2Tiling(env)
		if err != nil {
			return nil, err
		}
		cm2 = &t
	}
	return NewWith(d, force, cm2)
}

// NewTiling is New with the cooperative-matrix tiling given (nil: the built-in choice)
// and the built-in coopmat2 tile.
func NewTiling(d *vk.Device, tiling *Tiling) (*Kernel, error) {
	return NewWith(d, tiling, nil)
}

// NewWith is New with the cooperative-matrix tiling and the coopmat2 tile given (nil:
// the built-in choice). A coopmat2 tile that is given must suit the device; without
// one, a device whose coopmat2 pipeline fails to build still gets the other paths
// (CoopMat2Err says why CoopMat2 is missing).
func NewWith(d *vk.Device, tiling *Tiling, cm2 *CM2Tiling) (*Kernel, error) {
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
		cands := tilings(shape)
		if tiling != nil {
			if err := tiling.check(shape, &caps); err != nil {
				k.Close()
				return nil, fmt.Errorf("matmul: tiling %v on %s: %w", *tiling, caps.Name, err)
			}
			cands = []Tiling{*tiling}
		}
		for _, t := range cands {
			if t.check(shape, &caps) != nil {
				continue
			}
			name := "matmul_coopmat_tiled"
			if t.Small {
				name = "matmul_coopmat_small"
			}
			if k.coop, err = load(d, name, t.spec(shape, sg), required); err != nil {
				k.Close()
				return nil, err
			}
			k.shape, k.tile = shape, t
			break
		}
	}
	if err := k.loadCM2(&caps, cm2); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

// loadCM2 builds the coopmat2 pipeline when the device can run it. Only a forced tile
// makes a failure an error.
func (k *Kernel) loadCM2(caps *vk.Caps, force *CM2Tiling) error {
	t, s, err := ChooseCM2(caps, force)
	if err != nil {
		if force != nil {
			return err
		}
		k.cm2Err = err
		return nil
	}
	p, err := load(k.d, "matmul_cm2", t.spec(), 0)
	if err != nil {
		err = fmt.Errorf("matmul: coopmat2 tile %v on %s: %w", t, caps.Name, err)
		if force != nil {
			return err
		}
		k.cm2Err = err
		return nil
	}
	k.cm2, k.cm2Tile, k.cm2Shape = p, t, s
	return nil
}

func load(d *vk.Device, name string, spec []uint32, subgroup uint32) (*vk.Pipeline, error) {
	code, err := shaders.Get(name)
	if err != nil {
		return nil, err
	}
	return d.NewPipeline(vk.PipelineDesc{Name: name, SPIRV: code, Bindings: 3, PushSize: 12, Spec: spec, SubgroupSize: subgroup})
}

// Has reports whether the path is available on this device.
func (k *Kernel) Has(p Path) bool {
	switch p {
	case Portable:
		return true
	case CoopMat:
		return k.coop != nil
	case CoopMat2:
		return k.cm2 != nil
	}
	return false
}

// CM2Tiling is the tile of the CoopMat2 path (zero without it).
func (k *Kernel) CM2Tiling() CM2Tiling { return k.cm2Tile }

// CM2Shape is the flexible-dimension shape the CoopMat2 tile was checked against.
func (k *Kernel) CM2Shape() vk.CoopMatFlexShape { return k.cm2Shape }

// CoopMat2Err says why the CoopMat2 path is missing (nil when it is there).
func (k *Kernel) CoopMat2Err() error { return k.cm2Err }

// Shape is the cooperative-matrix shape the CoopMat path uses.
func (k *Kernel) Shape() vk.CoopMatShape { return k.shape }

// Tiling is the work split of the CoopMat path.
func (k *Kernel) Tiling() Tiling { return k.tile }

// Multiply computes C[m,n] = A[m,kk] * B[kk,n] (row-major) and waits for it. With f16,
// A and B hold IEEE half-precision bits, two per 32-bit word.
func (k *Kernel) Multiply(ctx context.Context, p Path, f16 bool, a, b, c *vk.Buffer, m, n, kk int) error {
	return k.d.Run(ctx, func(r *vk.Recorder) error { return k.Record(r, p, f16, a, b, c, m, n, kk) })
}

func (k *Kernel) plan(p Path, f16 bool, a, b, c *vk.Buffer, m, n, kk int) (*vk.Pipeline, [3]uint32, []byte, error) {
	return k.planSized(p, f16, a.Size(), b.Size(), c.Size(), m, n, kk)
}

func (k *Kernel) planSized(p Path, f16 bool, aSize, bSize, cSize int64, m, n, kk int) (*vk.Pipeline, [3]uint32, []byte, error) {
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
	if aSize < words(m*kk) || bSize < words(kk*n) || cSize < int64(m*n)*4 {
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
		pipe = k.coop
		bm, bn = k.tile.Block(k.shape)
	}
	if p == CoopMat2 {
		if k.cm2 == nil {
			return nil, groups, nil, fmt.Errorf("matmul: no coopmat2 path on %s: %v", k.d.Caps().Name, k.cm2Err)
		}
		if !f16 {
			return nil, groups, nil, fmt.Errorf("matmul: the coopmat2 path takes fp16 inputs")
		}
		pipe = k.cm2
		bm, bn = k.cm2Tile.BM, k.cm2Tile.BN
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

// RecordBound is Record over byte ranges of buffers (each offset a multiple of the
// device's storage-buffer offset alignment; Size 0: to the end of the buffer).
func (k *Kernel) RecordBound(r *vk.Recorder, p Path, f16 bool, a, b, c vk.Binding, m, n, kk int) error {
	size := func(x vk.Binding) int64 {
		if x.Buf == nil {
			return 0
		}
		if x.Size != 0 {
			return x.Size
		}
		return x.Buf.Size() - x.Offset
	}
	pipe, groups, push, err := k.planSized(p, f16, size(a), size(b), size(c), m, n, kk)
	if err != nil {
		return err
	}
	return r.Dispatch(pipe, groups, push, a, b, c)
}

// Close destroys the pipelines.
func (k *Kernel) Close() error {
	for _, p := range []*vk.Pipeline{k.f32, k.f16, k.coop, k.cm2} {
		if p != nil {
			p.Close()
		}
	}
	k.f32, k.f16, k.coop, k.cm2 = nil, nil, nil, nil
	return nil
}
