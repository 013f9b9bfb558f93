package vk_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/vk"
)

// wantErr fails unless err is non-nil and its message holds every part.
func wantErr(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q does not say %q", what, err, p)
		}
	}
}

func TestNewBufferErrors(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	caps := d.Caps()
	for _, size := range []int64{0, -1, math.MinInt64} {
		b, err := d.NewBuffer(size)
		wantErr(t, "NewBuffer", err, "NewBuffer", "must be positive")
		if b != nil {
			t.Errorf("NewBuffer(%d) returned a buffer", size)
		}
	}
	if caps.MaxBufferSize > 0 && caps.MaxBufferSize < math.MaxInt64 {
		_, err := d.NewBuffer(int64(caps.MaxBufferSize) + 1)
		wantErr(t, "NewBuffer(maxBufferSize+1)", err, "maxBufferSize")
	}
	if m := caps.MaxAllocationSize; m > 0 && m < math.MaxInt64 && (caps.MaxBufferSize == 0 || m < caps.MaxBufferSize) {
		_, err := d.NewBuffer(int64(m) + 1)
		wantErr(t, "NewBuffer(maxMemoryAllocationSize+1)", err, "maxMemoryAllocationSize")
	}
	if caps.MaxBufferSize > 0 || caps.MaxAllocationSize > 0 {
		_, err := d.NewBuffer(math.MaxInt64)
		wantErr(t, "NewBuffer(MaxInt64)", err, "NewBuffer", "over the device's")
	}
}

// TestVulkanErrorWrapped forces a failing vkAllocateMemory (more than the heap holds,
// within the device's allocation limits) and checks the error is a *vk.Error naming the
// call. Validation would rightly flag the oversized allocation, so this uses an
// instance of its own without validation. Devices whose limits stop such a request
// before Vulkan sees it (lavapipe: maxMemoryAllocationSize = heap size) skip.
func TestVulkanErrorWrapped(t *testing.T) {
	t.Setenv("DMAVK_VALIDATE", "0")
	in, err := vk.NewInstance(vk.Config{})
	if err != nil {
		vktest.Instance(t) // skips or fails the same way the other tests do
		t.Fatal(err)
	}
	defer in.Close()
	pd, err := in.Choose()
	if err != nil {
		t.Fatal(err)
	}
	caps := pd.Caps
	var heap uint64
	for _, h := range caps.Heaps {
		heap = max(heap, h.Size)
	}
	limit := uint64(math.MaxInt64)
	if caps.MaxBufferSize > 0 {
		limit = min(limit, caps.MaxBufferSize)
	}
	if caps.MaxAllocationSize > 0 {
		limit = min(limit, caps.MaxAllocationSize)
	}
	if heap == 0 || limit <= heap {
		t.Skipf("%s: largest heap %d bytes, allocation limit %d: no request reaches vkAllocateMemory and fails there", caps.Name, heap, limit)
	}
	d, err := in.Open(pd, vk.Features{DisablePipelineCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	size := min(limit, 2*heap)
	b, err := d.NewBuffer(int64(size))
	if err == nil {
		b.Close()
		t.Skipf("%s allocated %d bytes from a %d-byte heap (overcommit)", caps.Name, size, heap)
	}
	var ve *vk.Error
	if !errors.As(err, &ve) {
		t.Fatalf("NewBuffer(%d) = %v, want a *vk.Error", size, err)
	}
	if ve.Call != "vkAllocateMemory" && ve.Call != "vkCreateBuffer" {
		t.Errorf("failed call %q, want vkAllocateMemory", ve.Call)
	}
	wantErr(t, "oversized NewBuffer", err, ve.Call, "VK_ERROR_")
}

func TestDispatchErrors(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	p := matmulPipeline(t, d)
	caps := d.Caps()
	ctx := context.Background()
	a, b, c := newBuffer(t, d, 256), newBuffer(t, d, 256), newBuffer(t, d, 256)
	push := matmulPush(8, 8, 8)
	one := [3]uint32{1, 1, 1}
	try := func(record func(r *vk.Recorder) error) error {
		called := false
		err := d.Run(ctx, func(r *vk.Recorder) error {
			called = true
			return record(r)
		})
		if !called {
			t.Errorf("record function not called")
		}
		return err
	}
	err := try(func(r *vk.Recorder) error { return r.Dispatch(p, one, push, vk.Bind(a), vk.Bind(b)) })
	wantErr(t, "2 bindings", err, "matmul_f32", "2 buffers given", "3 bindings")
	err = try(func(r *vk.Recorder) error {
		return r.Dispatch(p, one, push, vk.Bind(a), vk.Bind(b), vk.Bind(c), vk.Bind(c))
	})
	wantErr(t, "4 bindings", err, "4 buffers given", "3 bindings")
	err = try(func(r *vk.Recorder) error { return r.Dispatch(p, one, push[:8], vk.Bind(a), vk.Bind(b), vk.Bind(c)) })
	wantErr(t, "8-byte push", err, "8 bytes of push constants", "takes 12")
	err = try(func(r *vk.Recorder) error { return r.Dispatch(p, one, nil, vk.Bind(a), vk.Bind(b), vk.Bind(c)) })
	wantErr(t, "no push", err, "0 bytes of push constants")
	for dim := range 3 {
		if caps.MaxWorkgroupCount[dim] == math.MaxUint32 {
			continue
		}
		g := one
		g[dim] = caps.MaxWorkgroupCount[dim] + 1
		err = try(func(r *vk.Recorder) error { return r.Dispatch(p, g, push, vk.Bind(a), vk.Bind(b), vk.Bind(c)) })
		wantErr(t, "too many workgroups", err, "workgroups in dimension", "device allows")
	}
	ranges := []vk.Binding{
		{Buf: a, Offset: 0, Size: 257},
		{Buf: a, Offset: 256},
		{Buf: a, Offset: 272},
		{Buf: a, Offset: -16, Size: 16},
		{Buf: a, Offset: 16, Size: 256},
		{Buf: a, Offset: 16, Size: -1},
		{Buf: a, Offset: math.MaxInt64 - 15, Size: 32},
		{Buf: a, Offset: 16, Size: math.MaxInt64},
	}
	for _, bind := range ranges {
		err = try(func(r *vk.Recorder) error { return r.Dispatch(p, one, push, bind, vk.Bind(b), vk.Bind(c)) })
		wantErr(t, "binding out of range", err, "binding 0", "outside buffer of 256 bytes")
	}
	err = try(func(r *vk.Recorder) error { return r.Dispatch(p, one, push, vk.Bind(a), vk.Binding{}, vk.Bind(c)) })
	wantErr(t, "nil buffer", err, "binding 1 is nil")

	closed, err := d.NewBuffer(256)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	err = try(func(r *vk.Recorder) error { return r.Dispatch(p, one, push, vk.Bind(a), vk.Bind(closed), vk.Bind(c)) })
	if !errors.Is(err, vk.ErrClosed) {
		t.Errorf("Dispatch with a closed buffer = %v, want ErrClosed", err)
	}
	err = try(func(r *vk.Recorder) error { return r.Copy(closed, 0, a, 0, 16) })
	if !errors.Is(err, vk.ErrClosed) {
		t.Errorf("Copy from a closed buffer = %v, want ErrClosed", err)
	}
	err = try(func(r *vk.Recorder) error { return r.Copy(a, 250, b, 0, 16) })
	wantErr(t, "Copy past the end", err, "Copy", "outside buffer")

	// A record error after a good dispatch: nothing is submitted, the error comes back
	// and a, b, c stay usable.
	boom := errors.New("boom")
	err = try(func(r *vk.Recorder) error {
		if err := r.Dispatch(p, one, push, vk.Bind(a), vk.Bind(b), vk.Bind(c)); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("Run returned %v, want the record function's error", err)
	}
	// The device still works after all that.
	if err := try(func(r *vk.Recorder) error { return r.Dispatch(p, one, push, vk.Bind(a), vk.Bind(b), vk.Bind(c)) }); err != nil {
		t.Fatalf("good dispatch after errors: %v", err)
	}
	// An empty dispatch is skipped, not an error.
	if err := try(func(r *vk.Recorder) error {
		return r.Dispatch(p, [3]uint32{0, 1, 1}, push, vk.Bind(a), vk.Bind(b), vk.Bind(c))
	}); err != nil {
		t.Errorf("empty dispatch: %v", err)
	}
}

func TestNewPipelineErrors(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	caps := d.Caps()
	good := matmulDesc(t)
	bad := func(mod func(*vk.PipelineDesc)) error {
		desc := good
		mod(&desc)
		p, err := d.NewPipeline(desc)
		if err == nil {
			p.Close()
		}
		return err
	}
	err := bad(func(p *vk.PipelineDesc) { p.SPIRV = []byte("#version 450\nvoid main() {}\n") })
	wantErr(t, "GLSL source", err, "matmul_f32", "not SPIR-V")
	err = bad(func(p *vk.PipelineDesc) { p.SPIRV = nil })
	wantErr(t, "no code", err, "not SPIR-V (0 bytes)")
	err = bad(func(p *vk.PipelineDesc) { p.SPIRV = good.SPIRV[:len(good.SPIRV)-1] })
	wantErr(t, "odd length", err, "not SPIR-V")
	err = bad(func(p *vk.PipelineDesc) { p.PushSize = 13 })
	wantErr(t, "push 13", err, "13 bytes of push constants")
	err = bad(func(p *vk.PipelineDesc) { p.PushSize = int(caps.MaxPushConstantsSize) + 4 })
	wantErr(t, "push over limit", err, "bytes of push constants")
	err = bad(func(p *vk.PipelineDesc) { p.Bindings = int(caps.MaxStorageBuffers) + 1 })
	wantErr(t, "bindings over limit", err, "storage buffers", "per stage")
	err = bad(func(p *vk.PipelineDesc) { p.Bindings = -1 })
	wantErr(t, "negative bindings", err, "storage buffers")

	// Subgroup sizes the device does not allow: not a power of two, and one past the
	// range (or any, when the size cannot be fixed).
	sizes := []uint32{3, max(caps.MaxSubgroupSize, caps.SubgroupSize) * 2}
	if caps.MinSubgroupSize > 1 {
		sizes = append(sizes, caps.MinSubgroupSize/2)
	}
	for _, s := range sizes {
		err = bad(func(p *vk.PipelineDesc) { p.SubgroupSize = s })
		wantErr(t, "subgroup size", err, "subgroup size", "matmul_f32")
	}
	if !caps.ComputeFullSubgroups {
		err = bad(func(p *vk.PipelineDesc) { p.FullSubgroups = true })
		wantErr(t, "full subgroups", err, "full subgroups")
	}
	// The device still compiles the good one.
	p, err := d.NewPipeline(good)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	p.Close() // twice is fine
}

func TestClosedDevice(t *testing.T) {
	in := vktest.Instance(t)
	pd, err := in.Choose()
	if err != nil {
		t.Fatal(err)
	}
	d, err := in.Open(pd, vk.Features{DisablePipelineCache: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := d.NewBuffer(16); !errors.Is(err, vk.ErrClosed) {
		t.Errorf("NewBuffer after Close = %v, want ErrClosed", err)
	}
	if _, err := d.NewPipeline(matmulDesc(t)); !errors.Is(err, vk.ErrClosed) {
		t.Errorf("NewPipeline after Close = %v, want ErrClosed", err)
	}
	called := false
	err = d.Run(context.Background(), func(*vk.Recorder) error { called = true; return nil })
	if !errors.Is(err, vk.ErrClosed) || called {
		t.Errorf("Run after Close = %v (record called: %v), want ErrClosed", err, called)
	}
	if _, err := d.RunTimed(context.Background(), func(*vk.Recorder) error { return nil }); !errors.Is(err, vk.ErrClosed) {
		t.Errorf("RunTimed after Close = %v, want ErrClosed", err)
	}
}

func TestErrorType(t *testing.T) {
	err := error(&vk.Error{Call: "vkQueueSubmit", Result: -4})
	if got, want := err.Error(), "vk: vkQueueSubmit: VK_ERROR_DEVICE_LOST"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, vk.ErrDeviceLost) {
		t.Errorf("device-lost *vk.Error is not ErrDeviceLost")
	}
	err = &vk.Error{Call: "vkAllocateMemory", Result: -2}
	if errors.Is(err, vk.ErrDeviceLost) || !strings.Contains(err.Error(), "vkAllocateMemory: VK_ERROR_OUT_OF_DEVICE_MEMORY") {
		t.Errorf("out-of-memory error: %v", err)
	}
}
