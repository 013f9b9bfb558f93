package vk

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"os"
	"runtime/cgo"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	vulkan "github.com/vulkan-go/vulkan"
)

// Message is one message of the validation layer.
type Message struct {
	Severity string // "warning" or "error"
	Text     string
	// Validation is true for the validation layer's findings (and performance
	// warnings); false for general messages such as the loader's.
	Validation bool
}

// Config tunes NewInstance.
type Config struct {
	// Validate turns on VK_LAYER_KHRONOS_validation with a debug messenger. The zero
	// Config takes it from the environment: DMAVK_VALIDATE=1.
	Validate bool
	// OnMessage, when set, receives every validation message as it arrives (on the
	// driver's thread). Messages are also kept; see Instance.Messages.
	OnMessage func(Message)
}

// ValidationRequested reports whether DMAVK_VALIDATE asks for the validation layer.
func ValidationRequested() bool {
	v := os.Getenv("DMAVK_VALIDATE")
	return v != "" && v != "0" && v != "false"
}

// Instance is a Vulkan instance and the physical devices it sees. It is safe for
// concurrent use. Close it after every Device opened from it is closed.
type Instance struct {
	handle    C.dv_handle
	messenger C.dv_handle
	self      cgo.Handle
	validate  bool
	onMessage func(Message)
	devices   []PhysicalDevice

	mu       sync.Mutex
	messages []Message
	closed   bool
	borrowed bool // the application's (AdoptInstance): Close leaves it alive
}

// PhysicalDevice is one device the instance can open, with its capabilities.
type PhysicalDevice struct {
	Index int // position in the loader's enumeration
	Caps  Caps
	pd    C.dv_handle
}

var loadOnce struct {
	sync.Once
	err error
}

// load finds the Vulkan loader and hands its entry point to vulkan-go.
func load() error {
	loadOnce.Do(func() {
		var buf [512]C.char
		if C.dv_load(&buf[0], C.size_t(len(buf))) != 0 {
			loadOnce.err = fmt.Errorf("%w: dlopen libvulkan.so.1: %s (install the Vulkan loader, e.g. "+
				"Debian/Ubuntu: apt-get install libvulkan1 mesa-vulkan-drivers; the GPU's driver must "+
				"provide an ICD, or use Mesa's lavapipe as a software device)", ErrNoLoader, cstr(buf[:]))
			return
		}
		vulkan.SetGetInstanceProcAddr(C.dv_gipa())
		if err := vulkan.Init(); err != nil {
			loadOnce.err = fmt.Errorf("%w: %v", ErrNoLoader, err)
		}
	})
	return loadOnce.err
}

//export dmavkDebugMessage
func dmavkDebugMessage(handle C.uintptr_t, severity, types C.uint32_t, message *C.char) {
	in, ok := cgo.Handle(handle).Value().(*Instance)
	if !ok {
		return
	}
	m := Message{Severity: "warning", Text: C.GoString(message), Validation: types&0x6 != 0}
	if severity&0x1000 != 0 {
		m.Severity = "error"
	}
	in.mu.Lock()
	if len(in.messages) < 1000 {
		in.messages = append(in.messages, m)
	}
	in.mu.Unlock()
	if in.onMessage != nil {
		in.onMessage(m)
	}
}

// NewInstance loads the Vulkan loader, creates an instance (with the validation layer
// when asked) and reads every physical device's capabilities.
func NewInstance(cfg Config) (*Instance, error) {
	if err := load(); err != nil {
		return nil, err
	}
	validate := cfg.Validate || ValidationRequested()
	if validate && C.dv_instance_has_layer(cstring("VK_LAYER_KHRONOS_validation")) == 0 {
		return nil, fmt.Errorf("vk: validation requested (DMAVK_VALIDATE) but VK_LAYER_KHRONOS_validation " +
			"is not installed (Debian/Ubuntu: apt-get install vulkan-validationlayers)")
	}
	in := &Instance{validate: validate, onMessage: cfg.OnMessage}
	in.self = cgo.NewHandle(in)
	v := C.int(0)
	if validate {
		v = 1
	}
	const api13 = 1<<22 | 3<<12
	r := C.dv_create_instance(api13, v, C.uintptr_t(in.self), &in.handle, &in.messenger)
	if err := check("vkCreateInstance", int32(r)); err != nil {
		if in.handle != nil {
			C.dv_destroy_instance(in.handle, nil)
		}
		in.self.Delete()
		if int32(r) == -9 {
			return nil, fmt.Errorf("%w: %v (no Vulkan driver found: install one, e.g. mesa-vulkan-drivers "+
				"for lavapipe, or the GPU vendor's driver)", ErrNoDevice, err)
		}
		return nil, err
	}
	if err := vulkan.InitInstance(vulkan.Instance(unsafe.Pointer(in.handle))); err != nil {
		in.Close()
		return nil, fmt.Errorf("vk: vkInitInstance: %v", err)
	}
	if err := in.enumerate(); err != nil {
		in.Close()
		return nil, err
	}
	return in, nil
}

// cstrings that live for the process: names of layers and extensions.
var cstrings sync.Map

func cstring(s string) *C.char {
	if p, ok := cstrings.Load(s); ok {
		return p.(*C.char)
	}
	p, _ := cstrings.LoadOrStore(s, C.CString(s))
	return p.(*C.char)
}

func (in *Instance) enumerate() error {
	var n uint32
	inst := vulkan.Instance(unsafe.Pointer(in.handle))
	if err := check("vkEnumeratePhysicalDevices", int32(vulkan.EnumeratePhysicalDevices(inst, &n, nil))); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	pds := make([]vulkan.PhysicalDevice, n)
	if err := check("vkEnumeratePhysicalDevices", int32(vulkan.EnumeratePhysicalDevices(inst, &n, pds))); err != nil {
		return err
	}
	for i, pd := range pds[:n] {
		in.devices = append(in.devices, in.describe(i, C.dv_handle(unsafe.Pointer(pd))))
	}
	return nil
}

func (in *Instance) describe(index int, pd C.dv_handle) PhysicalDevice {
	next := C.dv_device_extensions(in.handle, pd, nil, 0)
	names := (*C.char)(C.calloc(C.size_t(next)+1, 256))
	defer C.free(unsafe.Pointer(names))
	next = C.dv_device_extensions(in.handle, pd, names, next)
	ptrs := (**C.char)(C.calloc(C.size_t(next)+1, C.size_t(unsafe.Sizeof(uintptr(0)))))
	defer C.free(unsafe.Pointer(ptrs))
	ptrSlice := unsafe.Slice(ptrs, next+1)
	var exts []string
	for i := range int(next) {
		p := (*C.char)(unsafe.Add(unsafe.Pointer(names), 256*i))
		ptrSlice[i] = p
		exts = append(exts, C.GoString(p))
	}
	sort.Strings(exts)

	var raw C.dv_caps
	C.dv_query_caps(in.handle, pd, ptrs, next, &raw)
	caps := capsFromC(&raw)
	caps.Extensions = exts

	var shapes [64]C.dv_coopmat_shape
	if raw.ext_coopmat != 0 {
		ns := C.dv_coopmat_shapes(in.handle, pd, &shapes[0], C.uint32_t(len(shapes)))
		for _, s := range shapes[:ns] {
			caps.CoopMatShapes = append(caps.CoopMatShapes, CoopMatShape{
				M: uint32(s.m), N: uint32(s.n), K: uint32(s.k),
				A: ComponentType(s.a_type), B: ComponentType(s.b_type),
				C: ComponentType(s.c_type), Result: ComponentType(s.result_type),
				Saturating: s.saturating != 0, Scope: uint32(s.scope),
			})
		}
	}

	var flex [64]C.dv_coopmat_flex_shape
	if raw.ext_coopmat2 != 0 {
		nf := C.dv_coopmat_flex_shapes(in.handle, pd, &flex[0], C.uint32_t(len(flex)))
		for _, s := range flex[:nf] {
			caps.CoopMatFlexShapes = append(caps.CoopMatFlexShapes, CoopMatFlexShape{
				MGranularity: uint32(s.m_gran), NGranularity: uint32(s.n_gran), KGranularity: uint32(s.k_gran),
				A: ComponentType(s.a_type), B: ComponentType(s.b_type),
				C: ComponentType(s.c_type), Result: ComponentType(s.result_type),
				Saturating: s.saturating != 0, Scope: uint32(s.scope),
				WorkgroupInvocations: uint32(s.workgroup_invocations),
			})
		}
	}

	var mem C.dv_memory
	C.dv_memory_props(in.handle, pd, &mem)
	for i := range int(mem.nheaps) {
		caps.Heaps = append(caps.Heaps, MemoryHeap{Size: uint64(mem.heap_size[i]), DeviceLocal: mem.heap_flags[i]&1 != 0})
	}

	var fams [32]C.dv_queue_family
	nf := C.dv_queue_families(in.handle, pd, &fams[0], C.uint32_t(len(fams)))
	caps.ComputeQueue = -1
	// Prefer a compute queue without graphics (an async compute family) only if it keeps
	// timestamps; otherwise the first compute-capable family.
	for i, f := range fams[:nf] {
		if f.flags&0x2 == 0 {
			continue
		}
		if caps.ComputeQueue < 0 {
			caps.ComputeQueue = i
			caps.TimestampBits = uint32(f.timestamp_bits)
		}
	}
	return PhysicalDevice{Index: index, Caps: caps, pd: pd}
}

// Devices lists every physical device in the loader's order.
func (in *Instance) Devices() []PhysicalDevice {
	return append([]PhysicalDevice(nil), in.devices...)
}

// Choose picks the device to use: DMAVK_DEVICE (an index, or a case-insensitive
// substring of the name) when set, else the best by type (discrete > integrated >
// virtual > CPU), ties broken by enumeration order.
func (in *Instance) Choose() (PhysicalDevice, error) {
	return in.ChooseBy(os.Getenv("DMAVK_DEVICE"))
}

// ChooseBy is Choose with the selector given instead of read from DMAVK_DEVICE.
func (in *Instance) ChooseBy(sel string) (PhysicalDevice, error) {
	var usable []PhysicalDevice
	for _, d := range in.devices {
		if d.Caps.ComputeQueue >= 0 {
			usable = append(usable, d)
		}
	}
	if len(usable) == 0 {
		return PhysicalDevice{}, fmt.Errorf("%w: the loader lists %d device(s), none with a compute queue "+
			"(install a Vulkan driver, e.g. mesa-vulkan-drivers for the lavapipe CPU device)", ErrNoDevice, len(in.devices))
	}
	if sel = strings.TrimSpace(sel); sel != "" {
		if i, err := strconv.Atoi(sel); err == nil {
			for _, d := range usable {
				if d.Index == i {
					return d, nil
				}
			}
			return PhysicalDevice{}, fmt.Errorf("%w: DMAVK_DEVICE=%d: no such device (%s)", ErrNoDevice, i, in.listNames())
		}
		for _, d := range usable {
			if strings.Contains(strings.ToLower(d.Caps.Name), strings.ToLower(sel)) {
				return d, nil
			}
		}
		return PhysicalDevice{}, fmt.Errorf("%w: DMAVK_DEVICE=%q matches no device (%s)", ErrNoDevice, sel, in.listNames())
	}
	best := usable[0]
	for _, d := range usable[1:] {
		if d.Caps.Type.rank() > best.Caps.Type.rank() {
			best = d
		}
	}
	return best, nil
}

func (in *Instance) listNames() string {
	var s []string
	for _, d := range in.devices {
		s = append(s, fmt.Sprintf("%d: %s", d.Index, d.Caps.Name))
	}
	return strings.Join(s, ", ")
}

// Validating reports whether the validation layer is on.
func (in *Instance) Validating() bool { return in.validate }

// Messages returns the validation messages received so far and forgets them.
func (in *Instance) Messages() []Message {
	in.mu.Lock()
	defer in.mu.Unlock()
	m := in.messages
	in.messages = nil
	return m
}

// Close destroys the instance. Devices opened from it must be closed first.
func (in *Instance) Close() error {
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		return nil
	}
	in.closed = true
	in.mu.Unlock()
	if in.borrowed {
		C.dv_destroy_messenger(in.handle, in.messenger)
		in.self.Delete()
		return nil
	}
	C.dv_destroy_instance(in.handle, in.messenger)
	in.self.Delete()
	return nil
}
