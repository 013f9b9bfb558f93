package vk_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/vk"
)

// cacheFiles lists the pipeline cache files in dir.
func cacheFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "pipelines-*.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// validHeader checks the VkPipelineCacheHeaderVersionOne of data against caps.
func validHeader(data []byte, caps vk.Caps) bool {
	return len(data) >= 32 && binary.LittleEndian.Uint32(data[0:]) >= 32 &&
		binary.LittleEndian.Uint32(data[4:]) == 1 &&
		binary.LittleEndian.Uint32(data[8:]) == caps.VendorID &&
		binary.LittleEndian.Uint32(data[12:]) == caps.DeviceID &&
		bytes.Equal(data[16:32], caps.CacheUUID[:])
}

// useDevice opens the default device, compiles and runs the matmul pipeline, checks
// the product and closes the device (which saves the cache).
func useDevice(t *testing.T, rng *rand.Rand) vk.Caps {
	t.Helper()
	in := vktest.Instance(t)
	pd, err := in.Choose()
	if err != nil {
		t.Fatal(err)
	}
	d, err := in.Open(pd, vk.Features{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := d.NewPipeline(matmulDesc(t))
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	multiplyOnce(t, d, p, rng, 40, 30, 20)
	p.Close()
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return d.Caps()
}

func TestPipelineCache(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DMAVK_CACHE_DIR", dir)
	rng := rand.New(rand.NewPCG(12, 13))
	caps := useDevice(t, rng)
	files := cacheFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("after Close: cache files %v, want one pipelines-*.bin", files)
	}
	file := files[0]
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !validHeader(good, caps) {
		t.Fatalf("cache file %s (%d bytes) has no valid header for %s", file, len(good), caps.Name)
	}
	t.Logf("%s: %d bytes", filepath.Base(file), len(good))

	foreign := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(foreign[8:], caps.VendorID^0x1002) // another vendor
	otherDevice := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(otherDevice[12:], caps.DeviceID+1)
	otherUUID := append([]byte(nil), good...)
	otherUUID[16] ^= 0xff
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	badLength := append([]byte(nil), good...)
	binary.LittleEndian.PutUint32(badLength[0:], uint32(len(good)+100)) // header longer than the file
	// This device's header over a corrupt body: the header check passes and the
	// driver must cope with the data.
	corruptBody := append(append([]byte(nil), good[:32]...), garbage[:512]...)
	binary.LittleEndian.PutUint32(corruptBody[0:], 32)
	cases := []struct {
		name string
		data []byte
	}{
		{"garbage", garbage},
		{"empty", nil},
		{"short", good[:16]},
		{"another vendor", foreign},
		{"another device", otherDevice},
		{"another cache UUID", otherUUID},
		{"header past the end", badLength},
		{"corrupt body", corruptBody},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(file, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			useDevice(t, rng)
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !validHeader(data, caps) {
				t.Errorf("after Close the cache file is still invalid (%d bytes)", len(data))
			}
			if got := cacheFiles(t, dir); len(got) != 1 {
				t.Errorf("cache files %v, want one", got)
			}
			leftovers, _ := filepath.Glob(filepath.Join(dir, ".pipelines-*"))
			if len(leftovers) > 0 {
				t.Errorf("temporary files left: %v", leftovers)
			}
		})
	}
	// A cache that can't be written (a file where the directory should be) costs
	// nothing but the cache.
	t.Run("unwritable", func(t *testing.T) {
		blocker := filepath.Join(t.TempDir(), "not-a-dir")
		if err := os.WriteFile(blocker, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Setenv("DMAVK_CACHE_DIR", blocker)
		useDevice(t, rng)
	})
}
