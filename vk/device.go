package vk

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"os"
	"sync"
	"unsafe"

	vulkan "github.com/vulkan-go/vulkan"
)

// Features selects optional device features. The zero value enables everything the
// device offers that compute kernels here can use; set a Disable field to leave one
// off (for example to test a fallback path on a device that has it).
type Features struct {
	DisableCoopMat  bool
	DisableCoopMat2 bool
	DisableBFloat16 bool
	// DisablePipelineCache keeps pipelines out of the on-disk cache.
	DisablePipelineCache bool
	// PipelineStatistics asks the driver to keep the statistics of every pipeline
	// (VK_KHR_pipeline_executable_properties: registers, shared memory, spills...),
	// which Pipeline.Statistics returns; where the device lacks the extension, it is
	// ignored and Caps().PipelineStatistics is false. Also DMAVK_PIPELINE_STATS=1.
	PipelineStatistics bool
}

// Device is an open logical device with one compute queue. It is safe for concurrent
// use by many goroutines: queue submission is serialized, and every Run records into a
// command pool of its own. Close it when done; objects created from it (buffers,
// pipelines) must be closed first.
type Device struct {
	in       *Instance
	phys     PhysicalDevice
	caps     Caps
	dev      vulkan.Device
	handle   C.dv_handle
	queue    vulkan.Queue
	qhandle  C.dv_handle
	family   uint32
	memTypes C.dv_memory

	queueMu sync.Mutex // vkQueueSubmit needs external synchronization
	// The application's device (Instance.Adopt): Close leaves the device alive, waits
	// only for dmavk's own work, and queue access goes through the application's lock.
	borrowed  bool
	queueLock sync.Locker
	externals int // recordings into application command buffers not yet released

	mu       sync.Mutex
	closed   bool
	lost     bool
	idle     []*runContext // command pools ready for reuse
	inflight sync.WaitGroup
	cache    *pipelineCache

	pipeMu    sync.Mutex
	pipelines map[*Pipeline]struct{} // open pipelines, for Pipelines

	mem  memoryUse // of its buffers
	memc memCache  // closed buffers kept for reuse
}

// Pipelines returns the device's open pipelines, in no particular order (for reports
// such as their Statistics).
func (d *Device) Pipelines() []*Pipeline {
	d.pipeMu.Lock()
	defer d.pipeMu.Unlock()
	out := make([]*Pipeline, 0, len(d.pipelines))
	for p := range d.pipelines {
		out = append(out, p)
	}
	return out
}

// Open creates a logical device on pd with the features Features allows.
func (in *Instance) Open(pd PhysicalDevice, f Features) (*Device, error) {
	if pd.pd == nil {
		return nil, fmt.Errorf("vk: Open: physical device not from this instance")
	}
	if pd.Caps.ComputeQueue < 0 {
		return nil, fmt.Errorf("%w: %s has no compute queue", ErrNoDevice, pd.Caps.Name)
	}
	en := pd.Caps.raw
	caps := pd.Caps
	if f.DisableCoopMat {
		en.coopmat = 0
		caps.CoopMat = false
		caps.CoopMatShapes = nil
	}
	if f.DisableCoopMat2 || f.DisableCoopMat {
		en.ext_coopmat2 = 0
		caps.CoopMat2 = false
		caps.CoopMat2Flags = CoopMat2Features{}
		caps.CoopMat2Props = CoopMat2Props{}
		caps.CoopMatFlexShapes = nil
	}
	if f.DisableBFloat16 {
		en.ext_bfloat16 = 0
		caps.BFloat16, caps.BFloat16Dot, caps.BFloat16Coop = false, false, false
	}
	if !f.PipelineStatistics && os.Getenv("DMAVK_PIPELINE_STATS") != "1" {
		en.pipeline_executable_info = 0
		caps.PipelineStatistics = false
	}
	en.bfloat16_coopmat = boolC(en.bfloat16_coopmat != 0 && en.coopmat != 0)
	// Robust buffer access on cooperative matrices costs speed and the kernels bound
	// their own loads.
	en.coopmat_robust = 0

	d := &Device{in: in, phys: pd, caps: caps, family: uint32(pd.Caps.ComputeQueue)}
	d.memc.limit = defaultMemCacheLimit(&caps)
	r := C.dv_create_device(in.handle, pd.pd, &en, C.uint32_t(d.family), &d.handle)
	if err := check("vkCreateDevice", int32(r)); err != nil {
		return nil, err
	}
	d.dev = vulkan.Device(unsafe.Pointer(d.handle))
	var q vulkan.Queue // out-parameters are locals: cgo forbids pointers into structs holding Go pointers
	vulkan.GetDeviceQueue(d.dev, d.family, 0, &q)
	d.queue = q
	d.qhandle = C.dv_handle(unsafe.Pointer(d.queue))
	C.dv_memory_props(in.handle, pd.pd, &d.memTypes)
	if !f.DisablePipelineCache {
		d.cache = openPipelineCache(d)
	}
	return d, nil
}

func boolC(b bool) C.dv_bool {
	if b {
		return 1
	}
	return 0
}

// Caps returns the capabilities enabled on this device.
func (d *Device) Caps() Caps { return d.caps }

// Instance returns the instance the device was opened from.
func (d *Device) Instance() *Instance { return d.in }

// Close waits for all submitted work, saves the pipeline cache and destroys the device.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	if d.externals > 0 {
		n := d.externals
		d.mu.Unlock()
		return fmt.Errorf("vk: Close: %d recordings into application command buffers not released (External.Release, once the application's submission has completed)", n)
	}
	d.closed = true
	d.mu.Unlock()
	d.inflight.Wait()
	if !d.borrowed { // vkDeviceWaitIdle would also wait on (and race with) the application's queues
		vulkan.DeviceWaitIdle(d.dev)
	}
	d.mu.Lock()
	for _, rc := range d.idle {
		rc.destroy()
	}
	d.idle = nil
	d.mu.Unlock()
	var err error
	d.freeCached(d.memc.empty())
	if d.cache != nil {
		err = d.cache.save()
		d.cache.destroy()
	}
	if !d.borrowed {
		vulkan.DestroyDevice(d.dev, nil)
	}
	return err
}

func (d *Device) usable() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if d.lost {
		return fmt.Errorf("%w (%s)", ErrDeviceLost, d.caps.Name)
	}
	return nil
}

// noteErr remembers device loss so later calls fail fast.
func (d *Device) noteErr(err error) error {
	if e, ok := err.(*Error); ok && e.Result == int32(vulkan.ErrorDeviceLost) {
		d.mu.Lock()
		d.lost = true
		d.mu.Unlock()
	}
	return err
}

// memoryType finds a memory type allowed by bits with all of want set; prefer lists
// acceptable property sets in order.
func (d *Device) memoryType(bits uint32, prefer ...uint32) (uint32, uint32, bool) {
	for _, want := range prefer {
		for i := uint32(0); i < uint32(d.memTypes.ntypes); i++ {
			flags := uint32(d.memTypes.type_flags[i])
			if bits&(1<<i) != 0 && flags&want == want {
				return i, flags, true
			}
		}
	}
	return 0, 0, false
}
