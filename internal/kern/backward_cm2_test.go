package kern_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/ref"
	"github.com/dmavk/dmavk/vk"
)

// bwdCM2Tol is the coopmat2 backward's tolerance. Its products take P and dS rounded to
// the storage type (as the forward's P V does), so the storage type's precision applies
// (fp16 2e-3, bf16 1e-2, relative to the largest entry), plus what bwdTol adds for large
// scores.
func bwdCM2Tol(c *attnCase) float64 {
	tol := 2e-3
	if c.bf16 {
		tol = 1e-2
	}
	return tol + bwdTol(c) - 2e-5
}

// runBwdCM2 runs the case on the coopmat2 backward in both modes, checks that the path
// takes it, that two runs give the same bits, and every gradient against the reference.
func runBwdCM2(t *testing.T, e *attnEnv, c attnCase, edit func(pr *bwdProblem)) {
	runBwdTC(t, e, c, kern.PathCoopMat2, edit)
}

// runBwdTC is runBwdCM2 for the tensor-core backward BackwardPath must name (want).
func runBwdTC(t *testing.T, e *attnEnv, c attnCase, want string, edit func(pr *bwdProblem)) {
	caps := e.d.Caps()
	if want == kern.PathCoopMat2 && !bwdCM2Takes(t, &caps, c) {
		want = kern.PathPortable // shorter than this device's tiles: checked there
	}
	pr := newBwdProblem(t, e, c)
	e.k.SetPortableOnly(false) // newBwdProblem's forward ran on the portable kernel
	if edit != nil {
		edit(pr)
	}
	if path := e.k.BackwardPath(pr.p, pr.bufs.DOView); path != want {
		t.Fatalf("BackwardPath = %s, want %s", path, want)
	}
	if want == kern.PathPortable {
		t.Logf("below one tile of %s: the portable backward's", caps.Name)
		return
	}
	cm2, err := kern.NewBwdCM2Buffers(e.d, pr.p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cm2.Close() })
	pr.bufs.CM2 = cm2
	var first *bwdGrads
	for _, det := range []bool{false, true, true} {
		g := pr.run(t, e, det)
		if first == nil {
			first = g
			pr.check(t, g, bwdCM2Tol(&pr.c))
			continue
		}
		for i := range g.raw {
			if string(g.raw[i]) != string(first.raw[i]) {
				t.Errorf("output %d (dQ, dK, dV, dDelta) differs between runs (deterministic=%v)", i, det)
			}
		}
	}
}

func bwdCM2Env(t *testing.T, storage kern.Storage) *attnEnv {
	e := newAttnEnv(t)
	caps := e.d.Caps()
	if _, err := kern.BwdCM2Tiling(&caps, 64, storage); err != nil {
		if requireCoopMat2(&caps) && (storage == kern.StorageF16 || os.Getenv("DMAVK_REQUIRE_COOPMAT2_BF16") == "1") {
			t.Fatalf("coopmat2 backward required but unavailable on %s: %v", caps.Name, err)
		}
		t.Skipf("%s: no coopmat2 backward: %v", caps.Name, err)
	}
	return e
}

func bwdCM2Cases() []attnCase {
	var cs []attnCase
	add := func(c attnCase) { cs = append(cs, c) }
	row, shared, none := ref.ModeRow, ref.ModeShared, ref.ModeNone
	for _, l := range []int{9, 65, 130} {
		add(attnCase{name: fmt.Sprintf("row/causal/L%d", l), Lq: l, mode: row, causal: true, w: 16})
		add(attnCase{name: fmt.Sprintf("shared/causal/L%d", l), Lq: l, mode: shared, causal: true, w: 20, hbKV: true})
		add(attnCase{name: fmt.Sprintf("none/causal/L%d", l), Lq: l, mode: none, causal: true})
	}
	add(attnCase{name: "row/noncausal/L65", Lq: 65, mode: row, w: 8})
	add(attnCase{name: "shared/noncausal/L130/bhld", Lq: 130, mode: shared, w: 24, bhld: true})
	add(attnCase{name: "none/noncausal/L65/Hb=Hkv", Lq: 65, mode: none, hbKV: true})
	add(attnCase{name: "row/causal/Lq9-Lk130", Lq: 9, Lk: 130, mode: row, causal: true, w: 16})
	add(attnCase{name: "row/causal/Lq130-Lk9", Lq: 130, Lk: 9, mode: row, causal: true, w: 4})
	add(attnCase{name: "shared/causal/Lq100-Lk33", Lq: 100, Lk: 33, mode: shared, causal: true, w: 5})
	add(attnCase{name: "none/causal/Lq65-Lk20/bhld", Lq: 65, Lk: 20, mode: none, causal: true, bhld: true})
	add(attnCase{name: "row/MQA/Hb=Hkv", Lq: 65, H: 4, Hkv: 1, hbKV: true, mode: row, causal: true, w: 8})
	add(attnCase{name: "row/MQA/Hb=H", Lq: 65, H: 4, Hkv: 1, mode: row, causal: true, w: 8})
	add(attnCase{name: "row/GQA/Hb=Hkv/bhld/off", Lq: 130, hbKV: true, mode: row, causal: true, w: 32, bhld: true, off: 8})
	add(attnCase{name: "none/GQA/Hb=H", Lq: 40, H: 4, Hkv: 2, mode: none, causal: true})
	add(attnCase{name: "row/w1", Lq: 65, mode: row, causal: true, w: 1})
	add(attnCase{name: "row/w>=L", Lq: 130, mode: row, causal: true, w: 200})
	add(attnCase{name: "row/equal-weights", Lq: 130, mode: row, causal: true, w: 16, weights: "equal"})
	add(attnCase{name: "row/ties", Lq: 130, mode: row, causal: true, w: 10, weights: "ties"})
	add(attnCase{name: "row/large-weights", Lq: 130, mode: row, causal: true, w: 16, weights: "large"})
	add(attnCase{name: "row/multiblock-w40/pad", B: 1, Lq: 300, mode: row, causal: true, w: 40, pad: "rand"})
	add(attnCase{name: "row/pad-batch1", Lq: 65, mode: row, causal: true, w: 8, pad: "batch1"})
	add(attnCase{name: "shared/pad-rand", Lq: 65, mode: shared, causal: true, w: 8, pad: "rand"})
	add(attnCase{name: "none/pad-batch1", Lq: 40, mode: none, causal: true, pad: "batch1"})
	add(attnCase{name: "row/softcap", Lq: 65, mode: row, causal: true, w: 16, softcap: 2})
	add(attnCase{name: "none/softcap/Hb=Hkv", Lq: 65, mode: none, causal: true, softcap: 5, hbKV: true})
	for _, d := range []int{16, 48, 128} {
		add(attnCase{name: fmt.Sprintf("row/D%d", d), Lq: 70, D: d, mode: row, causal: true, w: 12, B: 1})
	}
	add(attnCase{name: "row/nan-v/sliding", Lq: 130, mode: row, causal: true, w: 8, nanKey: 50, weights: "equal"})
	add(attnCase{name: "none/nan-v", Lq: 65, mode: none, causal: true, nanKey: 30})
	return cs
}

// TestBackwardCoopMat2 checks the coopmat2 backward (fp16) against ref.Backward on the
// awkward shapes; bit-identical from run to run in both modes.
func TestBackwardCoopMat2(t *testing.T) {
	e := bwdCM2Env(t, kern.StorageF16)
	caps := e.d.Caps()
	tile, err := kern.BwdCM2Tiling(&caps, 64, kern.StorageF16)
	t.Logf("%s: tile %+v %v", caps.Name, tile, err)
	for _, c := range bwdCM2Cases() {
		c.f16 = true
		if !strings.Contains(c.name, "nan") {
			c.nanKey = -1
		}
		t.Run(c.name, func(t *testing.T) { runBwdCM2(t, e, c, nil) })
	}
}

// bwdCM2Takes says whether the coopmat2 backward takes case c on the device (its tile
// for c's head dimension: at least one row chunk of queries, in mode none one chunk of
// keys), so that a device with larger tiles than lavapipe's checks the shorter cases on
// the portable path instead.
func bwdCM2Takes(t *testing.T, caps *vk.Caps, c attnCase) bool {
	d, lq, lk := c.D, c.Lq, c.Lk
	if d == 0 {
		d = 64 // attnCase's default
	}
	if lk == 0 {
		lk = lq
	}
	st := kern.StorageF16
	if c.bf16 {
		st = kern.StorageBF16
	}
	tile, err := kern.BwdCM2Tiling(caps, d, st)
	if err != nil {
		t.Logf("D=%d: %v", d, err)
		return false
	}
	return lq >= tile.KC && (c.mode != ref.ModeNone || lk >= max(tile.BC, tile.KR))
}

// TestBackwardCoopMat2BF16: the bf16 variants, where the device has bfloat16
// cooperative matrices (lavapipe has none).
func TestBackwardCoopMat2BF16(t *testing.T) {
	e := bwdCM2Env(t, kern.StorageBF16)
	for _, c := range bwdCM2Cases() {
		c.bf16 = true
		if !strings.Contains(c.name, "nan") {
			c.nanKey = -1
		}
		t.Run(c.name, func(t *testing.T) { runBwdCM2(t, e, c, nil) })
	}
}

// TestBackwardCoopMat2NonFinite: NaN and infinities in q, k, v, the weights and dO reach
// exactly the gradients the reference has them in (spec section 7), through the exact
// route for chunks whose products see a non-finite operand.
func TestBackwardCoopMat2NonFinite(t *testing.T) {
	e := bwdCM2Env(t, kern.StorageF16)
	row, shared, none := ref.ModeRow, ref.ModeShared, ref.ModeNone
	var cs []attnCase
	for _, what := range []string{"q", "k", "v", "w", "all"} {
		cs = append(cs,
			attnCase{name: "row/causal/L130/" + what, Lq: 130, mode: row, causal: true, w: 16, inject: what},
			attnCase{name: "shared/causal/Lq100-Lk33/" + what, Lq: 100, Lk: 33, mode: shared, causal: true, w: 5, inject: what},
			attnCase{name: "none/noncausal/L65/" + what, Lq: 65, mode: none, hbKV: true, inject: what},
			attnCase{name: "row/multiblock/pad/" + what, B: 2, H: 2, Hkv: 1, Lq: 300, mode: row, causal: true, w: 40, pad: "rand", inject: what},
		)
	}
	cs = append(cs, attnCase{name: "row/softcap/all", Lq: 65, mode: row, causal: true, w: 16, softcap: 2, inject: "all"})
	for _, c := range cs {
		c.f16 = true
		t.Run(c.name, func(t *testing.T) { runBwdCM2(t, e, c, nil) })
	}
	// A NaN and an infinity in dO: the row's dQ, and the dK and dV of the keys it keeps.
	for _, c := range []attnCase{
		{name: "row/causal/L130/dO", Lq: 130, mode: row, causal: true, w: 16, f16: true, nanKey: -1},
		{name: "none/causal/L65/dO", Lq: 65, mode: none, causal: true, f16: true, nanKey: -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			runBwdCM2(t, e, c, func(pr *bwdProblem) {
				pr.dO.Set(0, 40, 1, 3, math.NaN())
				pr.dO.Set(1, 20, 0, 5, math.Inf(1))
				raw := attnEncodeTensor(pr.dO, pr.bufs.DOView, pr.p.Storage)
				if err := pr.bufs.DO.Upload(context.Background(), 0, raw); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// TestBackwardCoopMat2Eligible: shapes the coopmat2 backward does not take stay on the
// portable kernels (BackwardPath), and a forced call says why.
func TestBackwardCoopMat2Eligible(t *testing.T) {
	e := bwdCM2Env(t, kern.StorageF16)
	for _, c := range []attnCase{
		{name: "f32", Lq: 40, mode: ref.ModeRow, causal: true, w: 8},
		{name: "explicit", Lq: 40, mode: ref.ModeExplicit, causal: true, f16: true, maskShape: []int{1, 1, 40, 40}},
		{name: "Lq below a chunk", Lq: 3, Lk: 40, mode: ref.ModeRow, causal: true, w: 8, f16: true},
		{name: "D24", Lq: 40, D: 24, mode: ref.ModeRow, causal: true, w: 8, f16: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			pr := newBwdProblem(t, e, c)
			e.k.SetPortableOnly(false)
			if path := e.k.BackwardPath(pr.p, pr.bufs.DOView); path != kern.PathPortable {
				t.Fatalf("BackwardPath = %s, want %s", path, kern.PathPortable)
			}
			pr.bufs.CM2 = &kern.BwdCM2Buffers{}
			err := e.d.Run(context.Background(), func(r *vk.Recorder) error {
				return e.k.RecordBackward(r, pr.p, pr.params, pr.bufs, false)
			})
			if err == nil || !strings.Contains(err.Error(), "coopmat2") {
				t.Fatalf("forced coopmat2 backward: err %v, want one naming coopmat2", err)
			}
			t.Log(err)
		})
	}
}

// TestBackwardCoopMat2Tiling: the tiles on the H200's list of shapes and on lavapipe's,
// the tuning override, and what neither takes.
func TestBackwardCoopMat2Tiling(t *testing.T) {
	flex := func(m, n, k, inv uint32, scope uint32) vk.CoopMatFlexShape {
		return vk.CoopMatFlexShape{MGranularity: m, NGranularity: n, KGranularity: k, A: vk.ComponentF16, B: vk.ComponentF16,
			C: vk.ComponentF32, Result: vk.ComponentF32, Scope: scope, WorkgroupInvocations: inv}
	}
	all := vk.CoopMat2Features{WorkgroupScope: true, FlexibleDimensions: true, Reductions: true, Conversions: true, PerElementOperations: true, TensorAddressing: true}
	nv := vk.Caps{Name: "nvidia-like", MaxSharedMemory: 48 << 10, SubgroupSize: 32, MinSubgroupSize: 32, MaxSubgroupSize: 32,
		Float16: true, CoopMat: true, CoopMat2: true, CoopMat2Flags: all, MaxWorkgroupInvocations: 1024,
		CoopMat2Props: vk.CoopMat2Props{WorkgroupScopeMaxWorkgroupSize: 256, FlexibleDimensionsMaxDimension: 1024, WorkgroupScopeReservedSharedMemory: 8 << 10},
		CoopMatFlexShapes: []vk.CoopMatFlexShape{flex(16, 16, 16, 0, vk.ScopeSubgroup), flex(16, 16, 16, 32, vk.ScopeWorkgroup),
			flex(16, 16, 16, 64, vk.ScopeWorkgroup), flex(32, 16, 16, 128, vk.ScopeWorkgroup), flex(32, 32, 16, 256, vk.ScopeWorkgroup)}}
	for _, d := range []int{32, 64, 128} {
		tile, err := kern.BwdCM2Tiling(&nv, d, kern.StorageF16)
		want := kern.BwdCM2Tile{BR: 64, BC: 64, KR: 64, KC: 64, Threads: 256, Scope: vk.ScopeWorkgroup, NW: 32}
		if err != nil || tile != want {
			t.Errorf("nvidia-like D=%d: %+v %v, want %+v", d, tile, err, want)
		}
	}
	t.Setenv("DMAVK_CM2_BWD_TILE", "32x64x64x32x128")
	if tile, err := kern.BwdCM2Tiling(&nv, 64, kern.StorageF16); err != nil || tile.BR != 32 || tile.BC != 64 || tile.KR != 64 || tile.KC != 32 || tile.Threads != 128 {
		t.Errorf("override: %+v %v", tile, err)
	}
	t.Setenv("DMAVK_CM2_BWD_TILE", "48x64x64x64x256")
	if tile, err := kern.BwdCM2Tiling(&nv, 64, kern.StorageF16); err == nil {
		t.Errorf("override with 48-row tiles accepted: %+v", tile)
	}
	t.Setenv("DMAVK_CM2_BWD_TILE", "")
	lvp := vk.Caps{Name: "lavapipe-like", MaxSharedMemory: 32 << 10, SubgroupSize: 8, MinSubgroupSize: 8, MaxSubgroupSize: 8,
		Float16: true, CoopMat: true, CoopMat2: true, MaxWorkgroupInvocations: 1024,
		CoopMat2Flags:     vk.CoopMat2Features{FlexibleDimensions: true, Reductions: true, Conversions: true, PerElementOperations: true},
		CoopMat2Props:     vk.CoopMat2Props{FlexibleDimensionsMaxDimension: 1024},
		CoopMatFlexShapes: []vk.CoopMatFlexShape{flex(8, 8, 8, 0, vk.ScopeSubgroup)}}
	want := kern.BwdCM2Tile{BR: 8, BC: 8, KR: 8, KC: 8, Threads: 8, Scope: vk.ScopeSubgroup, NW: 8}
	if tile, err := kern.BwdCM2Tiling(&lvp, 64, kern.StorageF16); err != nil || tile != want {
		t.Errorf("lavapipe-like: %+v %v, want %+v", tile, err, want)
	}
	for _, d := range []int{8, 40, 144, 256} {
		if _, err := kern.BwdCM2Tiling(&nv, d, kern.StorageF16); err == nil {
			t.Errorf("D=%d accepted", d)
		}
	}
	if _, err := kern.BwdCM2Tiling(&nv, 64, kern.StorageBF16); err == nil {
		t.Errorf("bf16 accepted without bfloat16 cooperative matrices")
	}
}

// TestBackwardCoopMat: the KHR cooperative-matrix backward (coopmat2 kept off), fp16,
// modes row and shared, on the awkward shapes and with non-finite values.
func TestBackwardCoopMat(t *testing.T) {
	e := newAttnEnv(t)
	caps := e.d.Caps()
	tile, err := kern.BwdCMTiling(&caps, 64)
	if err != nil {
		if requireCoopMat() {
			t.Fatalf("KHR backward required but unavailable on %s: %v", caps.Name, err)
		}
		t.Skipf("%s: %v", caps.Name, err)
	}
	t.Logf("%s: tile %+v", caps.Name, tile)
	e.k.SetNoCoopMat2(true)
	t.Cleanup(func() { e.k.SetNoCoopMat2(false) })
	var cs []attnCase
	for _, c := range bwdCM2Cases() {
		d := c.D
		if d == 0 {
			d = 64
		}
		tile, err := kern.BwdCMTiling(&caps, d)
		if err != nil {
			t.Logf("%s: %v", c.name, err)
			continue
		}
		if c.mode == ref.ModeNone || c.Lq < tile.BC {
			continue // the portable backward's (mode none, or Lq below a row chunk)
		}
		if !strings.Contains(c.name, "nan") {
			c.nanKey = -1
		}
		cs = append(cs, c)
	}
	for _, what := range []string{"q", "k", "v", "w", "all"} {
		cs = append(cs,
			attnCase{name: "nonfinite/row/causal/L130/" + what, Lq: 130, mode: ref.ModeRow, causal: true, w: 16, inject: what},
			attnCase{name: "nonfinite/shared/causal/Lq100-Lk33/" + what, Lq: 100, Lk: 33, mode: ref.ModeShared, causal: true, w: 5, inject: what})
	}
	for _, c := range cs {
		c.f16 = true
		t.Run(c.name, func(t *testing.T) { runBwdTC(t, e, c, kern.PathCoopMat, nil) })
	}
}

// TestBackwardCoopMatTiling: the KHR backward's tiles on NVIDIA-like and lavapipe-like
// shapes fit the shared memory and the shader's divisibility rules.
func TestBackwardCoopMatTiling(t *testing.T) {
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
		for _, d := range []int{32, 64, 128} {
			tile, err := kern.BwdCMTiling(c, d)
			if err != nil {
				t.Fatalf("%s D=%d: %v", c.Name, d, err)
			}
			m, n, k := int(tile.Shape.M), int(tile.Shape.N), int(tile.Shape.K)
			if 64%tile.BR != 0 || 64%tile.BC != 0 || tile.BR != tile.NSG*m || tile.BC%n != 0 || tile.BC%k != 0 || tile.Threads != tile.NSG*tile.SG {
				t.Fatalf("%s D=%d: bad tile %+v", c.Name, d, tile)
			}
			t.Logf("%s D=%d: %+v", c.Name, d, tile)
		}
		for _, d := range []int{0, 8, 40, 264} {
			if _, err := kern.BwdCMTiling(c, d); err == nil {
				t.Errorf("%s: D=%d accepted", c.Name, d)
			}
		}
	}
}
