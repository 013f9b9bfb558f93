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

// The coopmat2 kernel rounds exactly where the KHR kernel does (P to fp16 before P V, O
// to fp16), so the tolerance argument of attention_cm_test.go carries over unchanged;
// its row sums add the fp16 P (the values that multiply V), which only helps.

// attnCM2Env opens the test device and fails (DMAVK_REQUIRE_COOPMAT2=1, or
// DMAVK_REQUIRE_COOPMAT=1 on a device that lists VK_NV_cooperative_matrix2) or skips
// when the coopmat2 attention path is unavailable.
func attnCM2Env(t *testing.T) *attnEnv {
	e := newAttnEnv(t)
	caps := e.d.Caps()
	if _, err := kern.AttnCM2Tiling(&caps, 64); err != nil {
		if requireCoopMat2(&caps) {
			t.Fatalf("coopmat2 attention required but unavailable on %s: %v", caps.Name, err)
		}
		t.Skipf("%s: no coopmat2 attention: %v", caps.Name, err)
	}
	return e
}

func requireCoopMat2(caps *vk.Caps) bool {
	return os.Getenv("DMAVK_REQUIRE_COOPMAT2") == "1" || (requireCoopMat() && caps.CoopMat2)
}

func TestAttentionCoopMat2(t *testing.T) {
	e := attnCM2Env(t)
	caps := e.d.Caps()
	for _, d := range []int{32, 64, 96, 128, 256} {
		tile, err := kern.AttnCM2Tiling(&caps, d)
		t.Logf("%s D=%d: %+v %v", caps.Name, d, tile, err)
	}
	tile, _ := kern.AttnCM2Tiling(&caps, 64)
	for _, c := range attnCMCases() {
		if c.mode == ref.ModeExplicit {
			continue // the KHR kernel's
		}
		// Mode none and the diagonal of causal tiles read K and V in place: 16-byte
		// aligned, at least one chunk of keys; otherwise the KHR kernel takes it.
		lk := c.Lk
		if lk == 0 {
			lk = c.Lq
		}
		if (c.mode != ref.ModeNone && !c.causal) || (c.off%8 == 0 && lk >= tile.BC) {
			c.wantPath = kern.PathCoopMat2
		}
		t.Run(c.name, func(t *testing.T) {
			d := c.D
			if d == 0 {
				d = 64
			}
			if _, err := kern.AttnCM2Tiling(&caps, d); err != nil {
				if d == 64 || d == 128 {
					t.Fatalf("D=%d: %v", d, err)
				}
				t.Skipf("D=%d: %v", d, err)
			}
			runAttnCase(t, e, c)
		})
	}
}

// TestAttentionCoopMat2Shapes: awkward shapes on the coopmat2 kernel, packed and in place.
func TestAttentionCoopMat2Shapes(t *testing.T) {
	e := attnCM2Env(t)
	row, shared, none := ref.ModeRow, ref.ModeShared, ref.ModeNone
	var cs []attnCase
	for _, lq := range []int{1, 17, 64, 100} {
		for _, lk := range []int{40, 129} {
			cs = append(cs,
				attnCase{name: fmt.Sprintf("row/Lq%d/Lk%d", lq, lk), Lq: lq, Lk: lk, mode: row, causal: true, w: 9},
				attnCase{name: fmt.Sprintf("none/Lq%d/Lk%d", lq, lk), Lq: lq, Lk: lk, mode: none, causal: true},
				attnCase{name: fmt.Sprintf("shared/Lq%d/Lk%d/noncausal", lq, lk), Lq: lq, Lk: lk, mode: shared, w: 5})
		}
	}
	cs = append(cs,
		attnCase{name: "row/w1", Lq: 70, mode: row, causal: true, w: 1},
		attnCase{name: "row/w-ge-L", Lq: 70, mode: row, causal: true, w: 200},
		attnCase{name: "row/ties", Lq: 90, mode: row, causal: true, w: 7, weights: "ties"},
		attnCase{name: "row/equal", Lq: 90, mode: row, causal: true, w: 7, weights: "equal"},
		attnCase{name: "row/gqa-hbkv", B: 2, H: 4, Hkv: 2, hbKV: true, Lq: 80, mode: row, causal: true, w: 10},
		attnCase{name: "row/gqa-hb-h", B: 1, H: 4, Hkv: 1, Lq: 80, mode: row, causal: true, w: 10, bhld: true},
		attnCase{name: "row/nan-v/w1", Lq: 40, mode: row, causal: true, w: 1, nanKey: 5, weights: "equal"},
		attnCase{name: "shared/nan-v", Lq: 40, mode: shared, causal: true, w: 6, nanKey: 37, weights: "equal"},
	)
	for _, c := range cs {
		c.f16 = true
		if !strings.Contains(c.name, "nan") {
			c.nanKey = -1
		}
		t.Run(c.name, func(t *testing.T) { runAttnCase(t, e, c) })
	}
}

// TestAttentionCoopMat2Disabled: SetNoCoopMat2 and a device opened with DisableCoopMat2
// (dma under DMAVK_DISABLE_COOPMAT2=1) leave the coopmat2 kernel.
func TestAttentionCoopMat2Disabled(t *testing.T) {
	e := newAttnEnv(t)
	p := &kern.Params{Storage: kern.StorageF16, D: 64, Mode: kern.ModeRow}
	e.k.SetNoCoopMat2(true)
	if path := e.k.AttentionPath(p); path == kern.PathCoopMat2 {
		t.Errorf("SetNoCoopMat2(true): path %s", path)
	}
	e.k.SetNoCoopMat2(false)
	d := vktest.Device(t, vk.Features{DisableCoopMat2: true})
	k := kern.New(d)
	defer k.Close()
	if path := k.AttentionPath(p); path == kern.PathCoopMat2 {
		t.Errorf("DisableCoopMat2: path %s", path)
	}
	if path := e.k.AttentionPath(&kern.Params{Storage: kern.StorageF16, D: 64, Mode: kern.ModeExplicit}); path == kern.PathCoopMat2 {
		t.Errorf("explicit mode: path %s", path)
	}
}

func TestAttentionCoopMat2Tiling(t *testing.T) {
	flex := func(m, n, k, inv uint32, scope uint32) vk.CoopMatFlexShape {
		return vk.CoopMatFlexShape{MGranularity: m, NGranularity: n, KGranularity: k, A: vk.ComponentF16, B: vk.ComponentF16,
			C: vk.ComponentF32, Result: vk.ComponentF32, Scope: scope, WorkgroupInvocations: inv}
	}
	all := vk.CoopMat2Features{WorkgroupScope: true, FlexibleDimensions: true, Reductions: true, Conversions: true, PerElementOperations: true, TensorAddressing: true}
	// The H200's list (bench/results/2026-11-27-h200-devices-coopmat2-shapes.txt), f16*f16+f32 entries.
	nv := vk.Caps{Name: "nvidia-like", MaxSharedMemory: 48 << 10, SubgroupSize: 32, MinSubgroupSize: 32, MaxSubgroupSize: 32,
		Float16: true, CoopMat: true, CoopMat2: true, CoopMat2Flags: all, MaxWorkgroupInvocations: 1024,
		CoopMat2Props: vk.CoopMat2Props{WorkgroupScopeMaxWorkgroupSize: 256, FlexibleDimensionsMaxDimension: 1024, WorkgroupScopeReservedSharedMemory: 8 << 10},
		CoopMatFlexShapes: []vk.CoopMatFlexShape{flex(16, 16, 16, 0, vk.ScopeSubgroup), flex(16, 16, 16, 32, vk.ScopeWorkgroup),
			flex(16, 16, 16, 64, vk.ScopeWorkgroup), flex(32, 16, 16, 128, vk.ScopeWorkgroup), flex(32, 32, 16, 256, vk.ScopeWorkgroup)}}
	for _, d := range []int{32, 64, 96, 128} {
		tile, err := kern.AttnCM2Tiling(&nv, d)
		if err != nil || tile.BR != 64 || tile.BC != 64 || tile.Threads != 128 || tile.Scope != vk.ScopeWorkgroup {
			t.Errorf("nvidia-like D=%d: %+v %v, want 64x64, 128 invocations, workgroup scope", d, tile, err)
		}
	}
	lvp := vk.Caps{Name: "lavapipe-like", MaxSharedMemory: 32 << 10, SubgroupSize: 8, MinSubgroupSize: 8, MaxSubgroupSize: 8,
		Float16: true, CoopMat: true, CoopMat2: true, MaxWorkgroupInvocations: 1024,
		CoopMat2Flags:     vk.CoopMat2Features{FlexibleDimensions: true, Reductions: true, Conversions: true, PerElementOperations: true},
		CoopMat2Props:     vk.CoopMat2Props{FlexibleDimensionsMaxDimension: 1024},
		CoopMatFlexShapes: []vk.CoopMatFlexShape{flex(8, 8, 8, 0, vk.ScopeSubgroup)}}
	if tile, err := kern.AttnCM2Tiling(&lvp, 64); err != nil || tile.Scope != vk.ScopeSubgroup || tile.Threads != 8 || tile.BC != 8 {
		t.Errorf("lavapipe-like: %+v %v", tile, err)
	}
	for _, d := range []int{0, 8, 40, 144, 256} {
		if _, err := kern.AttnCM2Tiling(&nv, d); err == nil {
			t.Errorf("D=%d accepted", d)
		}
	}
	no := nv
	no.CoopMat2Flags.Reductions = false
	if _, err := kern.AttnCM2Tiling(&no, 64); err == nil {
		t.Errorf("no reductions accepted")
	}
}

// TestAttentionCoopMat2BF16: the bf16 variants (devices with bfloat16 cooperative
// matrices; lavapipe has none), on the awkward shapes, at bf16's tolerance.
func TestAttentionCoopMat2BF16(t *testing.T) {
	e := newAttnEnv(t)
	caps := e.d.Caps()
	if _, err := kern.AttnCM2TilingFor(&caps, 64, kern.StorageBF16); err != nil {
		if os.Getenv("DMAVK_REQUIRE_COOPMAT2_BF16") == "1" {
			t.Fatalf("%s: %v", caps.Name, err)
		}
		t.Skipf("%s: %v", caps.Name, err)
	}
	row, shared, none := ref.ModeRow, ref.ModeShared, ref.ModeNone
	for _, c := range []attnCase{
		{name: "row/causal", Lq: 100, mode: row, causal: true, w: 9},
		{name: "row/Lq17-Lk129/D128", Lq: 17, Lk: 129, D: 128, mode: row, causal: true, w: 20},
		{name: "row/gqa-hbkv/bhld", B: 2, H: 4, Hkv: 2, hbKV: true, Lq: 80, mode: row, causal: true, w: 10, bhld: true},
		{name: "shared/noncausal", Lq: 70, mode: shared, w: 12},
		{name: "none/causal/pad", Lq: 200, mode: none, causal: true, pad: "rand"}, // Lk >= a 128-key chunk
		{name: "row/softcap", Lq: 65, mode: row, causal: true, w: 16, softcap: 2},
		{name: "row/nan-v", Lq: 40, mode: row, causal: true, w: 1, nanKey: 5, weights: "equal"},
	} {
		c.bf16 = true
		if !strings.Contains(c.name, "nan") {
			c.nanKey = -1
		}
		c.wantPath = kern.PathCoopMat2
		t.Run(c.name, func(t *testing.T) { runAttnCase(t, e, c) })
	}
}

// TestPackRowsWholeChunks: the coopmat2 kernel reads packed regions by chunks of up to
// 128 rows; every region must hold a whole number of them.
func TestPackRowsWholeChunks(t *testing.T) {
	for w := 1; w <= 5000; w++ {
		c := kern.BlockSize(w)
		p := &kern.Params{Window: uint32(w), BlockC: uint32(c), NCap: uint32(w + c)}
		if n := kern.PackRows(p); n%128 != 0 || n < w+c {
			t.Fatalf("w=%d: PackRows %d", w, n)
		}
	}
}

// TestAttentionCoopMat2Split: GK and GV split over several buffers (what a long context
// needs past the allocation limit), forced here by a small cap: a buffer holds two or
// three (batch, bias head) pairs, so some pairs' workgroups return at once in every
// dispatch.
func TestAttentionCoopMat2Split(t *testing.T) {
	e := attnCM2Env(t)
	row, shared := ref.ModeRow, ref.ModeShared
	for _, c := range []attnCase{
		{name: "row/causal/B2H4", B: 2, H: 4, Hkv: 2, Lq: 130, mode: row, causal: true, w: 9, pairs: 2},
		{name: "row/causal/hbkv", B: 2, H: 4, Hkv: 2, hbKV: true, Lq: 100, mode: row, causal: true, w: 20, pairs: 3},
		{name: "shared/noncausal", B: 2, H: 4, Hkv: 4, Lq: 70, mode: shared, w: 12, pairs: 3},
		{name: "row/nan-v", B: 1, H: 4, Hkv: 1, Lq: 40, mode: row, causal: true, w: 1, nanKey: 5, weights: "equal", pairs: 2},
	} {
		c.f16 = true
		if !strings.Contains(c.name, "nan") {
			c.nanKey = -1
		}
		c.wantPath = kern.PathCoopMat2
		t.Run(c.name, func(t *testing.T) {
			hb := c.H
			if c.hbKV {
				hb = c.Hkv
			}
			bc := kern.BlockSize(c.w)
			p := &kern.Params{B: uint32(c.B), Hb: uint32(hb), D: 64, Mode: uint32(c.mode), Causal: attnB2U(c.causal),
				Window: uint32(c.w), BlockC: uint32(bc), NBlocks: uint32((c.Lq + bc - 1) / bc), NCap: uint32(c.w + bc)}
			defer kern.SetCM2MaxPackBytes(kern.PackSizeRange(p, c.pairs))()
			runAttnCase(t, e, c)
		})
	}
}
