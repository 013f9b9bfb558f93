// Package vktest opens the Vulkan device that tests run on, with the validation layer
// on whenever it is installed, and fails the test on any validation message.
package vktest

import (
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/dmavk/dmavk/vk"
)

var shared struct {
	once sync.Once
	in   *vk.Instance
	err  error
}

// Instance returns the process-wide test instance. Validation is on when the layer is
// installed, and required when DMAVK_VALIDATE=1.
func Instance(t testing.TB) *vk.Instance {
	t.Helper()
	shared.once.Do(func() {
		shared.in, shared.err = vk.NewInstance(vk.Config{Validate: vk.ValidationRequested()})
		if shared.err == nil && !shared.in.Validating() {
			// Not asked for: turn it on anyway if the layer is there.
			if in, err := vk.NewInstance(vk.Config{Validate: true}); err == nil {
				shared.in.Close()
				shared.in = in
			}
		}
	})
	if shared.err != nil {
		if errors.Is(shared.err, vk.ErrNoLoader) && os.Getenv("CI") == "" {
			t.Skipf("no Vulkan loader on this machine: %v", shared.err)
		}
		t.Fatalf("vulkan instance: %v", shared.err)
	}
	t.Cleanup(func() { CheckMessages(t) })
	return shared.in
}

// CheckMessages fails t for every validation message received since the last check.
func CheckMessages(t testing.TB) {
	t.Helper()
	if shared.in == nil {
		return
	}
	for _, m := range shared.in.Messages() {
		// The loader's general warnings (a layer disabled by the environment) are not
		// findings about this program; everything else is.
		if m.Validation || m.Severity == "error" {
			t.Errorf("validation %s: %s", m.Severity, m.Text)
		}
	}
}

// Device opens the device chosen by DMAVK_DEVICE (or the best one) with features f and
// closes it when the test ends.
func Device(t testing.TB, f vk.Features) *vk.Device {
	t.Helper()
	in := Instance(t)
	pd, err := in.Choose()
	if err != nil {
		t.Fatalf("choose device: %v", err)
	}
	d, err := in.Open(pd, f)
	if err != nil {
		t.Fatalf("open %s: %v", pd.Caps.Name, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("device close: %v", err)
		}
	})
	return d
}
