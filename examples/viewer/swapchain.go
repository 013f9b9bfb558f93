package main

import (
	"fmt"

	"github.com/dmavk/dmavk/internal/vkapp"
	vulkan "github.com/vulkan-go/vulkan"
)

// swapchain is the window's images. The viewer copies each frame's pixels into one
// (vkCmdCopyBufferToImage), so any 8-bit, 4-channel format works; bgra says the byte
// order.
type swapchain struct {
	app    *vkapp.App
	chain  vulkan.Swapchain
	images []vulkan.Image
	done   []vulkan.Semaphore // per image: its frame's commands are done, present may go
	w, h   int
	bgra   bool
	format vulkan.Format
}

// newSwapchain creates a swapchain of w x h (or the surface's fixed extent), replacing
// old (which the caller then destroys).
func newSwapchain(app *vkapp.App, surface vulkan.Surface, w, h int, old *swapchain) (*swapchain, error) {
	var caps vulkan.SurfaceCapabilities
	if r := vulkan.GetPhysicalDeviceSurfaceCapabilities(app.PhysicalDevice, surface, &caps); r != vulkan.Success {
		return nil, fmt.Errorf("vkGetPhysicalDeviceSurfaceCapabilitiesKHR: %d", r)
	}
	caps.Deref()
	caps.CurrentExtent.Deref()
	caps.MinImageExtent.Deref()
	caps.MaxImageExtent.Deref()
	need := vulkan.ImageUsageFlags(vulkan.ImageUsageTransferDstBit | vulkan.ImageUsageTransferSrcBit)
	if caps.SupportedUsageFlags&need != need {
		return nil, fmt.Errorf("the surface's images cannot be transfer destinations and sources (usage %#x)", caps.SupportedUsageFlags)
	}
	if caps.CurrentExtent.Width != 0xFFFFFFFF {
		w, h = int(caps.CurrentExtent.Width), int(caps.CurrentExtent.Height)
	}
	w = min(max(w, int(caps.MinImageExtent.Width)), int(caps.MaxImageExtent.Width))
	h = min(max(h, int(caps.MinImageExtent.Height)), int(caps.MaxImageExtent.Height))
	var n uint32
	vulkan.GetPhysicalDeviceSurfaceFormats(app.PhysicalDevice, surface, &n, nil)
	formats := make([]vulkan.SurfaceFormat, n)
	vulkan.GetPhysicalDeviceSurfaceFormats(app.PhysicalDevice, surface, &n, formats)
	sc := &swapchain{app: app, w: w, h: h, format: vulkan.FormatUndefined}
	var space vulkan.ColorSpace
	for _, want := range []vulkan.Format{vulkan.FormatB8g8r8a8Unorm, vulkan.FormatR8g8b8a8Unorm, vulkan.FormatB8g8r8a8Srgb, vulkan.FormatR8g8b8a8Srgb} {
		for i := range formats {
			formats[i].Deref()
			if formats[i].Format == want && sc.format == vulkan.FormatUndefined {
				sc.format, space = want, formats[i].ColorSpace
			}
		}
	}
	if sc.format == vulkan.FormatUndefined {
		return nil, fmt.Errorf("the surface offers no 8-bit RGBA or BGRA format")
	}
	sc.bgra = sc.format == vulkan.FormatB8g8r8a8Unorm || sc.format == vulkan.FormatB8g8r8a8Srgb
	count := caps.MinImageCount + 1
	if caps.MaxImageCount > 0 {
		count = min(count, caps.MaxImageCount)
	}
	info := vulkan.SwapchainCreateInfo{
		SType: vulkan.StructureTypeSwapchainCreateInfo, Surface: surface, MinImageCount: count,
		ImageFormat: sc.format, ImageColorSpace: space,
		ImageExtent:      vulkan.Extent2D{Width: uint32(w), Height: uint32(h)},
		ImageArrayLayers: 1, ImageUsage: need, ImageSharingMode: vulkan.SharingModeExclusive,
		PreTransform: caps.CurrentTransform, CompositeAlpha: vulkan.CompositeAlphaOpaqueBit,
		PresentMode: vulkan.PresentModeFifo, Clipped: vulkan.True,
	}
	if old != nil {
		info.OldSwapchain = old.chain
	}
	var chain vulkan.Swapchain
	if r := vulkan.CreateSwapchain(app.Device, &info, nil, &chain); r != vulkan.Success {
		return nil, fmt.Errorf("vkCreateSwapchainKHR: %d", r)
	}
	sc.chain = chain
	vulkan.GetSwapchainImages(app.Device, chain, &n, nil)
	sc.images = make([]vulkan.Image, n)
	vulkan.GetSwapchainImages(app.Device, chain, &n, sc.images)
	for range sc.images {
		s, err := app.NewSemaphore()
		if err != nil {
			sc.destroy()
			return nil, err
		}
		sc.done = append(sc.done, s)
	}
	return sc, nil
}

// destroy frees the swapchain; the device must be done with its images.
func (sc *swapchain) destroy() {
	for _, s := range sc.done {
		vulkan.DestroySemaphore(sc.app.Device, s, nil)
	}
	vulkan.DestroySwapchain(sc.app.Device, sc.chain, nil)
}

// outOfDate reports whether a result says the swapchain no longer fits the surface.
func outOfDate(r vulkan.Result) bool {
	return r == vulkan.ErrorOutOfDate || r == vulkan.Suboptimal
}
