package dma

import (
	"fmt"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/vk"
)

// An application that renders with Vulkan runs dmavk on its own device:
//
//	in, _ := vk.AdoptInstance(instance, vk.AdoptConfig{APIVersion: apiVersion})
//	pd, _ := in.Find(physicalDevice)
//	req := dma.Recommend(pd)         // before vkCreateDevice: what to enable
//	chain, _ := req.Chain(pd)        // VkDeviceCreateInfo.pNext and extension names
//	... vkCreateDevice ...
//	dev, _ := dma.Adopt(in, vk.AppDevice{PhysicalDevice: physicalDevice, Device: device,
//		QueueFamily: family, Enabled: req, QueueLock: &queueMu})
//
// dev.Close (then in.Close) frees only what dmavk created.

// Recommend is what the application should enable on pd at vkCreateDevice so that
// every dmavk path the device has can run: cooperative matrices (KHR and NV
// coopmat2), 16-bit storage and arithmetic, subgroup size control, the memory model,
// bfloat16. PathsFor tells which paths a request gives.
func Recommend(pd vk.PhysicalDevice) vk.DeviceRequest { return pd.Request(vk.Features{}) }

// Required is the least an application must enable on pd for dmavk: maintenance4,
// since every kernel takes its workgroup size from specialization constants
// (LocalSizeId). The kernels are SPIR-V 1.6: the device must offer Vulkan 1.3. On
// such a device only the portable kernels run; Recommend enables the fast paths.
func Required(pd vk.PhysicalDevice) vk.DeviceRequest {
	r := vk.DeviceRequest{Features: vk.FeatureSet{Maintenance4: true}}
	if pd.Caps.APIVersion < 1<<22|3<<12 {
		r.Extensions = []string{"VK_KHR_maintenance4"}
	}
	return r
}

// PathInfo is the kernel one kind of call runs on a device.
type PathInfo struct {
	DType DType
	// Forward is the attention kernel of a prefill Forward with head dim 128: "coopmat2",
	// "coopmat" or "portable".
	Forward string
	// Decode reports whether the KV cache's decode kernels run (KVCache.Attend and
	// Forward's few-row route); DecodeWhyNot says why not.
	Decode       bool
	DecodeWhyNot string
}

// PathsFor lists, per storage dtype, the paths of a device with capabilities caps
// (pd.CapsWith(request) before the device exists, Device.VK().Caps() after).
func PathsFor(caps vk.Caps) []PathInfo {
	var out []PathInfo
	for _, dt := range []DType{Float32, Float16, BFloat16} {
		p := &kern.Params{B: 1, Lq: 4096, Lk: 4096, H: 8, Hkv: 8, Hb: 8, D: 128, G: 1, Mode: kern.ModeRow, Causal: 1,
			Window: 2048, BlockC: u32(kern.BlockSize(2048)), NBlocks: 2, NCap: 2048 + u32(kern.BlockSize(2048)), Storage: dt.storage()}
		info := PathInfo{DType: dt, Forward: kern.AttentionPathFor(&caps, p)}
		p.Lq, p.PosOffset = 1, 4095
		if err := kern.DecodeTakesOn(&caps, p); err != nil {
			info.DecodeWhyNot = err.Error()
		} else {
			info.Decode = true
		}
		out = append(out, info)
	}
	return out
}

// Paths lists the device's paths per dtype (PathsFor of its capabilities).
func (d *Device) Paths() []PathInfo { return PathsFor(d.vd.Caps()) }

// Adopt opens dmavk on the application's device a, created on a physical device of
// in (an instance from vk.AdoptInstance, or one of dmavk's). Kernels use exactly the
// features a.Enabled lists. Close frees what dmavk created and leaves the
// application's device, queues and buffers alive; close in first only after every
// Device adopted through it.
//
// Queues: Vulkan requires that access to a queue be externally synchronized. dmavk
// submits to a's queue from whatever goroutine calls it, holding a.QueueLock: the
// application takes the same lock around its own submissions and presents on that
// queue (or gives dmavk a queue it does not use itself).
func Adopt(in *vk.Instance, a vk.AppDevice) (*Device, error) {
	if in == nil {
		return nil, fmt.Errorf("dma: Adopt: nil instance")
	}
	vd, err := in.Adopt(a)
	if err != nil {
		return nil, fmt.Errorf("dma: Adopt: %w", err)
	}
	if caps := vd.Caps(); !caps.Maintenance4 || caps.APIVersion < 1<<22|3<<12 {
		vd.Close()
		return nil, fmt.Errorf("dma: Adopt: %s (Vulkan %s) was created without maintenance4, or below Vulkan 1.3: every dmavk kernel needs both (enable at least dma.Required)", caps.Name, caps.APIVersionString())
	}
	return &Device{vd: vd, kern: kern.New(vd)}, nil
}
