package kern_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/ref"
	"github.com/dmavk/dmavk/vk"
)

// Tolerance of the cooperative-matrix path (the fp16 default of attnCase, 2e-3 relative
// to max |O_ref|). Scores are fp16 x fp16 products summed in fp32, as exact as the
// portable kernel's (only the summation order differs); the softmax runs in fp32. Two
// roundings to half remain, u = 2^-11 each (round to nearest):
//   - P is rounded to fp16 before P V, while l sums the fp32 values: with
//     p~_j = p_j (1 + e_j), |e_j| <= u, row i gets sum_j p_j e_j v_j / sum_j p_j, at most
//     u * max_j |v_j| = u for |v| <= 1 (the test's V is uniform in [-1, 1)); random e_j
//     make it about u * sqrt(sum p_j^2) / sum p_j in practice, far smaller on dense rows.
//     (Values of P below 2^-14 become subnormal: absolute error 2^-25, negligible.)
//   - O itself is stored as fp16: u * |O_i| <= u * max |O_ref|.
//
// Together <= u * (max |v| / max |O_ref| + 1); the causal cases hold rows that keep a
// single key (O = v_j), so max |O_ref| is close to max |v| and the bound is ~2u = 9.8e-4;
// the noncausal ones average >= 7 keys of random sign, whose largest |O| over a few
// hundred rows stays above 0.3 for the sizes here, giving <= u * (1/0.3 + 1) = 2.1e-3 in
// the worst alignment of every rounding, and ~1e-4 typically. 2e-3 is thus the bound the
// format allows, not a slack for the kernel; the measured errors are logged.

// attnCMEnv opens the test device and fails (DMAVK_REQUIRE_COOPMAT=1) or skips when the
// cooperative-matrix attention path is unavailable.
func attnCMEnv(t *testing.T) *attnEnv {
	e := newAttnEnv(t)
	e.k.SetNoCoopMat2(true)
	defer e.k.SetNoCoopMat2(false)
	if path := e.k.AttentionPath(&kern.Params{Storage: kern.StorageF16, D: 64}); path != kern.PathCoopMat {
		caps := e.d.Caps()
		_, err := kern.AttnCMTiling(&caps, 64)
		if requireCoopMat() {
			t.Fatalf("DMAVK_REQUIRE_COOPMAT is set but %s takes the %s path: %v", caps.Name, path, err)
		}
		t.Skipf("%s: no cooperative-matrix attention: %v", caps.Name, err)
	}
	return e
}

func requireCoopMat() bool { return os.Getenv("DMAVK_REQUIRE_COOPMAT") == "1" }

func attnCMCases() []attnCase {
	var cs []attnCase
	add := func(c attnCase) {
		c.f16 = true
		if !strings.Contains(c.name, "nan") {
			c.nanKey = -1
		}
		cs = append(cs, c)
	}
	for _, c := range attnCommonCases() {
		add(c)
	}
	row, shared, none, expl := ref.ModeRow, ref.ModeShared, ref.ModeNone, ref.ModeExplicit
	// Offsets that rule out the 16-byte loads.
	add(attnCase{name: "row/odd-offset-inputs", Lq: 65, mode: row, causal: true, w: 16, off: 6, bhld: true})
	// Head dimensions.
	for _, d := range []int{32, 96, 128, 256} {
		add(attnCase{name: fmt.Sprintf("row/D%d", d), Lq: 70, D: d, mode: row, causal: true, w: 12, B: 1})
		add(attnCase{name: fmt.Sprintf("none/D%d/noncausal", d), Lq: 37, D: d, mode: none, B: 1, H: 2, Hkv: 1})
	}
	add(attnCase{name: "explicit/D128/bhld", Lq: 65, D: 128, mode: expl, causal: true, B: 1, bhld: true,
		maskShape: []int{1, 1, 65, 65}, biasShape: []int{1, 4, 65, 65}})
	add(attnCase{name: "shared/D128/pad-batch1", Lq: 65, D: 128, mode: shared, causal: true, w: 12, pad: "batch1", H: 2, Hkv: 1})
	// Key padding, empty rows.
	add(attnCase{name: "row/pad-batch1", Lq: 65, mode: row, causal: true, w: 8, pad: "batch1"})
	add(attnCase{name: "shared/pad-rand", Lq: 65, mode: shared, causal: true, w: 8, pad: "rand"})
	add(attnCase{name: "none/pad-batch1/noncausal", Lq: 20, mode: none, pad: "batch1"})
	add(attnCase{name: "row/pad-rand/noncausal", Lq: 65, mode: row, w: 8, pad: "rand"})
	// Chunks with and without a padded key in turn (mode none skips the keep test on
	// whole chunks without one).
	add(attnCase{name: "none/pad-sparse/L300", B: 1, H: 2, Hkv: 1, Lq: 300, mode: none, causal: true, pad: "sparse"})
	add(attnCase{name: "none/pad-sparse/noncausal/Lq100-Lk300", B: 1, H: 2, Hkv: 1, Lq: 100, Lk: 300, mode: none, pad: "sparse"})
	// Softcap.
	add(attnCase{name: "row/softcap", Lq: 65, mode: row, causal: true, w: 16, softcap: 2})
	add(attnCase{name: "none/softcap/large", Lq: 65, mode: none, causal: true, softcap: 5, weights: "large"})
	// Several fill windows, chunks and plan blocks per tile.
	add(attnCase{name: "row/multiblock", B: 1, H: 2, Hkv: 1, Lq: 300, mode: row, causal: true, w: 100})
	add(attnCase{name: "row/multiblock-w40/pad", B: 1, H: 2, Hkv: 1, Lq: 300, mode: row, causal: true, w: 40, pad: "rand"})
	add(attnCase{name: "none/noncausal/L300", B: 1, H: 2, Hkv: 1, Lq: 300, mode: none})
	add(attnCase{name: "shared/noncausal/w200", B: 1, H: 2, Hkv: 1, Lq: 300, mode: shared, w: 200})
	// Overflow-prone fp16: q, k ~ 100 make scores of thousands; float32 math stays finite.
	add(attnCase{name: "row/big-qk", Lq: 130, mode: row, causal: true, w: 16, qk: 100})
	// Scores: dot products of magnitude up to ~3e4 (64 products of up to 1e4) carry
	// float32's rounding, ulp(2^14) / 2 ~ 1e-3 per addition, ~1e-4 after the scale 1/8 and
	// more over a few additions; LSE inherits that absolute error wherever the softcap is
	// not saturated. The portable test keeps 1e-5 only because with q, k ~ 100 nearly every
	// score saturates softcap = 30; accumulating in another order (the tensor cores')
	// meets an unsaturated score at 1e-4 (the matrix products themselves are as accurate
	// as fp32 sums: internal/matmul).
	add(attnCase{name: "none/big-qk/softcap", Lq: 65, mode: none, causal: true, qk: 100, softcap: 30, lseAbs: 1e-3, lseRel: 1e-5})
	// A NaN in one key's V reaches only the rows that keep that key.
	add(attnCase{name: "row/nan-v/sliding", Lq: 130, mode: row, causal: true, w: 8, nanKey: 50, weights: "equal"})
	add(attnCase{name: "none/nan-v", Lq: 65, mode: none, causal: true, nanKey: 30})
	return cs
}

func TestAttentionCoopMat(t *testing.T) {
	e := attnCMEnv(t)
	caps := e.d.Caps()
	e.k.SetNoCoopMat2(true) // this test is the KHR kernel's
	for _, d := range []int{32, 64, 96, 128, 256} {
		tile, err := kern.AttnCMTiling(&caps, d)
		t.Logf("%s D=%d: %+v %v", caps.Name, d, tile, err)
	}
	for _, c := range attnCMCases() {
		t.Run(c.name, func(t *testing.T) {
			d := c.D
			if d == 0 {
				d = 64
			}
			if path := e.k.AttentionPath(&kern.Params{Storage: kern.StorageF16, D: uint32(d)}); path != kern.PathCoopMat {
				_, err := kern.AttnCMTiling(&caps, d)
				if d == 64 || d == 128 || requireCoopMat() {
					t.Fatalf("D=%d takes the %s path: %v", d, path, err)
				}
				t.Skipf("D=%d: %v", d, err)
			}
			runAttnCase(t, e, c)
		})
	}
}

// TestAttentionCoopMatBF16: the bf16 variant of the KHR kernel on the same cases, where
// the device has bfloat16 cooperative matrices (skipped elsewhere).
func TestAttentionCoopMatBF16(t *testing.T) {
	e := attnCMEnv(t)
	caps := e.d.Caps()
	e.k.SetNoCoopMat2(true) // this test is the KHR kernel's
	if _, err := kern.AttnCMTilingFor(&caps, 64, kern.StorageBF16); err != nil {
		t.Skipf("%s: no bf16 KHR attention: %v", caps.Name, err)
	}
	for _, c := range attnCMCases() {
		c.f16, c.bf16 = false, true
		t.Run(c.name, func(t *testing.T) {
			d := c.D
			if d == 0 {
				d = 64
			}
			if path := e.k.AttentionPath(&kern.Params{Storage: kern.StorageBF16, D: uint32(d)}); path != kern.PathCoopMat {
				_, err := kern.AttnCMTilingFor(&caps, d, kern.StorageBF16)
				if d == 64 || d == 128 {
					t.Fatalf("bf16 D=%d takes the %s path: %v", d, path, err)
				}
				t.Skipf("bf16 D=%d: %v", d, err)
			}
			runAttnCase(t, e, c)
		})
	}
}

// TestAttentionCoopMatPortableOnly: SetPortableOnly moves fp16 attention back to the
// portable kernel (and this keeps the portable fp16 cases tested on devices where
// RecordAttention would otherwise take the cooperative-matrix path).
func TestAttentionCoopMatPortableOnly(t *testing.T) {
	e := newAttnEnv(t)
	e.k.SetPortableOnly(true)
	if path := e.k.AttentionPath(&kern.Params{Storage: kern.StorageF16, D: 64}); path != kern.PathPortable {
		t.Fatalf("SetPortableOnly(true): path %s", path)
	}
	for _, c := range attnCases() {
		if !c.f16 || c.wantErr != "" {
			continue
		}
		t.Run(c.name, func(t *testing.T) { runAttnCase(t, e, c) })
	}
	e.k.SetPortableOnly(false)
	e.k.SetNoCoopMat2(true)
	defer e.k.SetNoCoopMat2(false)
	caps := e.d.Caps()
	if _, err := kern.AttnCMTiling(&caps, 64); err == nil {
		if path := e.k.AttentionPath(&kern.Params{Storage: kern.StorageF16, D: 64}); path != kern.PathCoopMat {
			t.Errorf("SetPortableOnly(false): path %s", path)
		}
	}
	if path := e.k.AttentionPath(&kern.Params{Storage: kern.StorageF32, D: 64}); path != kern.PathPortable {
		t.Errorf("fp32: path %s", path)
	}
}

// TestAttentionCoopMatDisabled: a device opened without cooperative matrices (what dma
// does under DMAVK_DISABLE_COOPMAT=1) takes the portable path.
func TestAttentionCoopMatDisabled(t *testing.T) {
	d := vktest.Device(t, vk.Features{DisableCoopMat: true})
	k := kern.New(d)
	defer k.Close()
	if path := k.AttentionPath(&kern.Params{Storage: kern.StorageF16, D: 64}); path != kern.PathPortable {
		t.Errorf("DisableCoopMat: path %s", path)
	}
}

func TestAttentionCoopMatTiling(t *testing.T) {
	shape := func(m, n, k uint32) vk.CoopMatShape {
		return vk.CoopMatShape{M: m, N: n, K: k, A: vk.ComponentF16, B: vk.ComponentF16, C: vk.ComponentF32,
			Result: vk.ComponentF32, Scope: vk.ScopeSubgroup}
	}
	devs := []vk.Caps{
		{Name: "nvidia-like", MaxSharedMemory: 48 << 10, SubgroupSize: 32, SubgroupOps: 0xff, Float16: true, CoopMat: true,
			CoopMatShapes: []vk.CoopMatShape{shape(16, 8, 16), shape(16, 16, 16)}},
		{Name: "lavapipe-like", MaxSharedMemory: 32 << 10, SubgroupSize: 8, SubgroupOps: 0xff, Float16: true, CoopMat: true,
			CoopMatShapes: []vk.CoopMatShape{shape(8, 8, 8)}},
	}
	for i := range devs {
		c := &devs[i]
		c.MaxWorkgroupInvocations, c.MaxWorkgroupSize = 1024, [3]uint32{1024, 1024, 64}
		for _, d := range []int{32, 64, 96, 128, 256} {
			tile, err := kern.AttnCMTiling(c, d)
			if err != nil {
				t.Fatalf("%s D=%d: %v", c.Name, d, err)
			}
			if 64%tile.BR != 0 || tile.Shared > int(c.MaxSharedMemory) || tile.Threads != tile.NSG*tile.SG {
				t.Fatalf("%s D=%d: bad tile %+v", c.Name, d, tile)
			}
			t.Logf("%s D=%d: BR=%d BC=%d threads=%d shape=%dx%dx%d shared=%d", c.Name, d, tile.BR, tile.BC,
				tile.Threads, tile.Shape.M, tile.Shape.N, tile.Shape.K, tile.Shared)
		}
		for _, d := range []int{0, 8, 40, 264} {
			if _, err := kern.AttnCMTiling(c, d); err == nil {
				t.Errorf("%s D=%d accepted", c.Name, d)
			}
		}
	}
	if tile, _ := kern.AttnCMTiling(&devs[0], 128); tile.Shape.N != 16 {
		t.Errorf("nvidia-like: shape %v, want the 16x16x16 one", tile.Shape)
	}
	small := devs[0]
	small.MaxSharedMemory = 16 << 10
	if _, err := kern.AttnCMTiling(&small, 256); err == nil || !strings.Contains(err.Error(), "shared memory") {
		t.Errorf("D=256 on 16 KiB: %v", err)
	}
	none := devs[0]
	none.CoopMat = false
	if _, err := kern.AttnCMTiling(&none, 64); err == nil {
		t.Errorf("no coopmat accepted")
	}
	// bf16: only with a bf16*bf16+f32 shape, bfloat16 cooperative matrices and int16.
	bf := devs[0]
	if _, err := kern.AttnCMTilingFor(&bf, 128, kern.StorageBF16); err == nil {
		t.Errorf("bf16 accepted without bfloat16 support")
	}
	bf.BFloat16, bf.BFloat16Coop, bf.Int16 = true, true, true
	if _, err := kern.AttnCMTilingFor(&bf, 128, kern.StorageBF16); err == nil {
		t.Errorf("bf16 accepted without a bf16 shape")
	}
	s := shape(16, 16, 16)
	s.A, s.B = vk.ComponentBF16, vk.ComponentBF16
	bf.CoopMatShapes = append(bf.CoopMatShapes, s)
	if tile, err := kern.AttnCMTilingFor(&bf, 128, kern.StorageBF16); err != nil || !tile.BF16 || tile.Shape.A != vk.ComponentBF16 {
		t.Errorf("bf16 with a bf16 shape: %+v, %v", tile, err)
	}
	if _, err := kern.AttnCMTilingFor(&bf, 128, kern.StorageF32); err == nil {
		t.Errorf("fp32 accepted")
	}
}
