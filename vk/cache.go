package vk

/*
#include <stdlib.h>
#include <string.h>
*/
import "C"

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	vulkan "github.com/vulkan-go/vulkan"
)

// pipelineCache is a VkPipelineCache persisted under the user's cache directory, one
// file per device and driver version. A file that is corrupt, truncated or written by
// another device or driver is ignored (and replaced on the next save): drivers are not
// all robust against foreign data, so the header is checked here before the driver
// sees it.
type pipelineCache struct {
	d      *Device
	handle vulkan.PipelineCache
	path   string // "" when there is no cache directory
}

// CacheDir is where pipeline caches live: $DMAVK_CACHE_DIR, else the user cache
// directory's dmavk folder. It returns "" when neither is available.
func CacheDir() string {
	if dir := os.Getenv("DMAVK_CACHE_DIR"); dir != "" {
		return dir
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(base, "dmavk")
}

func (d *Device) cacheFile() string {
	dir := CacheDir()
	if dir == "" {
		return ""
	}
	c := &d.caps
	name := fmt.Sprintf("pipelines-%04x-%04x-%08x-%s.bin", c.VendorID, c.DeviceID, c.DriverVersion, hex.EncodeToString(c.CacheUUID[:]))
	return filepath.Join(dir, name)
}

// validCacheData checks the VkPipelineCacheHeaderVersionOne header against the device.
func (d *Device) validCacheData(data []byte) bool {
	if len(data) < 32 {
		return false
	}
	headerLen := binary.LittleEndian.Uint32(data[0:])
	version := binary.LittleEndian.Uint32(data[4:])
	vendor := binary.LittleEndian.Uint32(data[8:])
	device := binary.LittleEndian.Uint32(data[12:])
	return headerLen >= 32 && int(headerLen) <= len(data) && version == 1 &&
		vendor == d.caps.VendorID && device == d.caps.DeviceID && bytes.Equal(data[16:32], d.caps.CacheUUID[:])
}

func openPipelineCache(d *Device) *pipelineCache {
	pc := &pipelineCache{d: d, path: d.cacheFile()}
	var initial []byte
	if pc.path != "" {
		if data, err := os.ReadFile(pc.path); err == nil && d.validCacheData(data) {
			initial = data
		}
	}
	if !pc.create(initial) && (initial == nil || !pc.create(nil)) {
		return nil // no cache at all: pipelines still work, only slower to create
	}
	return pc
}

func (pc *pipelineCache) create(initial []byte) bool {
	info := vulkan.PipelineCacheCreateInfo{SType: vulkan.StructureTypePipelineCacheCreateInfo}
	var mem unsafe.Pointer
	if len(initial) > 0 {
		// The driver reads the data during the call; keep it in C memory so no Go
		// pointer is stored in the C struct.
		mem = C.malloc(C.size_t(len(initial)))
		defer C.free(mem)
		C.memcpy(mem, unsafe.Pointer(&initial[0]), C.size_t(len(initial)))
		info.InitialDataSize = uint(len(initial))
		info.PInitialData = mem
	}
	var h vulkan.PipelineCache
	r := vulkan.CreatePipelineCache(pc.d.dev, &info, nil, &h)
	pc.handle = h
	info.Free()
	return r == vulkan.Success
}

// save writes the cache atomically (a temporary file renamed over the old one).
func (pc *pipelineCache) save() error {
	if pc.path == "" {
		return nil
	}
	var n uint
	if vulkan.GetPipelineCacheData(pc.d.dev, pc.handle, &n, nil) != vulkan.Success || n == 0 {
		return nil
	}
	buf := C.malloc(C.size_t(n))
	defer C.free(buf)
	if vulkan.GetPipelineCacheData(pc.d.dev, pc.handle, &n, buf) != vulkan.Success {
		return nil
	}
	data := C.GoBytes(buf, C.int(n))
	if err := os.MkdirAll(filepath.Dir(pc.path), 0o755); err != nil {
		return nil // a read-only home is not an error worth failing Close for
	}
	tmp, err := os.CreateTemp(filepath.Dir(pc.path), ".pipelines-*")
	if err != nil {
		return nil
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if werr != nil || cerr != nil {
		os.Remove(tmp.Name())
		return nil
	}
	if err := os.Rename(tmp.Name(), pc.path); err != nil {
		os.Remove(tmp.Name())
	}
	return nil
}

func (pc *pipelineCache) destroy() {
	vulkan.DestroyPipelineCache(pc.d.dev, pc.handle, nil)
}
