package vk

import (
	"errors"
	"fmt"

	vulkan "github.com/vulkan-go/vulkan"
)

// ErrDeviceLost is returned (wrapped) by every call that finds the device lost. A lost
// device cannot be used again: Close it and open a new one.
var ErrDeviceLost = errors.New("vk: device lost")

// ErrNoLoader means the Vulkan loader library could not be loaded.
var ErrNoLoader = errors.New("vk: no Vulkan loader")

// ErrNoDevice means the loader found no usable Vulkan device.
var ErrNoDevice = errors.New("vk: no Vulkan device")

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("vk: use of closed object")

// Error is a failed Vulkan call: the call's name and the VkResult it returned.
type Error struct {
	Call   string
	Result int32
}

// Error formats the call and its VkResult.
func (e *Error) Error() string {
	return fmt.Sprintf("vk: %s: %s", e.Call, resultName(e.Result))
}

// Unwrap lets errors.Is(err, ErrDeviceLost) find a lost device.
func (e *Error) Unwrap() error {
	if e.Result == int32(vulkan.ErrorDeviceLost) {
		return ErrDeviceLost
	}
	return nil
}

// check turns a VkResult into an error naming the call; success codes are nil.
func check(call string, r int32) error {
	if r >= 0 {
		return nil
	}
	return &Error{Call: call, Result: r}
}

func resultName(r int32) string {
	switch r {
	case 0:
		return "VK_SUCCESS"
	case 1:
		return "VK_NOT_READY"
	case 2:
		return "VK_TIMEOUT"
	case -1:
		return "VK_ERROR_OUT_OF_HOST_MEMORY"
	case -2:
		return "VK_ERROR_OUT_OF_DEVICE_MEMORY"
	case -3:
		return "VK_ERROR_INITIALIZATION_FAILED"
	case -4:
		return "VK_ERROR_DEVICE_LOST"
	case -5:
		return "VK_ERROR_MEMORY_MAP_FAILED"
	case -6:
		return "VK_ERROR_LAYER_NOT_PRESENT"
	case -7:
		return "VK_ERROR_EXTENSION_NOT_PRESENT"
	case -8:
		return "VK_ERROR_FEATURE_NOT_PRESENT"
	case -9:
		return "VK_ERROR_INCOMPATIBLE_DRIVER"
	case -10:
		return "VK_ERROR_TOO_MANY_OBJECTS"
	case -11:
		return "VK_ERROR_FORMAT_NOT_SUPPORTED"
	case -12:
		return "VK_ERROR_FRAGMENTED_POOL"
	case -13:
		return "VK_ERROR_UNKNOWN"
	case -1000069000:
		return "VK_ERROR_OUT_OF_POOL_MEMORY"
	case -1000012000:
		return "VK_ERROR_INVALID_SHADER_NV"
	}
	return fmt.Sprintf("VkResult(%d)", r)
}
