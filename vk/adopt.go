package vk

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"runtime/cgo"
	"slices"
	"sync"
	"unsafe"

	vulkan "github.com/vulkan-go/vulkan"
)

// An application that renders with Vulkan already owns an instance, a device and
// queues. The functions here let dmavk work inside them instead of beside them: one
// device, one memory budget, work ordered with the application's frames. What the
// application created stays the application's: closing what dmavk built on it never
// destroys it.

// Load finds the Vulkan loader (libvulkan.so.1) and points vulkan-go's global entry
// points at it, for an application that calls vulkan-go itself; dmavk does the same
// on first use, so both then share one loader.
func Load() error { return load() }

// AdoptConfig describes an instance the application created.
type AdoptConfig struct {
	// APIVersion is the apiVersion the application gave in VkApplicationInfo: the
	// highest Vulkan version dmavk may use on it. At least 1.1 (0 means 1.1).
	APIVersion uint32
	// Messages creates a debug messenger so that Instance.Messages and OnMessage report
	// the validation layer's findings; the application must have enabled
	// VK_EXT_debug_utils (and, for findings, VK_LAYER_KHRONOS_validation).
	Messages  bool
	OnMessage func(Message)
}

// AdoptInstance wraps the application's VkInstance (its handle as a uintptr, e.g.
// uintptr(unsafe.Pointer(inst)) for a vulkan-go Instance). Close destroys only what
// dmavk created on it (the debug messenger); the instance stays the application's, and
// must outlive every Device adopted through it.
func AdoptInstance(handle uintptr, cfg AdoptConfig) (*Instance, error) {
	if handle == 0 {
		return nil, fmt.Errorf("vk: AdoptInstance: the instance handle is zero")
	}
	if cfg.APIVersion == 0 {
		cfg.APIVersion = api11
	}
	if cfg.APIVersion < api11 {
		return nil, fmt.Errorf("vk: AdoptInstance: apiVersion %d.%d: dmavk needs an instance of Vulkan 1.1 or later",
			cfg.APIVersion>>22&0x7f, cfg.APIVersion>>12&0x3ff)
	}
	if err := load(); err != nil {
		return nil, err
	}
	in := &Instance{handle: handleOf(uint64(handle)), borrowed: true, onMessage: cfg.OnMessage}
	in.self = cgo.NewHandle(in)
	if cfg.Messages {
		if err := check("vkCreateDebugUtilsMessengerEXT", int32(C.dv_create_messenger(in.handle, C.uintptr_t(in.self), &in.messenger))); err != nil {
			in.self.Delete()
			return nil, fmt.Errorf("%w (the application must enable VK_EXT_debug_utils on its instance)", err)
		}
		in.validate = true
	}
	if err := vulkan.InitInstance(vulkan.Instance(unsafe.Pointer(in.handle))); err != nil {
		in.Close()
		return nil, fmt.Errorf("vk: vkInitInstance: %v", err)
	}
	if err := in.enumerate(); err != nil {
		in.Close()
		return nil, err
	}
	for i := range in.devices {
		in.devices[i].limitAPI(cfg.APIVersion)
	}
	return in, nil
}

const api11 = 1<<22 | 1<<12

// limitAPI caps the device's API version at the instance's: features core in later
// versions then count only through their extensions.
func (pd *PhysicalDevice) limitAPI(v uint32) {
	if pd.Caps.APIVersion > v {
		pd.Caps.APIVersion = v
		pd.Caps.raw.api_version = C.uint32_t(v)
	}
}

// Find returns the physical device of a VkPhysicalDevice handle of this instance.
func (in *Instance) Find(handle uintptr) (PhysicalDevice, error) {
	for _, pd := range in.devices {
		if uintptr(unsafe.Pointer(pd.pd)) == handle {
			return pd, nil
		}
	}
	return PhysicalDevice{}, fmt.Errorf("vk: Find: physical device %#x is not one of this instance's (%s)", handle, in.listNames())
}

// Handle is the VkPhysicalDevice, for an application that creates the device.
func (pd PhysicalDevice) Handle() uintptr { return uintptr(unsafe.Pointer(pd.pd)) }

// Handle is the VkInstance.
func (in *Instance) Handle() uintptr { return uintptr(unsafe.Pointer(in.handle)) }

// FeatureSet names the device features dmavk's kernels use, with Vulkan's names. A
// true field is a feature enabled (or to enable) at vkCreateDevice.
type FeatureSet struct {
	ShaderFloat16, ShaderInt8, ShaderInt16, ShaderInt64, ShaderFloat64            bool
	StorageBuffer16BitAccess, StoragePushConstant16, StorageBuffer8BitAccess      bool
	VulkanMemoryModel, VulkanMemoryModelDeviceScope                               bool
	SubgroupSizeControl, ComputeFullSubgroups                                     bool
	ShaderSubgroupExtendedTypes                                                   bool
	Maintenance4                                                                  bool
	CooperativeMatrix                                                             bool // VK_KHR_cooperative_matrix
	CooperativeMatrix2                                                            CoopMat2Features
	ShaderBFloat16Type, ShaderBFloat16DotProduct, ShaderBFloat16CooperativeMatrix bool // VK_KHR_shader_bfloat16
}

// DeviceRequest is what an application enables at vkCreateDevice for dmavk's fast
// paths: device extensions and features.
type DeviceRequest struct {
	Extensions []string
	Features   FeatureSet
}

// Request is what to enable on pd for every path dmavk has there, less what f
// disables: the features Instance.Open would enable, and the extensions they need at
// the device's (instance-limited) API version.
func (pd PhysicalDevice) Request(f Features) DeviceRequest {
	en := pd.enable(f)
	return DeviceRequest{Extensions: chainExtensions(&en), Features: featuresOf(&en)}
}

// enable is the raw feature set Open enables on pd with f.
func (pd PhysicalDevice) enable(f Features) C.dv_enable {
	en := pd.Caps.raw
	if f.DisableCoopMat {
		en.coopmat = 0
	}
	if f.DisableCoopMat2 || f.DisableCoopMat {
		en.ext_coopmat2 = 0
	}
	if f.DisableBFloat16 {
		en.ext_bfloat16 = 0
	}
	en.bfloat16_coopmat = boolC(en.bfloat16_coopmat != 0 && en.coopmat != 0)
	en.coopmat_robust = 0
	if en.ext_coopmat2 == 0 {
		en.coopmat2_workgroup_scope, en.coopmat2_flexible_dims, en.coopmat2_reductions = 0, 0, 0
		en.coopmat2_conversions, en.coopmat2_per_element, en.coopmat2_tensor_addressing, en.coopmat2_block_loads = 0, 0, 0, 0
	}
	if en.ext_bfloat16 == 0 {
		en.bfloat16_type, en.bfloat16_dot, en.bfloat16_coopmat = 0, 0, 0
	}
	return en
}

func chainExtensions(en *C.dv_enable) []string {
	c := C.dv_chain_new(en)
	if c == nil {
		return nil
	}
	defer C.dv_chain_free(c)
	var out []string
	for i := range uint32(C.dv_chain_nexts(c)) {
		out = append(out, C.GoString(C.dv_chain_ext(c, C.uint32_t(i))))
	}
	return out
}

// features maps each FeatureSet field to its flag in the raw capability struct.
func features(fs *FeatureSet, en *C.dv_enable) []struct {
	name string
	set  *bool
	raw  *C.dv_bool
} {
	return []struct {
		name string
		set  *bool
		raw  *C.dv_bool
	}{
		{"shaderFloat16", &fs.ShaderFloat16, &en.shader_float16},
		{"shaderInt8", &fs.ShaderInt8, &en.shader_int8},
		{"shaderInt16", &fs.ShaderInt16, &en.shader_int16},
		{"shaderInt64", &fs.ShaderInt64, &en.shader_int64},
		{"shaderFloat64", &fs.ShaderFloat64, &en.shader_float64},
		{"storageBuffer16BitAccess", &fs.StorageBuffer16BitAccess, &en.storage_buffer_16bit},
		{"storagePushConstant16", &fs.StoragePushConstant16, &en.storage_push_constant_16},
		{"storageBuffer8BitAccess", &fs.StorageBuffer8BitAccess, &en.storage_buffer_8bit},
		{"vulkanMemoryModel", &fs.VulkanMemoryModel, &en.vulkan_memory_model},
		{"vulkanMemoryModelDeviceScope", &fs.VulkanMemoryModelDeviceScope, &en.vulkan_memory_model_device_scope},
		{"subgroupSizeControl", &fs.SubgroupSizeControl, &en.subgroup_size_control},
		{"computeFullSubgroups", &fs.ComputeFullSubgroups, &en.compute_full_subgroups},
		{"shaderSubgroupExtendedTypes", &fs.ShaderSubgroupExtendedTypes, &en.subgroup_extended_types},
		{"maintenance4", &fs.Maintenance4, &en.maintenance4},
		{"cooperativeMatrix", &fs.CooperativeMatrix, &en.coopmat},
		{"cooperativeMatrixWorkgroupScope", &fs.CooperativeMatrix2.WorkgroupScope, &en.coopmat2_workgroup_scope},
		{"cooperativeMatrixFlexibleDimensions", &fs.CooperativeMatrix2.FlexibleDimensions, &en.coopmat2_flexible_dims},
		{"cooperativeMatrixReductions", &fs.CooperativeMatrix2.Reductions, &en.coopmat2_reductions},
		{"cooperativeMatrixConversions", &fs.CooperativeMatrix2.Conversions, &en.coopmat2_conversions},
		{"cooperativeMatrixPerElementOperations", &fs.CooperativeMatrix2.PerElementOperations, &en.coopmat2_per_element},
		{"cooperativeMatrixTensorAddressing", &fs.CooperativeMatrix2.TensorAddressing, &en.coopmat2_tensor_addressing},
		{"cooperativeMatrixBlockLoads", &fs.CooperativeMatrix2.BlockLoads, &en.coopmat2_block_loads},
		{"shaderBFloat16Type", &fs.ShaderBFloat16Type, &en.bfloat16_type},
		{"shaderBFloat16DotProduct", &fs.ShaderBFloat16DotProduct, &en.bfloat16_dot},
		{"shaderBFloat16CooperativeMatrix", &fs.ShaderBFloat16CooperativeMatrix, &en.bfloat16_coopmat},
	}
}

func featuresOf(en *C.dv_enable) FeatureSet {
	var fs FeatureSet
	for _, f := range features(&fs, en) {
		*f.set = *f.raw != 0
	}
	return fs
}

// Chain is a device-creation feature chain in C memory, for an application that
// creates its device with VkDeviceCreateInfo: set pNext to Next() (the
// VkPhysicalDeviceFeatures2 at its head, so pEnabledFeatures must be nil) and enable
// ExtensionNames. Free it once vkCreateDevice has returned.
type Chain struct {
	c *C.dv_chain
}

// Chain builds the feature chain of r for pd. It fails when pd lacks a requested
// feature or when r's extensions miss one a requested feature needs.
func (r DeviceRequest) Chain(pd PhysicalDevice) (*Chain, error) {
	en, err := pd.requested(r)
	if err != nil {
		return nil, err
	}
	c := C.dv_chain_new(&en)
	if c == nil {
		return nil, fmt.Errorf("vk: DeviceRequest.Chain: out of memory")
	}
	return &Chain{c: c}, nil
}

// Next is the pointer for VkDeviceCreateInfo.pNext.
func (c *Chain) Next() unsafe.Pointer { return unsafe.Pointer(C.dv_chain_next(c.c)) }

// ExtensionNames are the extensions the chain's features need (C strings that live as
// long as the chain): ppEnabledExtensionNames and its count.
func (c *Chain) ExtensionNames() (unsafe.Pointer, uint32) {
	return unsafe.Pointer(C.dv_chain_exts(c.c)), uint32(C.dv_chain_nexts(c.c))
}

// Free releases the chain's memory.
func (c *Chain) Free() {
	if c.c != nil {
		C.dv_chain_free(c.c)
		c.c = nil
	}
}

// requested turns r into the raw feature set of a device of pd created with it: each
// feature on where r asks for it, an error where pd lacks it or r lacks its extension.
func (pd PhysicalDevice) requested(r DeviceRequest) (C.dv_enable, error) {
	en := pd.Caps.raw
	fs := r.Features
	for _, f := range features(&fs, &en) {
		if *f.set && *f.raw == 0 {
			return en, fmt.Errorf("vk: %s does not offer the feature %s", pd.Caps.Name, f.name)
		}
		*f.raw = boolC(*f.set)
	}
	api := pd.Caps.APIVersion
	v12, v13 := api >= 1<<22|2<<12, api >= 1<<22|3<<12
	ext := func(name string, core bool) bool { return core || slices.Contains(r.Extensions, name) }
	for _, e := range r.Extensions {
		if !slices.Contains(pd.Caps.Extensions, e) {
			return en, fmt.Errorf("vk: %s does not offer the extension %s", pd.Caps.Name, e)
		}
	}
	needs := []struct {
		on   bool
		name string
		core bool
	}{
		{en.storage_buffer_8bit != 0, "VK_KHR_8bit_storage", v12},
		{en.shader_float16 != 0 || en.shader_int8 != 0, "VK_KHR_shader_float16_int8", v12},
		{en.vulkan_memory_model != 0, "VK_KHR_vulkan_memory_model", v12},
		{en.subgroup_size_control != 0 || en.compute_full_subgroups != 0, "VK_EXT_subgroup_size_control", v13},
		{en.subgroup_extended_types != 0, "VK_KHR_shader_subgroup_extended_types", v12},
		{en.maintenance4 != 0, "VK_KHR_maintenance4", v13},
		{en.coopmat != 0, "VK_KHR_cooperative_matrix", false},
		{fs.CooperativeMatrix2 != CoopMat2Features{}, "VK_NV_cooperative_matrix2", false},
		{en.bfloat16_type != 0 || en.bfloat16_dot != 0 || en.bfloat16_coopmat != 0, "VK_KHR_shader_bfloat16", false},
	}
	for _, n := range needs {
		if n.on && !ext(n.name, n.core) {
			return en, fmt.Errorf("vk: the requested features need the extension %s (Vulkan %s on %s)", n.name, pd.Caps.APIVersionString(), pd.Caps.Name)
		}
	}
	en.ext_coopmat2 = boolC(fs.CooperativeMatrix2 != CoopMat2Features{})
	en.ext_bfloat16 = boolC(en.bfloat16_type != 0 || en.bfloat16_dot != 0 || en.bfloat16_coopmat != 0)
	en.coopmat_robust = 0
	return en, nil
}

// CapsWith is pd's capabilities on a device created with r: what dmavk's kernels may
// use there, so which paths run (dma.PathsFor).
func (pd PhysicalDevice) CapsWith(r DeviceRequest) (Caps, error) {
	en, err := pd.requested(r)
	if err != nil {
		return Caps{}, err
	}
	caps := capsFromC(&en)
	caps.Extensions = pd.Caps.Extensions
	caps.Heaps = pd.Caps.Heaps
	caps.ComputeQueue = pd.Caps.ComputeQueue
	caps.TimestampBits = pd.Caps.TimestampBits
	caps.TimestampPeriod = pd.Caps.TimestampPeriod
	if caps.CoopMat {
		caps.CoopMatShapes = pd.Caps.CoopMatShapes
	}
	if caps.CoopMat2 {
		caps.CoopMatFlexShapes = pd.Caps.CoopMatFlexShapes
	} else {
		caps.CoopMat2Flags, caps.CoopMat2Props = CoopMat2Features{}, CoopMat2Props{}
	}
	return caps, nil
}

// AppDevice is a VkDevice the application created on one of the instance's physical
// devices, and the queue dmavk submits to.
type AppDevice struct {
	PhysicalDevice uintptr // VkPhysicalDevice
	Device         uintptr // VkDevice
	// QueueFamily and QueueIndex name a queue the application created on the device;
	// its family must support compute.
	QueueFamily, QueueIndex uint32
	// Enabled is what the application enabled at vkCreateDevice (Vulkan has no query
	// for it): usually the PhysicalDevice.Request it followed. dmavk uses exactly these
	// features; Device.Caps reports the result.
	Enabled DeviceRequest
	// QueueLock, when set, is held around every vkQueueSubmit dmavk makes on the queue.
	// Vulkan requires that access to a queue be externally synchronized: if the
	// application submits to the same queue from other goroutines, it must take the
	// same lock around its own vkQueueSubmit and vkQueuePresentKHR (or submit only from
	// goroutines that never run while dmavk submits). Nil: dmavk's own mutex, which
	// orders dmavk's submissions among themselves only.
	QueueLock sync.Locker
	// DisablePipelineCache keeps dmavk's pipelines out of the on-disk cache.
	DisablePipelineCache bool
}

// Adopt opens dmavk on the application's device. Close waits for dmavk's submissions,
// frees what dmavk created (pipelines, buffers, command pools) and leaves the device,
// its queues and everything else of the application's alive.
func (in *Instance) Adopt(a AppDevice) (*Device, error) {
	if a.Device == 0 {
		return nil, fmt.Errorf("vk: Adopt: the device handle is zero")
	}
	pd, err := in.Find(a.PhysicalDevice)
	if err != nil {
		return nil, err
	}
	var fams [32]C.dv_queue_family
	nf := uint32(C.dv_queue_families(in.handle, pd.pd, &fams[0], C.uint32_t(len(fams))))
	if a.QueueFamily >= nf {
		return nil, fmt.Errorf("vk: Adopt: queue family %d: %s has %d", a.QueueFamily, pd.Caps.Name, nf)
	}
	fam := fams[a.QueueFamily]
	if fam.flags&0x2 == 0 {
		return nil, fmt.Errorf("vk: Adopt: queue family %d of %s has no compute", a.QueueFamily, pd.Caps.Name)
	}
	if a.QueueIndex >= uint32(fam.count) {
		return nil, fmt.Errorf("vk: Adopt: queue index %d: family %d has %d queues", a.QueueIndex, a.QueueFamily, fam.count)
	}
	caps, err := pd.CapsWith(a.Enabled)
	if err != nil {
		return nil, fmt.Errorf("vk: Adopt: Enabled: %w", err)
	}
	caps.ComputeQueue = int(a.QueueFamily)
	caps.TimestampBits = uint32(fam.timestamp_bits)
	d := &Device{in: in, phys: pd, caps: caps, family: a.QueueFamily, borrowed: true, queueLock: a.QueueLock}
	d.memc.limit = defaultMemCacheLimit(&caps)
	d.handle = handleOf(uint64(a.Device))
	d.dev = vulkan.Device(unsafe.Pointer(d.handle))
	var q vulkan.Queue
	vulkan.GetDeviceQueue(d.dev, a.QueueFamily, a.QueueIndex, &q)
	d.queue = q
	d.qhandle = C.dv_handle(unsafe.Pointer(d.queue))
	C.dv_memory_props(in.handle, pd.pd, &d.memTypes)
	if !a.DisablePipelineCache {
		d.cache = openPipelineCache(d)
	}
	return d, nil
}

// queueLocker is what serializes access to the queue: the application's lock on an
// adopted device, else the device's own mutex.
func (d *Device) queueLocker() sync.Locker {
	if d.queueLock != nil {
		return d.queueLock
	}
	return &d.queueMu
}

// handleOf turns a Vulkan handle the application passed as a number into the pointer
// type the C side takes (without uintptr-to-pointer conversions: handles point to
// driver memory, never Go's).
func handleOf(h uint64) C.dv_handle { return *(*C.dv_handle)(unsafe.Pointer(&h)) }

// Handle is the VkDevice.
func (d *Device) Handle() uintptr { return uintptr(unsafe.Pointer(d.handle)) }

// QueueFamily is the family of the queue dmavk submits to.
func (d *Device) QueueFamily() uint32 { return d.family }
