package main

/*
#include <stdint.h>

// VkXlibSurfaceCreateInfoKHR: sType, pNext, flags, dpy, window.
typedef struct { int32_t sType; const void* pNext; uint32_t flags; void* dpy; unsigned long window; } xlib_info;
typedef void* (*gipa_t)(void*, const char*);
typedef int32_t (*create_t)(void*, const xlib_info*, const void*, uint64_t*);

static int32_t create_xlib_surface(void* gipa, void* instance, void* dpy, unsigned long window, uint64_t* surface) {
	create_t f = (create_t)((gipa_t)gipa)(instance, "vkCreateXlibSurfaceKHR");
	if (!f) return -7; // VK_ERROR_EXTENSION_NOT_PRESENT
	xlib_info info = {1000004000, 0, 0, dpy, window};
	return f(instance, &info, 0, surface);
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/go-gl/glfw/v3.3/glfw"
	vulkan "github.com/vulkan-go/vulkan"
)

// surfaceExtensions are the instance extensions of an X11 window's surface.
var surfaceExtensions = []string{"VK_KHR_surface", "VK_KHR_xlib_surface"}

// createSurface makes the window's Vulkan surface with vkCreateXlibSurfaceKHR on
// GLFW's X11 display and window. (glfw's CreateWindowSurface hands the handle back
// through the address of a Go variable it no longer references, which checkptr
// rejects.)
func createSurface(inst vulkan.Instance, win *glfw.Window) (vulkan.Surface, error) {
	var s C.uint64_t
	r := C.create_xlib_surface(glfw.GetVulkanGetInstanceProcAddress(), unsafe.Pointer(inst),
		unsafe.Pointer(glfw.GetX11Display()), C.ulong(win.GetX11Window()), &s)
	if r != 0 {
		return nil, fmt.Errorf("vkCreateXlibSurfaceKHR: VkResult %d", r)
	}
	return *(*vulkan.Surface)(unsafe.Pointer(&s)), nil
}
