package vk_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/vk"
)

const coopMat2Ext = "VK_NV_cooperative_matrix2"

// TestCapsCoopMat2 checks the VK_NV_cooperative_matrix2 features, properties and
// flexible-dimension shapes of every device: all zero without the extension (Debian
// 12's lavapipe), consistent with each other with it (newer lavapipe: flexible
// dimensions, no workgroup scope).
func TestCapsCoopMat2(t *testing.T) {
	in := vktest.Instance(t)
	for _, pd := range in.Devices() {
		c := pd.Caps
		t.Run(c.Name, func(t *testing.T) {
			t.Logf("coopmat2 %v, features %+v, properties %+v", c.CoopMat2, c.CoopMat2Flags, c.CoopMat2Props)
			for _, s := range c.CoopMatFlexShapes {
				t.Logf("flex %s", s)
			}
			if !slices.Contains(c.Extensions, coopMat2Ext) {
				if c.CoopMat2 || c.CoopMat2Flags != (vk.CoopMat2Features{}) ||
					c.CoopMat2Props != (vk.CoopMat2Props{}) || len(c.CoopMatFlexShapes) != 0 {
					t.Errorf("no %s, yet coopmat2 %v, features %+v, properties %+v, %d flexible shapes",
						coopMat2Ext, c.CoopMat2, c.CoopMat2Flags, c.CoopMat2Props, len(c.CoopMatFlexShapes))
				}
				if _, ok := c.HasCoopMatFlex(vk.ComponentF16, vk.ComponentF16, vk.ComponentF32, vk.ScopeSubgroup); ok {
					t.Error("HasCoopMatFlex true without the extension")
				}
				return
			}
			checkCoopMat2(t, c)
		})
	}
}

func checkCoopMat2(t *testing.T, c vk.Caps) {
	t.Helper()
	f, p := c.CoopMat2Flags, c.CoopMat2Props
	if p.WorkgroupScopeReservedSharedMemory > c.MaxSharedMemory {
		t.Errorf("reserved shared memory %d > max shared memory %d", p.WorkgroupScopeReservedSharedMemory, c.MaxSharedMemory)
	}
	if f.WorkgroupScope && (p.WorkgroupScopeMaxWorkgroupSize == 0 || p.WorkgroupScopeMaxWorkgroupSize > c.MaxWorkgroupInvocations) {
		t.Errorf("workgroup scope max workgroup size %d, want 1..%d", p.WorkgroupScopeMaxWorkgroupSize, c.MaxWorkgroupInvocations)
	}
	if !f.FlexibleDimensions {
		return
	}
	if p.FlexibleDimensionsMaxDimension == 0 {
		t.Error("flexible dimensions without a max dimension")
	}
	if len(c.CoopMatFlexShapes) == 0 {
		t.Fatal("flexible dimensions feature but no flexible-dimension shapes")
	}
	for _, s := range c.CoopMatFlexShapes {
		for _, g := range []uint32{s.MGranularity, s.NGranularity, s.KGranularity} {
			if g == 0 || g > p.FlexibleDimensionsMaxDimension {
				t.Errorf("%s: granularity %d, want 1..%d", s, g, p.FlexibleDimensionsMaxDimension)
			}
		}
		for _, ty := range []vk.ComponentType{s.A, s.B, s.C, s.Result} {
			if strings.HasPrefix(ty.String(), "type") {
				t.Errorf("%s: unknown component type %d (a wrong struct layout?)", s, uint32(ty))
			}
		}
		switch s.Scope {
		case vk.ScopeSubgroup:
		case vk.ScopeWorkgroup:
			if !f.WorkgroupScope {
				t.Errorf("%s: workgroup scope without the workgroupScope feature", s)
			}
			if s.WorkgroupInvocations > p.WorkgroupScopeMaxWorkgroupSize {
				t.Errorf("%s: %d invocations > max %d", s, s.WorkgroupInvocations, p.WorkgroupScopeMaxWorkgroupSize)
			}
		default:
			t.Errorf("%s: scope %d, want subgroup or workgroup", s, s.Scope)
		}
		if got, ok := c.HasCoopMatFlex(s.A, s.B, s.C, s.Scope); s.C == s.Result && !s.Saturating &&
			(s.Scope == vk.ScopeSubgroup || f.WorkgroupScope) && !ok {
			t.Errorf("HasCoopMatFlex(%s, %s, %s, %d) = %v, %v; want an entry", s.A, s.B, s.C, s.Scope, got, ok)
		}
	}
}

// TestCapsCoopMat2Device checks that a device keeps the coopmat2 capabilities enabled
// (and validation accepts the features chained at creation), and that DisableCoopMat2
// clears them all.
func TestCapsCoopMat2Device(t *testing.T) {
	pd, err := vktest.Instance(t).Choose()
	if err != nil {
		t.Fatal(err)
	}
	c := vktest.Device(t, vk.Features{}).Caps() // vktest.Device opens the chosen device
	if c.CoopMat2 != pd.Caps.CoopMat2 || c.CoopMat2Flags != pd.Caps.CoopMat2Flags ||
		c.CoopMat2Props != pd.Caps.CoopMat2Props || !slices.Equal(c.CoopMatFlexShapes, pd.Caps.CoopMatFlexShapes) {
		t.Errorf("device caps differ from the physical device's: %+v %+v vs %+v %+v",
			c.CoopMat2Flags, c.CoopMat2Props, pd.Caps.CoopMat2Flags, pd.Caps.CoopMat2Props)
	}
	off := vktest.Device(t, vk.Features{DisableCoopMat2: true}).Caps()
	if off.CoopMat2 || off.CoopMat2Flags != (vk.CoopMat2Features{}) || off.CoopMat2Props != (vk.CoopMat2Props{}) ||
		len(off.CoopMatFlexShapes) != 0 {
		t.Errorf("DisableCoopMat2 left coopmat2 %v, %+v, %+v, %d flexible shapes",
			off.CoopMat2, off.CoopMat2Flags, off.CoopMat2Props, len(off.CoopMatFlexShapes))
	}
}

func TestCapsFlexShapeString(t *testing.T) {
	for _, c := range []struct {
		s    vk.CoopMatFlexShape
		want string
	}{
		{vk.CoopMatFlexShape{MGranularity: 8, NGranularity: 8, KGranularity: 8, A: vk.ComponentF16, B: vk.ComponentF16,
			C: vk.ComponentF32, Result: vk.ComponentF32, Scope: vk.ScopeSubgroup},
			"8x8x8 granularity f16*f16+f32->f32 subgroup"},
		{vk.CoopMatFlexShape{MGranularity: 16, NGranularity: 32, KGranularity: 64, A: vk.ComponentS8, B: vk.ComponentS8,
			C: vk.ComponentS32, Result: vk.ComponentS32, Saturating: true, Scope: vk.ScopeWorkgroup, WorkgroupInvocations: 256},
			"16x32x64 granularity s8*s8+s32->s32 sat workgroup, 256 invocations"},
	} {
		if got := c.s.String(); got != c.want {
			t.Errorf("String() = %q, want %q", got, c.want)
		}
	}
}
