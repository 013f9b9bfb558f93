package vk

/*
#include <stdlib.h>
#include <string.h>
#include "shim.h"
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"sync"
	"unsafe"

	vulkan "github.com/vulkan-go/vulkan"
)

// PipelineDesc describes a compute pipeline: SPIR-V whose entry point is "main", a
// descriptor set 0 of Bindings storage buffers (binding i for i < Bindings), PushSize
// bytes of push constants, and specialization constants (constant_id i = Spec[i], each
// 32 bits: ints, uints or float bits).
type PipelineDesc struct {
	Name     string // for errors and caches
	SPIRV    []byte
	Bindings int
	PushSize int
	Spec     []uint32
	// SubgroupSize, when non-zero, requires this subgroup size
	// (VK_EXT_subgroup_size_control); the device must allow it for compute.
	SubgroupSize uint32
	// FullSubgroups requires every subgroup of a workgroup to be full.
	FullSubgroups bool
}

// Pipeline is a compiled compute pipeline with its layouts.
type Pipeline struct {
	d        *Device
	name     string
	pipeline vulkan.Pipeline
	layout   vulkan.PipelineLayout
	dsl      vulkan.DescriptorSetLayout
	module   vulkan.ShaderModule
	bindings int
	pushSize int
	// Recordings into application command buffers that use the pipeline (External):
	// Close leaves the destruction to the last one's Release.
	extMu   sync.Mutex
	extRefs int
	closing bool
}

// NewPipeline compiles a compute pipeline, through the device's pipeline cache.
func (d *Device) NewPipeline(desc PipelineDesc) (*Pipeline, error) {
	if err := d.usable(); err != nil {
		return nil, err
	}
	if err := d.checkPipelineDesc(&desc); err != nil {
		return nil, err
	}
	// SPIR-V is a stream of 32-bit words: copy it into C memory, which is aligned.
	code := C.malloc(C.size_t(len(desc.SPIRV)))
	defer C.free(code)
	C.memcpy(code, unsafe.Pointer(&desc.SPIRV[0]), C.size_t(len(desc.SPIRV)))
	var spec *C.uint32_t
	if len(desc.Spec) > 0 {
		spec = (*C.uint32_t)(unsafe.Pointer(&desc.Spec[0]))
	}
	var cache C.dv_handle
	if d.cache != nil {
		cache = C.dv_handle(unsafe.Pointer(d.cache.handle))
	}
	full := C.int(0)
	if desc.FullSubgroups {
		full = 1
	}
	var dsl, layout, pipe, module C.dv_handle
	r := C.dv_create_compute_pipeline(d.in.handle, d.handle, (*C.uint32_t)(code), C.size_t(len(desc.SPIRV)),
		C.uint32_t(desc.Bindings), C.uint32_t(desc.PushSize), spec, C.uint32_t(len(desc.Spec)),
		C.uint32_t(desc.SubgroupSize), full, C.int(boolC(d.caps.PipelineStatistics)), cache, &dsl, &layout, &pipe, &module)
	p := &Pipeline{
		d: d, name: desc.Name, bindings: desc.Bindings, pushSize: desc.PushSize,
		pipeline: vulkan.Pipeline(unsafe.Pointer(pipe)),
		layout:   vulkan.PipelineLayout(unsafe.Pointer(layout)),
		dsl:      vulkan.DescriptorSetLayout(unsafe.Pointer(dsl)),
		module:   vulkan.ShaderModule(unsafe.Pointer(module)),
	}
	if err := check("vkCreateComputePipelines", int32(r)); err != nil {
		p.Close()
		return nil, d.noteErr(fmt.Errorf("%s: %w", desc.Name, err))
	}
	// The module is only needed while the pipeline is created.
	vulkan.DestroyShaderModule(d.dev, p.module, nil)
	p.module = vulkan.NullShaderModule
	d.pipeMu.Lock()
	if d.pipelines == nil {
		d.pipelines = map[*Pipeline]struct{}{}
	}
	d.pipelines[p] = struct{}{}
	d.pipeMu.Unlock()
	return p, nil
}

func (d *Device) checkPipelineDesc(desc *PipelineDesc) error {
	caps := &d.caps
	if len(desc.SPIRV) < 20 || len(desc.SPIRV)%4 != 0 || binary.LittleEndian.Uint32(desc.SPIRV) != 0x07230203 {
		return fmt.Errorf("vk: NewPipeline %s: not SPIR-V (%d bytes)", desc.Name, len(desc.SPIRV))
	}
	if desc.Bindings < 0 || uint32(desc.Bindings) > caps.MaxStorageBuffers {
		return fmt.Errorf("vk: NewPipeline %s: %d storage buffers, device allows %d per stage", desc.Name, desc.Bindings, caps.MaxStorageBuffers)
	}
	if desc.PushSize < 0 || desc.PushSize%4 != 0 || uint32(desc.PushSize) > caps.MaxPushConstantsSize {
		return fmt.Errorf("vk: NewPipeline %s: %d bytes of push constants (a multiple of 4 up to %d)", desc.Name, desc.PushSize, caps.MaxPushConstantsSize)
	}
	if s := desc.SubgroupSize; s != 0 {
		if !caps.SubgroupSizeControl || !caps.SubgroupSizeComputeReq {
			return fmt.Errorf("vk: NewPipeline %s: subgroup size %d required, but the device cannot fix the subgroup size of compute shaders", desc.Name, s)
		}
		if s&(s-1) != 0 || s < caps.MinSubgroupSize || s > caps.MaxSubgroupSize {
			return fmt.Errorf("vk: NewPipeline %s: subgroup size %d outside the device's [%d, %d]", desc.Name, s, caps.MinSubgroupSize, caps.MaxSubgroupSize)
		}
	}
	if desc.FullSubgroups && !caps.ComputeFullSubgroups {
		return fmt.Errorf("vk: NewPipeline %s: full subgroups required, device does not support computeFullSubgroups", desc.Name)
	}
	return nil
}

// Close destroys the pipeline. Runs already submitted keep working: Vulkan lets a
// pipeline be destroyed once command buffers that use it are done, so Close waits for
// the device's work in flight first.
func (p *Pipeline) Close() error {
	if p.d == nil {
		return nil
	}
	if p.deferClose() {
		return nil
	}
	return p.destroy()
}

func (p *Pipeline) destroy() error {
	d := p.d
	p.d = nil
	d.pipeMu.Lock()
	delete(d.pipelines, p)
	d.pipeMu.Unlock()
	d.inflight.Wait()
	if p.pipeline != vulkan.NullPipeline {
		vulkan.DestroyPipeline(d.dev, p.pipeline, nil)
	}
	if p.layout != vulkan.NullPipelineLayout {
		vulkan.DestroyPipelineLayout(d.dev, p.layout, nil)
	}
	if p.dsl != vulkan.NullDescriptorSetLayout {
		vulkan.DestroyDescriptorSetLayout(d.dev, p.dsl, nil)
	}
	if p.module != vulkan.NullShaderModule {
		vulkan.DestroyShaderModule(d.dev, p.module, nil)
	}
	return nil
}

// PipelineStat is one statistic the driver reports about a compiled pipeline, such as
// its register count or spills.
type PipelineStat struct {
	Executable  string // the driver's name of the executable (a compute pipeline has one)
	Name        string
	Description string
	Value       float64 // booleans are 0 or 1
}

// Statistics returns the driver's statistics of the pipeline. The device must have been
// opened with Features.PipelineStatistics on a device that offers them.
func (p *Pipeline) Statistics() ([]PipelineStat, error) {
	if p.d == nil {
		return nil, fmt.Errorf("vk: Statistics of pipeline %s: %w", p.name, ErrClosed)
	}
	if !p.d.caps.PipelineStatistics {
		return nil, fmt.Errorf("vk: Statistics of pipeline %s: the device was not opened with pipeline statistics (Features.PipelineStatistics, DMAVK_PIPELINE_STATS=1) or lacks VK_KHR_pipeline_executable_properties", p.name)
	}
	const max = 128
	out := (*[max]C.dv_pipeline_stat)(C.malloc(C.size_t(max) * C.size_t(unsafe.Sizeof(C.dv_pipeline_stat{}))))
	defer C.free(unsafe.Pointer(out))
	n := C.dv_pipeline_stats(p.d.in.handle, p.d.handle, C.dv_handle(unsafe.Pointer(p.pipeline)), &out[0], max)
	if n < 0 {
		return nil, fmt.Errorf("vk: Statistics of pipeline %s: the driver refused", p.name)
	}
	stats := make([]PipelineStat, n)
	for i := range stats {
		c := &out[i]
		s := PipelineStat{Executable: C.GoString(&c.executable[0]), Name: C.GoString(&c.name[0]),
			Description: C.GoString(&c.description[0])}
		switch c.format {
		case 1:
			s.Value = float64(c.i64)
		case 3:
			s.Value = float64(c.f64)
		default:
			s.Value = float64(c.u64)
		}
		stats[i] = s
	}
	return stats, nil
}

// Name is the name given in the PipelineDesc.
func (p *Pipeline) Name() string { return p.name }
