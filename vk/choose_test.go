package vk_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/vk"
)

func TestChooseBy(t *testing.T) {
	in := vktest.Instance(t)
	devs := in.Devices()
	if len(devs) == 0 {
		t.Fatal("no devices")
	}
	first := devs[0]
	pd, err := in.ChooseBy("0")
	if err != nil || pd.Index != 0 || pd.Caps.Name != first.Caps.Name {
		t.Errorf(`ChooseBy("0") = %d %q, %v; want device 0 %q`, pd.Index, pd.Caps.Name, err, first.Caps.Name)
	}
	if pd, err := in.ChooseBy(" 0 "); err != nil || pd.Index != 0 {
		t.Errorf(`ChooseBy(" 0 ") = %d, %v`, pd.Index, err)
	}
	// A substring of the name, in any case.
	for _, d := range devs {
		name := d.Caps.Name
		for _, sel := range []string{name, strings.ToUpper(name), strings.ToLower(name[:min(len(name), 5)])} {
			pd, err := in.ChooseBy(sel)
			if err != nil || !strings.Contains(strings.ToLower(pd.Caps.Name), strings.ToLower(sel)) {
				t.Errorf("ChooseBy(%q) = %q, %v", sel, pd.Caps.Name, err)
			}
		}
	}
	if strings.Contains(strings.ToLower(first.Caps.Name), "llvmpipe") {
		for _, sel := range []string{"llvmpipe", "LLVMPIPE", "LlvmPipe"} {
			if pd, err := in.ChooseBy(sel); err != nil || !strings.Contains(pd.Caps.Name, "llvmpipe") {
				t.Errorf("ChooseBy(%q) = %q, %v", sel, pd.Caps.Name, err)
			}
		}
	}
	for _, sel := range []string{"no-such-gpu", "99", "-1"} {
		_, err := in.ChooseBy(sel)
		if !errors.Is(err, vk.ErrNoDevice) {
			t.Errorf("ChooseBy(%q) = %v, want ErrNoDevice", sel, err)
			continue
		}
		wantErr(t, "ChooseBy("+sel+")", err, sel, "0: "+first.Caps.Name)
	}
	// Choose reads DMAVK_DEVICE; empty means the best device.
	best, err := in.ChooseBy("")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("DMAVK_DEVICE", "")
	if pd, err := in.Choose(); err != nil || pd.Index != best.Index {
		t.Errorf("Choose() without DMAVK_DEVICE = %d, %v; want %d", pd.Index, err, best.Index)
	}
	t.Setenv("DMAVK_DEVICE", "no-such-gpu")
	if _, err := in.Choose(); !errors.Is(err, vk.ErrNoDevice) || !strings.Contains(err.Error(), "DMAVK_DEVICE") {
		t.Errorf("Choose() with DMAVK_DEVICE=no-such-gpu = %v", err)
	}
	t.Setenv("DMAVK_DEVICE", strings.ToUpper(first.Caps.Name))
	if pd, err := in.Choose(); err != nil || pd.Caps.Name != first.Caps.Name {
		t.Errorf("Choose() with DMAVK_DEVICE=%s = %q, %v", strings.ToUpper(first.Caps.Name), pd.Caps.Name, err)
	}
}
