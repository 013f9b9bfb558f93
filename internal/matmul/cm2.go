package matmul

import (
	"fmt"

	"github.com/dmavk/dmavk/vk"
)

// CM2Tiling is the work split of the coopmat2 kernel (shaders/matmul_cm2.comp): a
// workgroup of Threads invocations owns a BM x BN tile of C as one workgroup-scope
// accumulator and steps through K by BK.
type CM2Tiling struct {
	BM, BN, BK, Threads int
}

func (t CM2Tiling) String() string {
	return fmt.Sprintf("%dx%d, bk %d, %d invocations", t.BM, t.BN, t.BK, t.Threads)
}

// spec is the kernel's specialization constants.
func (t CM2Tiling) spec() []uint32 {
	return []uint32{uint32(t.BM), uint32(t.BN), uint32(t.BK), uint32(t.Threads)}
}

// ParseCM2Tiling reads "BMxBNxBKxTHREADS" (DMAVK_MATMUL_CM2, for tuning), e.g.
// "128x128x32x256".
func ParseCM2Tiling(str string) (CM2Tiling, error) {
	var t CM2Tiling
	var rest string
	n, _ := fmt.Sscanf(str, "%dx%dx%dx%d%s", &t.BM, &t.BN, &t.BK, &t.Threads, &rest)
	if n != 4 || t.BM <= 0 || t.BN <= 0 || t.BK <= 0 || t.Threads <= 0 {
		return CM2Tiling{}, fmt.Errorf("matmul: coopmat2 tile %q: want BMxBNxBKxTHREADS, all positive", str)
	}
	return t, nil
}

// Default coopmat2 tile, before rounding up to the shape's granularity. 128 x 256 of
// fp32 C is 128 accumulator registers per invocation at 256 invocations (one workgroup
// per SM on NVIDIA), and it measured best: on the H200 (4096^3, 2026-12-03, one run)
// 128x256 bk 32 246 TFLOP/s, 128x128 bk 64 229, 128x256 bk 64 224, 128x128 bk 32 160,
// 256x128 bk 64 130; ggml's Vulkan matrix product 222 in the same run.
const cm2DefBM, cm2DefBN, cm2DefBK = 128, 256, 32

// cm2Ready says why the device cannot run the coopmat2 kernel at all, or nil.
func cm2Ready(caps *vk.Caps) error {
	f := caps.CoopMat2Flags
	switch {
	case !caps.CoopMat2:
		return fmt.Errorf("%s has no VK_NV_cooperative_matrix2", caps.Name)
	case !f.WorkgroupScope || !f.TensorAddressing || !f.FlexibleDimensions:
		return fmt.Errorf("%s's VK_NV_cooperative_matrix2 lacks workgroup scope, tensor addressing or flexible dimensions (%+v)", caps.Name, f)
	case !caps.Float16 || !caps.Storage16:
		return fmt.Errorf("%s lacks fp16 arithmetic or 16-bit storage buffers", caps.Name)
	}
	return nil
}

// cm2Limit is the largest workgroup a workgroup-scope kernel may have.
func cm2Limit(caps *vk.Caps) int {
	lim := int(min(caps.MaxWorkgroupInvocations, caps.MaxWorkgroupSize[0]))
	if mx := int(caps.CoopMat2Props.WorkgroupScopeMaxWorkgroupSize); mx != 0 {
		lim = min(lim, mx)
	}
	return lim
}

// cm2Shapes are the workgroup-scope f16 * f16 + f32 flexible shapes the device lists
// that a workgroup of this device may use, in the driver's order. Entries without a
// workgroup invocation count are left out: the kernel's size must match one.
func cm2Shapes(caps *vk.Caps) []vk.CoopMatFlexShape {
	var out []vk.CoopMatFlexShape
	lim := cm2Limit(caps)
	for _, s := range caps.CoopMatFlexShapes {
		if s.Scope != vk.ScopeWorkgroup || s.A != vk.ComponentF16 || s.B != vk.ComponentF16 ||
			s.C != vk.ComponentF32 || s.Result != vk.ComponentF32 || s.Saturating {
			continue
		}
		if s.WorkgroupInvocations == 0 || int(s.WorkgroupInvocations) > lim ||
			s.MGranularity == 0 || s.NGranularity == 0 || s.KGranularity == 0 {
			continue
		}
		out = append(out, s)
	}
	return out
}

// check reports why the tile does not suit the shape on the device, or nil.
func (t CM2Tiling) check(s vk.CoopMatFlexShape, caps *vk.Caps) error {
	gm, gn, gk := int(s.MGranularity), int(s.NGranularity), int(s.KGranularity)
	maxDim := int(caps.CoopMat2Props.FlexibleDimensionsMaxDimension)
	switch {
	case t.BM <= 0 || t.BN <= 0 || t.BK <= 0:
		return fmt.Errorf("empty tile")
	case t.Threads != int(s.WorkgroupInvocations):
		return fmt.Errorf("%d invocations, the shape wants %d", t.Threads, s.WorkgroupInvocations)
	case t.Threads > cm2Limit(caps):
		return fmt.Errorf("%d invocations exceed the device's workgroup-scope limit %d", t.Threads, cm2Limit(caps))
	case t.BM%gm != 0 || t.BN%gn != 0 || t.BK%gk != 0:
		return fmt.Errorf("tile %dx%dx%d is not a multiple of the granularity %dx%dx%d", t.BM, t.BN, t.BK, gm, gn, gk)
	case maxDim != 0 && max(t.BM, t.BN, t.BK) > maxDim:
		return fmt.Errorf("tile %dx%dx%d exceeds the largest flexible dimension %d", t.BM, t.BN, t.BK, maxDim)
	}
	return nil
}

// roundUp is x rounded up to a multiple of g, but at most the largest multiple of g not
// above limit (when limit is not 0).
func roundUp(x, g, limit int) int {
	r := (x + g - 1) / g * g
	if limit != 0 && r > limit {
		r = limit / g * g
	}
	return r
}

// ChooseCM2 picks the coopmat2 tile for the device and the flexible shape it relies on.
// Without force: the workgroup-scope f16 * f16 + f32 shape with the most invocations
// within the device's limits (the first such in the driver's order), and a 128 x 256
// tile of C (128 x 128 below 256 invocations) with a K step of 32, rounded up to the
// shape's granularity. With force: the
// first listed shape the forced tile suits.
func ChooseCM2(caps *vk.Caps, force *CM2Tiling) (CM2Tiling, vk.CoopMatFlexShape, error) {
	if err := cm2Ready(caps); err != nil {
		return CM2Tiling{}, vk.CoopMatFlexShape{}, fmt.Errorf("matmul: %w", err)
	}
	shapes := cm2Shapes(caps)
	if len(shapes) == 0 {
		return CM2Tiling{}, vk.CoopMatFlexShape{}, fmt.Errorf("matmul: %s lists no workgroup-scope f16*f16+f32 flexible shape within %d invocations", caps.Name, cm2Limit(caps))
	}
	if force != nil {
		var why []string
		for _, s := range shapes {
			err := force.check(s, caps)
			if err == nil {
				return *force, s, nil
			}
			why = append(why, fmt.Sprintf("%v: %v", s, err))
		}
		return CM2Tiling{}, vk.CoopMatFlexShape{}, fmt.Errorf("matmul: coopmat2 tile %v suits no shape of %s: %v", *force, caps.Name, why)
	}
	best := -1
	for i, s := range shapes {
		if best < 0 || s.WorkgroupInvocations > shapes[best].WorkgroupInvocations {
			best = i
		}
	}
	s := shapes[best]
	maxDim := int(caps.CoopMat2Props.FlexibleDimensionsMaxDimension)
	// Fewer invocations hold the accumulator in more registers each: keep it at 128
	// per invocation.
	bn := cm2DefBN * min(int(s.WorkgroupInvocations), 256) / 256
	t := CM2Tiling{
		BM:      roundUp(cm2DefBM, int(s.MGranularity), maxDim),
		BN:      roundUp(max(bn, int(s.NGranularity)), int(s.NGranularity), maxDim),
		BK:      roundUp(cm2DefBK, int(s.KGranularity), maxDim),
		Threads: int(s.WorkgroupInvocations),
	}
	if err := t.check(s, caps); err != nil {
		return CM2Tiling{}, vk.CoopMatFlexShape{}, fmt.Errorf("matmul: coopmat2 tile %v on %s: %v", t, caps.Name, err)
	}
	return t, s, nil
}
