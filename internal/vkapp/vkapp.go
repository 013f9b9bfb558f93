// Package vkapp is a small Vulkan application written with vulkan-go, the way a
// desktop program that renders creates its instance, device, buffers, images and
// command buffers, for the tests of dmavk on an application's device and for the
// viewer (examples/viewer). It owns everything it creates; dmavk only borrows it.
package vkapp

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"unsafe"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/vk"
	vulkan "github.com/vulkan-go/vulkan"
)

// Config describes the application's instance and device.
type Config struct {
	// Validate enables VK_LAYER_KHRONOS_validation and VK_EXT_debug_utils.
	Validate bool
	// SyncValidation also turns on the layer's synchronization validation (through
	// its environment settings, read at instance creation).
	SyncValidation bool
	// InstanceExtensions are enabled besides debug utils (e.g. GLFW's surface ones).
	InstanceExtensions []string
	// DeviceExtensions are enabled besides those of the request (e.g. swapchain).
	DeviceExtensions []string
	// Request chooses what to enable for dmavk; nil enables nothing at all beyond
	// Vulkan 1.0 (the portable kernels must still run there).
	Request func(vk.PhysicalDevice) vk.DeviceRequest
	// Graphics asks for a queue family with graphics and compute.
	Graphics bool
}

// App is the application's Vulkan objects.
type App struct {
	Instance       vulkan.Instance
	PhysicalDevice vulkan.PhysicalDevice
	Device         vulkan.Device
	Queue          vulkan.Queue
	Family         uint32
	// QueueMu serializes the queue between the application and dmavk
	// (vk.AppDevice.QueueLock).
	QueueMu sync.Mutex
	// Adopted is the instance as dmavk sees it (its messages, its physical devices);
	// PD the physical device in use, Enabled what the device was created with.
	Adopted *vk.Instance
	PD      vk.PhysicalDevice
	Enabled vk.DeviceRequest
	pool    vulkan.CommandPool
	memory  vulkan.PhysicalDeviceMemoryProperties
}

// APIVersion is the version the application asks for.
var APIVersion = vulkan.MakeVersion(1, 3, 0)

func cstr(s string) string { return s + "\x00" }

func check(what string, r vulkan.Result) error {
	if r != vulkan.Success {
		return fmt.Errorf("vkapp: %s: VkResult %d", what, r)
	}
	return nil
}

// New creates the instance, picks the physical device dmavk would (DMAVK_DEVICE or the
// best), and creates a device with one queue.
func New(cfg Config) (*App, error) {
	a, err := NewInstance(cfg)
	if err != nil {
		return nil, err
	}
	if err := a.CreateDevice(cfg, nil); err != nil {
		a.Destroy()
		return nil, err
	}
	return a, nil
}

// NewInstance creates the instance and picks the physical device; CreateDevice then
// creates the device (a window's surface can come in between).
func NewInstance(cfg Config) (*App, error) {
	if err := vk.Load(); err != nil {
		return nil, err
	}
	if cfg.SyncValidation {
		// The layer's settings from the environment (the current name and the legacy
		// one), read at instance creation: set for this instance only.
		for k, v := range map[string]string{
			"VK_KHRONOS_VALIDATION_VALIDATE_SYNC": "1",
			"VK_LAYER_ENABLES":                    "VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT",
		} {
			old, had := os.LookupEnv(k)
			os.Setenv(k, v)
			defer func() {
				if had {
					os.Setenv(k, old)
				} else {
					os.Unsetenv(k)
				}
			}()
		}
	}
	a := &App{}
	var layers, exts []string
	for _, e := range cfg.InstanceExtensions {
		exts = append(exts, cstr(strings.TrimSuffix(e, "\x00")))
	}
	if cfg.Validate {
		layers = append(layers, cstr("VK_LAYER_KHRONOS_validation"))
		exts = append(exts, cstr("VK_EXT_debug_utils"))
	}
	info := vulkan.InstanceCreateInfo{
		SType: vulkan.StructureTypeInstanceCreateInfo,
		PApplicationInfo: &vulkan.ApplicationInfo{
			SType: vulkan.StructureTypeApplicationInfo, PApplicationName: cstr("dmavk-app"), PEngineName: cstr("dmavk-app"),
			ApiVersion: APIVersion,
		},
		EnabledLayerCount: uint32(len(layers)), PpEnabledLayerNames: layers,
		EnabledExtensionCount: uint32(len(exts)), PpEnabledExtensionNames: exts,
	}
	var inst vulkan.Instance
	if err := check("vkCreateInstance", vulkan.CreateInstance(&info, nil, &inst)); err != nil {
		return nil, err
	}
	a.Instance = inst
	if err := vulkan.InitInstance(inst); err != nil {
		a.Destroy()
		return nil, err
	}
	var err error
	a.Adopted, err = vk.AdoptInstance(uintptr(unsafe.Pointer(inst)), vk.AdoptConfig{APIVersion: APIVersion, Messages: cfg.Validate})
	if err != nil {
		a.Destroy()
		return nil, err
	}
	if a.PD, err = a.Adopted.Choose(); err != nil {
		a.Destroy()
		return nil, err
	}
	h := a.PD.Handle() // driver memory, not Go's
	a.PhysicalDevice = vulkan.PhysicalDevice(*(*unsafe.Pointer)(unsafe.Pointer(&h)))
	return a, nil
}

// CreateDevice creates the device with one queue of a family that has compute (and
// graphics with cfg.Graphics) and, when present is not nil, can present to it.
func (a *App) CreateDevice(cfg Config, present func(family uint32) bool) error {
	var n uint32
	vulkan.GetPhysicalDeviceQueueFamilyProperties(a.PhysicalDevice, &n, nil)
	fams := make([]vulkan.QueueFamilyProperties, n)
	vulkan.GetPhysicalDeviceQueueFamilyProperties(a.PhysicalDevice, &n, fams)
	a.Family = ^uint32(0)
	for i := range fams {
		fams[i].Deref()
		want := vulkan.QueueFlags(vulkan.QueueComputeBit)
		if cfg.Graphics {
			want |= vulkan.QueueFlags(vulkan.QueueGraphicsBit)
		}
		if fams[i].QueueFlags&want == want && (present == nil || present(uint32(i))) {
			a.Family = uint32(i)
			break
		}
	}
	if a.Family == ^uint32(0) {
		return fmt.Errorf("vkapp: %s has no queue family for the application", a.PD.Caps.Name)
	}
	if cfg.Request != nil {
		a.Enabled = cfg.Request(a.PD)
	}
	chain, err := a.Enabled.Chain(a.PD)
	if err != nil {
		return err
	}
	defer chain.Free()
	var exts []string
	for _, e := range append(append([]string(nil), a.Enabled.Extensions...), cfg.DeviceExtensions...) {
		exts = append(exts, cstr(e))
	}
	info := vulkan.DeviceCreateInfo{
		SType:                vulkan.StructureTypeDeviceCreateInfo,
		PNext:                chain.Next(),
		QueueCreateInfoCount: 1,
		PQueueCreateInfos: []vulkan.DeviceQueueCreateInfo{{
			SType: vulkan.StructureTypeDeviceQueueCreateInfo, QueueFamilyIndex: a.Family, QueueCount: 1,
			PQueuePriorities: []float32{1},
		}},
		EnabledExtensionCount: uint32(len(exts)), PpEnabledExtensionNames: exts,
	}
	var dev vulkan.Device
	if err := check("vkCreateDevice", vulkan.CreateDevice(a.PhysicalDevice, &info, nil, &dev)); err != nil {
		return err
	}
	a.Device = dev
	var q vulkan.Queue
	vulkan.GetDeviceQueue(dev, a.Family, 0, &q)
	a.Queue = q
	pi := vulkan.CommandPoolCreateInfo{
		SType: vulkan.StructureTypeCommandPoolCreateInfo, QueueFamilyIndex: a.Family,
		Flags: vulkan.CommandPoolCreateFlags(vulkan.CommandPoolCreateResetCommandBufferBit),
	}
	var pool vulkan.CommandPool
	if err := check("vkCreateCommandPool", vulkan.CreateCommandPool(dev, &pi, nil, &pool)); err != nil {
		return err
	}
	a.pool = pool
	vulkan.GetPhysicalDeviceMemoryProperties(a.PhysicalDevice, &a.memory)
	a.memory.Deref()
	for i := range a.memory.MemoryTypes[:a.memory.MemoryTypeCount] {
		a.memory.MemoryTypes[i].Deref()
	}
	return nil
}

// AppDevice describes the application's device for dma.Adopt.
func (a *App) AppDevice() vk.AppDevice {
	return vk.AppDevice{
		PhysicalDevice: a.PD.Handle(), Device: uintptr(unsafe.Pointer(a.Device)),
		QueueFamily: a.Family, QueueIndex: 0, Enabled: a.Enabled, QueueLock: &a.QueueMu,
	}
}

// Adopt opens dmavk on the application's device.
func (a *App) Adopt() (*dma.Device, error) { return dma.Adopt(a.Adopted, a.AppDevice()) }

// Buffer is a buffer of the application's in host-visible, coherent memory.
type Buffer struct {
	Buf    vulkan.Buffer
	Mem    vulkan.DeviceMemory
	Size   int64
	Mapped []byte
}

// Handle is the VkBuffer as dmavk takes it (dma.Device.TensorFromBuffer).
func (b *Buffer) Handle() uint64 { return uint64(uintptr(unsafe.Pointer(b.Buf))) }

func (a *App) memoryType(bits uint32, want vulkan.MemoryPropertyFlags) (uint32, error) {
	for i := range a.memory.MemoryTypeCount {
		if bits&(1<<i) != 0 && a.memory.MemoryTypes[i].PropertyFlags&want == want {
			return i, nil
		}
	}
	return 0, fmt.Errorf("vkapp: no memory type with flags %#x", want)
}

// NewBuffer creates a storage and transfer buffer of size bytes, mapped.
func (a *App) NewBuffer(size int64) (*Buffer, error) {
	info := vulkan.BufferCreateInfo{
		SType: vulkan.StructureTypeBufferCreateInfo, Size: vulkan.DeviceSize(size), SharingMode: vulkan.SharingModeExclusive,
		Usage: vulkan.BufferUsageFlags(vulkan.BufferUsageStorageBufferBit | vulkan.BufferUsageTransferSrcBit |
			vulkan.BufferUsageTransferDstBit | vulkan.BufferUsageVertexBufferBit),
	}
	b := &Buffer{Size: size}
	var buf vulkan.Buffer
	if err := check("vkCreateBuffer", vulkan.CreateBuffer(a.Device, &info, nil, &buf)); err != nil {
		return nil, err
	}
	b.Buf = buf
	var req vulkan.MemoryRequirements
	vulkan.GetBufferMemoryRequirements(a.Device, buf, &req)
	req.Deref()
	typ, err := a.memoryType(req.MemoryTypeBits, vulkan.MemoryPropertyFlags(vulkan.MemoryPropertyHostVisibleBit|vulkan.MemoryPropertyHostCoherentBit))
	if err != nil {
		vulkan.DestroyBuffer(a.Device, buf, nil)
		return nil, err
	}
	var mem vulkan.DeviceMemory
	ai := vulkan.MemoryAllocateInfo{SType: vulkan.StructureTypeMemoryAllocateInfo, AllocationSize: req.Size, MemoryTypeIndex: typ}
	if err := check("vkAllocateMemory", vulkan.AllocateMemory(a.Device, &ai, nil, &mem)); err != nil {
		vulkan.DestroyBuffer(a.Device, buf, nil)
		return nil, err
	}
	b.Mem = mem
	if err := check("vkBindBufferMemory", vulkan.BindBufferMemory(a.Device, buf, mem, 0)); err != nil {
		a.FreeBuffer(b)
		return nil, err
	}
	var p unsafe.Pointer
	if err := check("vkMapMemory", vulkan.MapMemory(a.Device, mem, 0, vulkan.DeviceSize(size), 0, &p)); err != nil {
		a.FreeBuffer(b)
		return nil, err
	}
	b.Mapped = unsafe.Slice((*byte)(p), size)
	return b, nil
}

// FreeBuffer destroys b.
func (a *App) FreeBuffer(b *Buffer) {
	if b.Mapped != nil {
		vulkan.UnmapMemory(a.Device, b.Mem)
	}
	vulkan.DestroyBuffer(a.Device, b.Buf, nil)
	vulkan.FreeMemory(a.Device, b.Mem, nil)
}

// NewCommandBuffer allocates a primary command buffer from the application's pool.
func (a *App) NewCommandBuffer() (vulkan.CommandBuffer, error) {
	cmds := make([]vulkan.CommandBuffer, 1)
	ai := vulkan.CommandBufferAllocateInfo{SType: vulkan.StructureTypeCommandBufferAllocateInfo, CommandPool: a.pool,
		Level: vulkan.CommandBufferLevelPrimary, CommandBufferCount: 1}
	if err := check("vkAllocateCommandBuffers", vulkan.AllocateCommandBuffers(a.Device, &ai, cmds)); err != nil {
		return nil, err
	}
	return cmds[0], nil
}

// FreeCommandBuffer frees cmd.
func (a *App) FreeCommandBuffer(cmd vulkan.CommandBuffer) {
	vulkan.FreeCommandBuffers(a.Device, a.pool, 1, []vulkan.CommandBuffer{cmd})
}

// Begin starts recording cmd (one submission).
func Begin(cmd vulkan.CommandBuffer) error {
	bi := vulkan.CommandBufferBeginInfo{SType: vulkan.StructureTypeCommandBufferBeginInfo,
		Flags: vulkan.CommandBufferUsageFlags(vulkan.CommandBufferUsageOneTimeSubmitBit)}
	return check("vkBeginCommandBuffer", vulkan.BeginCommandBuffer(cmd, &bi))
}

// Submission is one vkQueueSubmit's waits and signals.
type Submission struct {
	Wait       []vulkan.Semaphore
	WaitStages []vulkan.PipelineStageFlags
	Signal     []vulkan.Semaphore
}

// Submit ends cmd, submits it under the queue lock and, when wait is set, waits for it.
// It returns the fence (nil when waited; the caller destroys it otherwise).
func (a *App) Submit(cmd vulkan.CommandBuffer, s Submission, wait bool) (vulkan.Fence, error) {
	if err := check("vkEndCommandBuffer", vulkan.EndCommandBuffer(cmd)); err != nil {
		return nil, err
	}
	var fence vulkan.Fence
	fi := vulkan.FenceCreateInfo{SType: vulkan.StructureTypeFenceCreateInfo}
	if err := check("vkCreateFence", vulkan.CreateFence(a.Device, &fi, nil, &fence)); err != nil {
		return nil, err
	}
	si := []vulkan.SubmitInfo{{
		SType: vulkan.StructureTypeSubmitInfo, CommandBufferCount: 1, PCommandBuffers: []vulkan.CommandBuffer{cmd},
		WaitSemaphoreCount: uint32(len(s.Wait)), PWaitSemaphores: s.Wait, PWaitDstStageMask: s.WaitStages,
		SignalSemaphoreCount: uint32(len(s.Signal)), PSignalSemaphores: s.Signal,
	}}
	a.QueueMu.Lock()
	r := vulkan.QueueSubmit(a.Queue, 1, si, fence)
	a.QueueMu.Unlock()
	if err := check("vkQueueSubmit", r); err != nil {
		vulkan.DestroyFence(a.Device, fence, nil)
		return nil, err
	}
	if !wait {
		return fence, nil
	}
	return nil, a.WaitFence(fence)
}

// WaitFence waits for fence and destroys it.
func (a *App) WaitFence(fence vulkan.Fence) error {
	defer vulkan.DestroyFence(a.Device, fence, nil)
	return check("vkWaitForFences", vulkan.WaitForFences(a.Device, 1, []vulkan.Fence{fence}, vulkan.True, 60e9))
}

// Barrier records a global memory barrier.
func Barrier(cmd vulkan.CommandBuffer, srcStage, srcAccess, dstStage, dstAccess uint32) {
	vulkan.CmdPipelineBarrier(cmd, vulkan.PipelineStageFlags(srcStage), vulkan.PipelineStageFlags(dstStage), 0,
		1, []vulkan.MemoryBarrier{{SType: vulkan.StructureTypeMemoryBarrier,
			SrcAccessMask: vulkan.AccessFlags(srcAccess), DstAccessMask: vulkan.AccessFlags(dstAccess)}}, 0, nil, 0, nil)
}

// ImageBarrier records a layout transition of a colour image.
func ImageBarrier(cmd vulkan.CommandBuffer, img vulkan.Image, from, to vulkan.ImageLayout, srcStage, srcAccess, dstStage, dstAccess uint32) {
	vulkan.CmdPipelineBarrier(cmd, vulkan.PipelineStageFlags(srcStage), vulkan.PipelineStageFlags(dstStage), 0, 0, nil, 0, nil,
		1, []vulkan.ImageMemoryBarrier{{
			SType: vulkan.StructureTypeImageMemoryBarrier, SrcAccessMask: vulkan.AccessFlags(srcAccess), DstAccessMask: vulkan.AccessFlags(dstAccess),
			OldLayout: from, NewLayout: to, SrcQueueFamilyIndex: vulkan.QueueFamilyIgnored, DstQueueFamilyIndex: vulkan.QueueFamilyIgnored,
			Image: img, SubresourceRange: vulkan.ImageSubresourceRange{AspectMask: vulkan.ImageAspectFlags(vulkan.ImageAspectColorBit), LevelCount: 1, LayerCount: 1},
		}})
}

// CopyBufferToImage records a copy of tightly packed 4-byte pixels into img (in
// TRANSFER_DST_OPTIMAL layout).
func CopyBufferToImage(cmd vulkan.CommandBuffer, buf vulkan.Buffer, img vulkan.Image, w, h int) {
	vulkan.CmdCopyBufferToImage(cmd, buf, img, vulkan.ImageLayoutTransferDstOptimal, 1, []vulkan.BufferImageCopy{{
		ImageSubresource: vulkan.ImageSubresourceLayers{AspectMask: vulkan.ImageAspectFlags(vulkan.ImageAspectColorBit), LayerCount: 1},
		ImageExtent:      vulkan.Extent3D{Width: uint32(w), Height: uint32(h), Depth: 1},
	}})
}

// CopyImageToBuffer records a copy of img (in TRANSFER_SRC_OPTIMAL layout) into buf as
// tightly packed 4-byte pixels.
func CopyImageToBuffer(cmd vulkan.CommandBuffer, img vulkan.Image, buf vulkan.Buffer, w, h int) {
	vulkan.CmdCopyImageToBuffer(cmd, img, vulkan.ImageLayoutTransferSrcOptimal, buf, 1, []vulkan.BufferImageCopy{{
		ImageSubresource: vulkan.ImageSubresourceLayers{AspectMask: vulkan.ImageAspectFlags(vulkan.ImageAspectColorBit), LayerCount: 1},
		ImageExtent:      vulkan.Extent3D{Width: uint32(w), Height: uint32(h), Depth: 1},
	}})
}

// Image is a device-local 2D colour image of the application's.
type Image struct {
	Img  vulkan.Image
	Mem  vulkan.DeviceMemory
	W, H int
}

// NewImage creates a w x h image of format usable as a transfer source and destination.
func (a *App) NewImage(w, h int, format vulkan.Format) (*Image, error) {
	info := vulkan.ImageCreateInfo{
		SType: vulkan.StructureTypeImageCreateInfo, ImageType: vulkan.ImageType2d, Format: format,
		Extent: vulkan.Extent3D{Width: uint32(w), Height: uint32(h), Depth: 1}, MipLevels: 1, ArrayLayers: 1,
		Samples: vulkan.SampleCount1Bit, Tiling: vulkan.ImageTilingOptimal, SharingMode: vulkan.SharingModeExclusive,
		Usage:         vulkan.ImageUsageFlags(vulkan.ImageUsageTransferDstBit | vulkan.ImageUsageTransferSrcBit),
		InitialLayout: vulkan.ImageLayoutUndefined,
	}
	var img vulkan.Image
	if err := check("vkCreateImage", vulkan.CreateImage(a.Device, &info, nil, &img)); err != nil {
		return nil, err
	}
	var req vulkan.MemoryRequirements
	vulkan.GetImageMemoryRequirements(a.Device, img, &req)
	req.Deref()
	typ, err := a.memoryType(req.MemoryTypeBits, 0)
	if err != nil {
		vulkan.DestroyImage(a.Device, img, nil)
		return nil, err
	}
	var mem vulkan.DeviceMemory
	ai := vulkan.MemoryAllocateInfo{SType: vulkan.StructureTypeMemoryAllocateInfo, AllocationSize: req.Size, MemoryTypeIndex: typ}
	if err := check("vkAllocateMemory", vulkan.AllocateMemory(a.Device, &ai, nil, &mem)); err != nil {
		vulkan.DestroyImage(a.Device, img, nil)
		return nil, err
	}
	if err := check("vkBindImageMemory", vulkan.BindImageMemory(a.Device, img, mem, 0)); err != nil {
		vulkan.DestroyImage(a.Device, img, nil)
		vulkan.FreeMemory(a.Device, mem, nil)
		return nil, err
	}
	return &Image{Img: img, Mem: mem, W: w, H: h}, nil
}

// FreeImage destroys im.
func (a *App) FreeImage(im *Image) {
	vulkan.DestroyImage(a.Device, im.Img, nil)
	vulkan.FreeMemory(a.Device, im.Mem, nil)
}

// NewSemaphore creates a binary semaphore.
func (a *App) NewSemaphore() (vulkan.Semaphore, error) {
	var s vulkan.Semaphore
	si := vulkan.SemaphoreCreateInfo{SType: vulkan.StructureTypeSemaphoreCreateInfo}
	return s, check("vkCreateSemaphore", vulkan.CreateSemaphore(a.Device, &si, nil, &s))
}

// SemaphoreHandle is s as dmavk takes it (vk.Semaphore.Handle).
func SemaphoreHandle(s vulkan.Semaphore) uint64 { return uint64(uintptr(unsafe.Pointer(s))) }

// CommandBufferHandle is cmd as dmavk takes it (dma.Device.RecordInto).
func CommandBufferHandle(cmd vulkan.CommandBuffer) uintptr { return uintptr(unsafe.Pointer(cmd)) }

// DestroyDevice waits for the device and destroys it and the command pool (the
// application's buffers, images and semaphores must be gone).
func (a *App) DestroyDevice() {
	if a.Device == nil {
		return
	}
	vulkan.DeviceWaitIdle(a.Device)
	if a.pool != nil {
		vulkan.DestroyCommandPool(a.Device, a.pool, nil)
		a.pool = nil
	}
	vulkan.DestroyDevice(a.Device, nil)
	a.Device = nil
}

// Destroy destroys the device (if not yet), dmavk's view of the instance, and the
// instance.
func (a *App) Destroy() {
	a.DestroyDevice()
	if a.Adopted != nil {
		a.Adopted.Close()
		a.Adopted = nil
	}
	if a.Instance != nil {
		vulkan.DestroyInstance(a.Instance, nil)
		a.Instance = nil
	}
}
