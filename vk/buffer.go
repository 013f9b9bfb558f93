package vk

/*
#include <string.h>
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"sync"
	"unsafe"

	vulkan "github.com/vulkan-go/vulkan"
)

const (
	memDeviceLocal  = uint32(vulkan.MemoryPropertyDeviceLocalBit)
	memHostVisible  = uint32(vulkan.MemoryPropertyHostVisibleBit)
	memHostCoherent = uint32(vulkan.MemoryPropertyHostCoherentBit)
	memHostCached   = uint32(vulkan.MemoryPropertyHostCachedBit)
)

// Buffer is a storage buffer in device memory. Upload and Download move bytes between
// it and Go memory. A Buffer may be bound by many Runs at once; Close defers the real
// destruction until the last Run that uses it has finished.
type Buffer struct {
	d      *Device
	buf    vulkan.Buffer
	mem    vulkan.DeviceMemory
	size   int64
	mapped unsafe.Pointer // non-nil when the memory is host visible and coherent
	alloc  int64          // bytes of device memory allocated for it (Device.Memory)
	// An application's buffer (WrapBuffer): this Buffer is the range from byte base of
	// it, and Close leaves the VkBuffer and its memory alone.
	base     int64
	borrowed bool
	key      memKey // where the memory cache keeps it once closed

	mu      sync.Mutex
	refs    int  // Runs in flight that bind it
	closing bool // Close was called
	gone    bool // destroyed
}

// NewBuffer allocates a device-local storage buffer of size bytes (at least 1).
func (d *Device) NewBuffer(size int64) (*Buffer, error) {
	if err := d.usable(); err != nil {
		return nil, err
	}
	if size <= 0 {
		return nil, fmt.Errorf("vk: NewBuffer: size %d must be positive", size)
	}
	if max := d.caps.MaxBufferSize; max > 0 && uint64(size) > max {
		return nil, fmt.Errorf("vk: NewBuffer: %d bytes is over the device's maxBufferSize %d", size, max)
	}
	if max := d.caps.MaxAllocationSize; max > 0 && uint64(size) > max {
		return nil, fmt.Errorf("vk: NewBuffer: %d bytes is over the device's maxMemoryAllocationSize %d", size, max)
	}
	// On discrete GPUs host-visible device memory is uncached over PCIe: keep big
	// buffers in plain device memory there. Elsewhere (CPU, integrated) one mapping
	// saves a copy.
	prefer := []uint32{memDeviceLocal | memHostVisible | memHostCoherent, memDeviceLocal, 0}
	if d.caps.Type == DeviceDiscrete {
		prefer = []uint32{memDeviceLocal, 0}
	}
	usage := vulkan.BufferUsageFlags(vulkan.BufferUsageStorageBufferBit | vulkan.BufferUsageTransferSrcBit | vulkan.BufferUsageTransferDstBit)
	return d.newBuffer(size, usage, prefer, memPlain)
}

// newHostBuffer allocates host-visible, coherent memory for staging.
func (d *Device) newHostBuffer(size int64) (*Buffer, error) {
	usage := vulkan.BufferUsageFlags(vulkan.BufferUsageTransferSrcBit | vulkan.BufferUsageTransferDstBit)
	return d.newBuffer(size, usage, []uint32{memHostVisible | memHostCoherent | memHostCached, memHostVisible | memHostCoherent}, memStaging)
}

func (d *Device) newBuffer(size int64, usage vulkan.BufferUsageFlags, prefer []uint32, kind memKind) (*Buffer, error) {
	b := &Buffer{d: d, size: size, key: memKey{size: size, kind: kind}}
	if m, ok := d.memc.take(b.key); ok {
		b.buf, b.mem, b.alloc, b.mapped = m.buf, m.mem, m.alloc, m.mapped
		d.mem.add(b.alloc)
		return b, nil
	}
	info := vulkan.BufferCreateInfo{
		SType:       vulkan.StructureTypeBufferCreateInfo,
		Size:        vulkan.DeviceSize(size),
		Usage:       usage,
		SharingMode: vulkan.SharingModeExclusive,
	}
	var buf vulkan.Buffer
	r := vulkan.CreateBuffer(d.dev, &info, nil, &buf)
	b.buf = buf
	info.Free()
	if err := check("vkCreateBuffer", int32(r)); err != nil {
		return nil, d.noteErr(err)
	}
	var req vulkan.MemoryRequirements
	vulkan.GetBufferMemoryRequirements(d.dev, b.buf, &req)
	req.Deref()
	req.Free()
	typ, flags, ok := d.memoryType(req.MemoryTypeBits, prefer...)
	if !ok {
		vulkan.DestroyBuffer(d.dev, b.buf, nil)
		return nil, fmt.Errorf("vk: NewBuffer: no suitable memory type for %d bytes", size)
	}
	alloc := vulkan.MemoryAllocateInfo{
		SType:           vulkan.StructureTypeMemoryAllocateInfo,
		AllocationSize:  req.Size,
		MemoryTypeIndex: typ,
	}
	var mem vulkan.DeviceMemory
	r = vulkan.AllocateMemory(d.dev, &alloc, nil, &mem)
	if r != vulkan.Success {
		// Out of memory, perhaps only because of what the cache keeps: free it, try again.
		if drop := d.memc.empty(); len(drop) > 0 {
			d.freeCached(drop)
			r = vulkan.AllocateMemory(d.dev, &alloc, nil, &mem)
		}
	}
	b.mem = mem
	alloc.Free()
	if err := check("vkAllocateMemory", int32(r)); err != nil {
		vulkan.DestroyBuffer(d.dev, b.buf, nil)
		return nil, d.noteErr(fmt.Errorf("%w (%d bytes)", err, size))
	}
	b.alloc = int64(req.Size)
	d.mem.add(b.alloc)
	if err := check("vkBindBufferMemory", int32(vulkan.BindBufferMemory(d.dev, b.buf, b.mem, 0))); err != nil {
		b.free()
		return nil, d.noteErr(err)
	}
	if flags&(memHostVisible|memHostCoherent) == memHostVisible|memHostCoherent {
		var p unsafe.Pointer
		if err := check("vkMapMemory", int32(vulkan.MapMemory(d.dev, b.mem, 0, vulkan.DeviceSize(vulkan.WholeSize), 0, &p))); err != nil {
			b.free()
			return nil, d.noteErr(err)
		}
		b.mapped = p
	}
	return b, nil
}

// Size is the buffer's length in bytes.
func (b *Buffer) Size() int64 { return b.size }

// Device returns the device the buffer lives on.
func (b *Buffer) Device() *Device { return b.d }

func (b *Buffer) handle() C.dv_handle { return C.dv_handle(unsafe.Pointer(b.buf)) }

// acquire marks the buffer as used by a Run in flight.
func (b *Buffer) acquire() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing {
		return fmt.Errorf("%w: buffer", ErrClosed)
	}
	b.refs++
	return nil
}

func (b *Buffer) release() {
	b.mu.Lock()
	b.refs--
	last := b.refs == 0 && b.closing && !b.gone
	if last {
		b.gone = true
	}
	b.mu.Unlock()
	if last {
		b.destroy()
	}
}

// Close frees the buffer once no Run uses it. It is safe to call more than once.
func (b *Buffer) Close() error {
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		return nil
	}
	b.closing = true
	now := b.refs == 0
	if now {
		b.gone = true
	}
	b.mu.Unlock()
	if now {
		b.destroy()
	}
	return nil
}

func (b *Buffer) destroy() {
	if b.borrowed {
		return
	}
	d := b.d
	// Kept for NewBuffer (the GPU is done with it: no Run binds it any more), unless the
	// device is closing (Close then empties the cache: nothing may join it after).
	d.mu.Lock()
	open := !d.closed
	var drop []cachedMem
	if open {
		drop = d.memc.put(b.key, cachedMem{buf: b.buf, mem: b.mem, alloc: b.alloc, mapped: b.mapped})
	}
	d.mu.Unlock()
	if !open {
		b.free()
		return
	}
	d.mem.add(-b.alloc)
	b.mapped = nil
	d.freeCached(drop)
}

// free destroys the buffer and its memory.
func (b *Buffer) free() {
	if b.mapped != nil {
		vulkan.UnmapMemory(b.d.dev, b.mem)
		b.mapped = nil
	}
	vulkan.DestroyBuffer(b.d.dev, b.buf, nil)
	vulkan.FreeMemory(b.d.dev, b.mem, nil)
	b.d.mem.add(-b.alloc)
}

// MemoryUse is the device memory a Device's buffers hold, in bytes: now, and the most
// at any time since the device was opened or ResetPeakMemory (what the driver reserves
// besides, e.g. for pipelines and command buffers, is not counted).
//
// Cached is the memory of closed buffers the device keeps for NewBuffer to reuse
// (SetMemoryCache), counted in neither Live nor Peak.
type MemoryUse struct{ Live, Peak, Cached int64 }

// memoryUse counts a device's buffer memory.
type memoryUse struct {
	mu         sync.Mutex
	live, peak int64
}

func (m *memoryUse) add(n int64) {
	m.mu.Lock()
	m.live += n
	m.peak = max(m.peak, m.live)
	m.mu.Unlock()
}

// Memory reports the device memory the device's buffers hold.
func (d *Device) Memory() MemoryUse {
	d.mem.mu.Lock()
	defer d.mem.mu.Unlock()
	return MemoryUse{Live: d.mem.live, Peak: d.mem.peak, Cached: d.memc.cached()}
}

// ResetPeakMemory starts the peak of Memory again from the memory held now.
func (d *Device) ResetPeakMemory() {
	d.mem.mu.Lock()
	d.mem.peak = d.mem.live
	d.mem.mu.Unlock()
}

func (b *Buffer) checkRange(op string, off int64, n int) error {
	// off > b.size first: off+n could overflow int64 and pass.
	if off < 0 || n < 0 || off > b.size || int64(n) > b.size-off {
		return fmt.Errorf("vk: %s: range [%d, %d) outside buffer of %d bytes", op, off, off+int64(n), b.size)
	}
	return nil
}

// Upload copies data into the buffer at byte offset off and waits until it is there.
func (b *Buffer) Upload(ctx context.Context, off int64, data []byte) error {
	if err := b.checkRange("Upload", off, len(data)); err != nil {
		return err
	}
	if len(data) == 0 {
		return nil
	}
	if err := b.acquire(); err != nil {
		return err
	}
	defer b.release()
	if b.mapped != nil {
		C.memcpy(unsafe.Add(b.mapped, off), unsafe.Pointer(&data[0]), C.size_t(len(data)))
		return nil
	}
	return b.d.stage(ctx, len(data), func(staging *Buffer, done int, n int) func(*Recorder) error {
		C.memcpy(staging.mapped, unsafe.Pointer(&data[done]), C.size_t(n))
		return func(r *Recorder) error { return r.Copy(staging, 0, b, off+int64(done), int64(n)) }
	}, nil)
}

// Download copies len(out) bytes from byte offset off of the buffer into out.
func (b *Buffer) Download(ctx context.Context, off int64, out []byte) error {
	if err := b.checkRange("Download", off, len(out)); err != nil {
		return err
	}
	if len(out) == 0 {
		return nil
	}
	if err := b.acquire(); err != nil {
		return err
	}
	defer b.release()
	if b.mapped != nil {
		C.memcpy(unsafe.Pointer(&out[0]), unsafe.Add(b.mapped, off), C.size_t(len(out)))
		return nil
	}
	return b.d.stage(ctx, len(out), func(staging *Buffer, done int, n int) func(*Recorder) error {
		return func(r *Recorder) error {
			if err := r.Copy(b, off+int64(done), staging, 0, int64(n)); err != nil {
				return err
			}
			r.hostBarrier()
			return nil
		}
	}, func(staging *Buffer, done int, n int) {
		C.memcpy(unsafe.Pointer(&out[done]), staging.mapped, C.size_t(n))
	})
}

// stagingChunk bounds the host memory a transfer holds at once.
const stagingChunk = 32 << 20

// stage moves total bytes through a staging buffer in chunks: before(chunk) fills it and
// returns what to record; after(chunk) reads it back once the GPU is done.
func (d *Device) stage(ctx context.Context, total int,
	before func(staging *Buffer, done, n int) func(*Recorder) error,
	after func(staging *Buffer, done, n int)) error {
	size := min(total, stagingChunk)
	staging, err := d.newHostBuffer(int64(size))
	if err != nil {
		return err
	}
	defer staging.Close()
	for done := 0; done < total; done += size {
		n := min(size, total-done)
		rec := before(staging, done, n)
		if err := d.Run(ctx, rec); err != nil {
			return err
		}
		if after != nil {
			after(staging, done, n)
		}
	}
	return nil
}

// NewMappedBuffer allocates a storage buffer in host-visible, coherent memory (device
// local too where the device has such memory), so that Upload is a plain copy with no
// submission. Meant for small parameter blocks that a recorded Program reads: write them
// with Upload between submissions.
func (d *Device) NewMappedBuffer(size int64) (*Buffer, error) {
	if err := d.usable(); err != nil {
		return nil, err
	}
	if size <= 0 {
		return nil, fmt.Errorf("vk: NewMappedBuffer: size %d must be positive", size)
	}
	usage := vulkan.BufferUsageFlags(vulkan.BufferUsageStorageBufferBit | vulkan.BufferUsageTransferSrcBit | vulkan.BufferUsageTransferDstBit)
	b, err := d.newBuffer(size, usage, []uint32{memDeviceLocal | memHostVisible | memHostCoherent, memHostVisible | memHostCoherent}, memMapped)
	if err != nil {
		return nil, err
	}
	if b.mapped == nil {
		b.Close()
		return nil, fmt.Errorf("vk: NewMappedBuffer: no host-visible, coherent memory for %d bytes", size)
	}
	return b, nil
}
