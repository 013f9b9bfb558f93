package vk

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// DeviceType orders devices for the default choice: discrete first, CPU last.
type DeviceType uint32

// The VkPhysicalDeviceType values.
const (
	DeviceOther      DeviceType = 0
	DeviceIntegrated DeviceType = 1
	DeviceDiscrete   DeviceType = 2
	DeviceVirtual    DeviceType = 3
	DeviceCPU        DeviceType = 4
)

// String names the device type.
func (t DeviceType) String() string {
	switch t {
	case DeviceIntegrated:
		return "integrated"
	case DeviceDiscrete:
		return "discrete"
	case DeviceVirtual:
		return "virtual"
	case DeviceCPU:
		return "cpu"
	}
	return "other"
}

// rank is the default preference: discrete > integrated > virtual > CPU > other.
func (t DeviceType) rank() int {
	switch t {
	case DeviceDiscrete:
		return 4
	case DeviceIntegrated:
		return 3
	case DeviceVirtual:
		return 2
	case DeviceCPU:
		return 1
	}
	return 0
}

// ComponentType is a VkComponentTypeKHR: the element type of a cooperative matrix.
type ComponentType uint32

// The component types the kernels care about.
const (
	ComponentF16  ComponentType = 0
	ComponentF32  ComponentType = 1
	ComponentF64  ComponentType = 2
	ComponentS8   ComponentType = 3
	ComponentS32  ComponentType = 5
	ComponentU8   ComponentType = 7
	ComponentU32  ComponentType = 9
	ComponentBF16 ComponentType = 1000141000
)

// String names the component type (f16, f32, bf16...).
func (c ComponentType) String() string {
	switch c {
	case ComponentF16:
		return "f16"
	case ComponentF32:
		return "f32"
	case ComponentF64:
		return "f64"
	case ComponentS8:
		return "s8"
	case 4:
		return "s16"
	case ComponentS32:
		return "s32"
	case 6:
		return "s64"
	case ComponentU8:
		return "u8"
	case 8:
		return "u16"
	case ComponentU32:
		return "u32"
	case 10:
		return "u64"
	case ComponentBF16:
		return "bf16"
	case 1000491002:
		return "e4m3"
	case 1000491003:
		return "e5m2"
	}
	return fmt.Sprintf("type%d", uint32(c))
}

// CoopMatShape is one entry of vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR:
// C[MxN] (ResultType) = A[MxK] (AType) * B[KxN] (BType) + C (CType).
type CoopMatShape struct {
	M, N, K         uint32
	A, B, C, Result ComponentType
	Saturating      bool
	Scope           uint32 // 3 = subgroup
}

// String formats the shape as "MxNxK a*b+c->result".
func (s CoopMatShape) String() string {
	sat := ""
	if s.Saturating {
		sat = " sat"
	}
	return fmt.Sprintf("%dx%dx%d %s*%s+%s->%s%s", s.M, s.N, s.K, s.A, s.B, s.C, s.Result, sat)
}

// The VkScopeKHR values a cooperative matrix can have (CoopMatShape.Scope,
// CoopMatFlexShape.Scope).
const (
	// ScopeWorkgroup: the matrix is spread over a whole workgroup
	// (VK_NV_cooperative_matrix2's workgroup scope).
	ScopeWorkgroup = 2
	// ScopeSubgroup: the matrix is spread over one subgroup.
	ScopeSubgroup = 3
)

// ScopeName names a VkScopeKHR value: "device", "workgroup", "subgroup", "queue_family".
func ScopeName(s uint32) string {
	switch s {
	case 1:
		return "device"
	case ScopeWorkgroup:
		return "workgroup"
	case ScopeSubgroup:
		return "subgroup"
	case 5:
		return "queue_family"
	}
	return fmt.Sprintf("scope%d", s)
}

// CoopMat2Features are the VK_NV_cooperative_matrix2 feature bits
// (VkPhysicalDeviceCooperativeMatrix2FeaturesNV). Device creation enables every one the
// device reports.
type CoopMat2Features struct {
	WorkgroupScope, FlexibleDimensions, Reductions, Conversions,
	PerElementOperations, TensorAddressing, BlockLoads bool
}

// CoopMat2Props are the limits of VK_NV_cooperative_matrix2
// (VkPhysicalDeviceCooperativeMatrix2PropertiesNV). All zero when the device does not
// list the extension.
type CoopMat2Props struct {
	// WorkgroupScopeMaxWorkgroupSize is the largest workgroup (in invocations) that may
	// use workgroup-scope cooperative matrices.
	WorkgroupScopeMaxWorkgroupSize uint32
	// FlexibleDimensionsMaxDimension is the largest M, N or K of a flexible-dimension
	// cooperative matrix.
	FlexibleDimensionsMaxDimension uint32
	// WorkgroupScopeReservedSharedMemory is how many bytes of the workgroup's shared
	// memory (Caps.MaxSharedMemory) the implementation may reserve for itself in a
	// shader using workgroup-scope cooperative matrices.
	WorkgroupScopeReservedSharedMemory uint32
}

// CoopMatFlexShape is one entry of
// vkGetPhysicalDeviceCooperativeMatrixFlexibleDimensionsPropertiesNV: with the
// flexibleDimensions feature, C[MxN] (Result) = A[MxK] (A) * B[KxN] (B) + C (C) is
// supported for every M, N, K that are multiples of the granularities (and at most
// CoopMat2Props.FlexibleDimensionsMaxDimension).
type CoopMatFlexShape struct {
	MGranularity, NGranularity, KGranularity uint32
	A, B, C, Result                          ComponentType
	Saturating                               bool
	Scope                                    uint32 // ScopeSubgroup or ScopeWorkgroup
	// WorkgroupInvocations is the number of invocations in the workgroup for which this
	// entry holds (workgroup scope); 0 for subgroup-scope entries on the drivers seen.
	WorkgroupInvocations uint32
}

// String formats the shape as "MxNxK granularity a*b+c->result scope", with " sat" after
// the types for saturating accumulation and ", N invocations" when WorkgroupInvocations
// is set.
func (s CoopMatFlexShape) String() string {
	sat := ""
	if s.Saturating {
		sat = " sat"
	}
	inv := ""
	if s.WorkgroupInvocations != 0 {
		inv = fmt.Sprintf(", %d invocations", s.WorkgroupInvocations)
	}
	return fmt.Sprintf("%dx%dx%d granularity %s*%s+%s->%s%s %s%s", s.MGranularity, s.NGranularity,
		s.KGranularity, s.A, s.B, s.C, s.Result, sat, ScopeName(s.Scope), inv)
}

// MemoryHeap is one VkMemoryHeap.
type MemoryHeap struct {
	Size        uint64
	DeviceLocal bool
}

// Caps is what a physical device can do, as far as compute kernels care.
type Caps struct {
	Name          string
	Type          DeviceType
	VendorID      uint32
	DeviceID      uint32
	APIVersion    uint32
	DriverVersion uint32
	DriverID      uint32
	DriverName    string
	DriverInfo    string
	CacheUUID     [16]byte

	MaxStorageBufferRange   uint32 // bytes one descriptor can address
	MaxBufferSize           uint64 // 0 when the device does not say (no maintenance4)
	MaxAllocationSize       uint64
	MaxPushConstantsSize    uint32
	MaxSharedMemory         uint32 // bytes of shared memory per workgroup
	MaxWorkgroupCount       [3]uint32
	MaxWorkgroupSize        [3]uint32
	MaxWorkgroupInvocations uint32
	MaxStorageBuffers       uint32 // per stage
	MinStorageBufferAlign   uint64

	SubgroupSize           uint32
	SubgroupOps            uint32 // VkSubgroupFeatureFlags
	SubgroupSizeControl    bool
	ComputeFullSubgroups   bool
	MinSubgroupSize        uint32
	MaxSubgroupSize        uint32
	SubgroupSizeComputeReq bool // requiredSubgroupSize may be set for compute

	Float16, Int8, Int16, Int64, Float64 bool
	Storage16, Storage8, Push16          bool
	MemoryModel                          bool
	Maintenance4                         bool // workgroup sizes from specialization constants
	SubgroupExtendedTypes                bool
	BFloat16, BFloat16Dot, BFloat16Coop  bool
	// PipelineStatistics: the driver reports statistics of each pipeline
	// (VK_KHR_pipeline_executable_properties); on an open Device, only when asked for.
	PipelineStatistics bool

	CoopMat       bool
	CoopMatShapes []CoopMatShape
	CoopMat2      bool // VK_NV_cooperative_matrix2 with at least one feature
	CoopMat2Flags CoopMat2Features
	CoopMat2Props CoopMat2Props // zero without VK_NV_cooperative_matrix2
	// CoopMatFlexShapes are the flexible-dimension shapes of VK_NV_cooperative_matrix2,
	// in the driver's (preference) order; empty without the extension.
	CoopMatFlexShapes []CoopMatFlexShape

	TimestampPeriod float64 // nanoseconds per tick
	TimestampBits   uint32  // valid bits on the compute queue; 0 = no timestamps
	ComputeQueue    int     // queue family used; -1 when the device has none

	Heaps      []MemoryHeap
	Extensions []string

	raw C.dv_caps
}

// APIVersionString formats the Vulkan API version as "1.3.275".
func (c *Caps) APIVersionString() string {
	v := c.APIVersion
	return fmt.Sprintf("%d.%d.%d", v>>22&0x7f, v>>12&0x3ff, v&0xfff)
}

// Timestamps reports whether GPU timestamps can be taken on the compute queue.
func (c *Caps) Timestamps() bool { return c.TimestampBits > 0 && c.TimestampPeriod > 0 }

// HasCoopMat reports whether a subgroup-scope shape with these types exists, and the
// first such shape in the driver's order.
func (c *Caps) HasCoopMat(a, b, acc ComponentType) (CoopMatShape, bool) {
	if !c.CoopMat {
		return CoopMatShape{}, false
	}
	for _, s := range c.CoopMatShapes {
		if s.A == a && s.B == b && s.C == acc && s.Result == acc && s.Scope == ScopeSubgroup && !s.Saturating {
			return s, true
		}
	}
	return CoopMatShape{}, false
}

// HasCoopMatFlex reports whether a non-saturating flexible-dimension shape with these
// types and scope exists (it needs the flexibleDimensions feature, and for
// ScopeWorkgroup the workgroupScope feature), and the first such entry in the
// driver's order.
func (c *Caps) HasCoopMatFlex(a, b, acc ComponentType, scope uint32) (CoopMatFlexShape, bool) {
	if !c.CoopMat2 || !c.CoopMat2Flags.FlexibleDimensions ||
		(scope == ScopeWorkgroup && !c.CoopMat2Flags.WorkgroupScope) {
		return CoopMatFlexShape{}, false
	}
	for _, s := range c.CoopMatFlexShapes {
		if s.A == a && s.B == b && s.C == acc && s.Result == acc && s.Scope == scope && !s.Saturating {
			return s, true
		}
	}
	return CoopMatFlexShape{}, false
}

func cstr(b []C.char) string {
	n := 0
	for n < len(b) && b[n] != 0 {
		n++
	}
	return string(unsafe.Slice((*byte)(unsafe.Pointer(&b[0])), n))
}

func capsFromC(c *C.dv_caps) Caps {
	var out Caps
	out.raw = *c
	out.Name = cstr(c.device_name[:])
	out.Type = DeviceType(c.device_type)
	out.VendorID = uint32(c.vendor_id)
	out.DeviceID = uint32(c.device_id)
	out.APIVersion = uint32(c.api_version)
	out.DriverVersion = uint32(c.driver_version)
	out.DriverID = uint32(c.driver_id)
	out.DriverName = cstr(c.driver_name[:])
	out.DriverInfo = cstr(c.driver_info[:])
	for i := range out.CacheUUID {
		out.CacheUUID[i] = byte(c.pipeline_cache_uuid[i])
	}
	out.MaxStorageBufferRange = uint32(c.max_storage_buffer_range)
	out.MaxBufferSize = uint64(c.max_buffer_size)
	out.MaxAllocationSize = uint64(c.max_memory_allocation_size)
	out.MaxPushConstantsSize = uint32(c.max_push_constants_size)
	out.MaxSharedMemory = uint32(c.max_shared_memory)
	for i := 0; i < 3; i++ {
		out.MaxWorkgroupCount[i] = uint32(c.max_workgroup_count[i])
		out.MaxWorkgroupSize[i] = uint32(c.max_workgroup_size[i])
	}
	out.MaxWorkgroupInvocations = uint32(c.max_workgroup_invocations)
	out.MaxStorageBuffers = uint32(c.max_per_stage_storage_buffers)
	out.MinStorageBufferAlign = uint64(c.min_storage_buffer_offset_alignment)
	out.SubgroupSize = uint32(c.subgroup_size)
	out.SubgroupOps = uint32(c.subgroup_supported_ops)
	out.SubgroupSizeControl = c.subgroup_size_control != 0
	out.ComputeFullSubgroups = c.compute_full_subgroups != 0
	out.MinSubgroupSize = uint32(c.min_subgroup_size)
	out.MaxSubgroupSize = uint32(c.max_subgroup_size)
	out.SubgroupSizeComputeReq = c.required_subgroup_size_stages&0x20 != 0
	out.Float16 = c.shader_float16 != 0
	out.Int8 = c.shader_int8 != 0
	out.Int16 = c.shader_int16 != 0
	out.Int64 = c.shader_int64 != 0
	out.Float64 = c.shader_float64 != 0
	out.Storage16 = c.storage_buffer_16bit != 0
	out.Storage8 = c.storage_buffer_8bit != 0
	out.Push16 = c.storage_push_constant_16 != 0
	out.MemoryModel = c.vulkan_memory_model != 0
	out.Maintenance4 = c.maintenance4 != 0
	out.SubgroupExtendedTypes = c.subgroup_extended_types != 0
	out.BFloat16 = c.bfloat16_type != 0
	out.BFloat16Dot = c.bfloat16_dot != 0
	out.BFloat16Coop = c.bfloat16_coopmat != 0
	out.PipelineStatistics = c.pipeline_executable_info != 0 && c.ext_pipeline_executable_properties != 0
	out.CoopMat = c.coopmat != 0 && c.coopmat_stages&0x20 != 0
	f := &out.CoopMat2Flags
	f.WorkgroupScope = c.coopmat2_workgroup_scope != 0
	f.FlexibleDimensions = c.coopmat2_flexible_dims != 0
	f.Reductions = c.coopmat2_reductions != 0
	f.Conversions = c.coopmat2_conversions != 0
	f.PerElementOperations = c.coopmat2_per_element != 0
	f.TensorAddressing = c.coopmat2_tensor_addressing != 0
	f.BlockLoads = c.coopmat2_block_loads != 0
	out.CoopMat2 = c.ext_coopmat2 != 0 && (f.WorkgroupScope || f.FlexibleDimensions ||
		f.Reductions || f.Conversions || f.PerElementOperations || f.TensorAddressing || f.BlockLoads)
	out.CoopMat2Props = CoopMat2Props{
		WorkgroupScopeMaxWorkgroupSize:     uint32(c.coopmat2_wg_max_size),
		FlexibleDimensionsMaxDimension:     uint32(c.coopmat2_flex_max_dim),
		WorkgroupScopeReservedSharedMemory: uint32(c.coopmat2_wg_reserved_shared),
	}
	out.TimestampPeriod = float64(c.timestamp_period)
	return out
}
