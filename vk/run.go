package vk

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"time"
	"unsafe"

	vulkan "github.com/vulkan-go/vulkan"
)

// runContext is what one Run records into: a command pool and buffer, a fence, descriptor
// pools and a timestamp query pool. A Run takes one from the device's free list, so no
// two goroutines ever record into the same pool.
type runContext struct {
	d      *Device
	pool   vulkan.CommandPool
	cmd    vulkan.CommandBuffer
	fence  vulkan.Fence
	dpools []vulkan.DescriptorPool
	dnext  int // index of the descriptor pool to allocate from
	query  vulkan.QueryPool
	bufs   []*Buffer // bound by the commands recorded, released when the Run ends
}

const (
	setsPerPool    = 256
	maxTimestamps  = 128
	fenceWaitSlice = 20 * time.Millisecond
)

func (d *Device) newRunContext() (*runContext, error) {
	rc := &runContext{d: d}
	pi := vulkan.CommandPoolCreateInfo{
		SType:            vulkan.StructureTypeCommandPoolCreateInfo,
		Flags:            vulkan.CommandPoolCreateFlags(vulkan.CommandPoolCreateTransientBit),
		QueueFamilyIndex: d.family,
	}
	var pool vulkan.CommandPool
	r := vulkan.CreateCommandPool(d.dev, &pi, nil, &pool)
	rc.pool = pool
	pi.Free()
	if err := check("vkCreateCommandPool", int32(r)); err != nil {
		return nil, err
	}
	ai := vulkan.CommandBufferAllocateInfo{
		SType:              vulkan.StructureTypeCommandBufferAllocateInfo,
		CommandPool:        rc.pool,
		Level:              vulkan.CommandBufferLevelPrimary,
		CommandBufferCount: 1,
	}
	cmds := make([]vulkan.CommandBuffer, 1)
	r = vulkan.AllocateCommandBuffers(d.dev, &ai, cmds)
	ai.Free()
	if err := check("vkAllocateCommandBuffers", int32(r)); err != nil {
		rc.destroy()
		return nil, err
	}
	rc.cmd = cmds[0]
	fi := vulkan.FenceCreateInfo{SType: vulkan.StructureTypeFenceCreateInfo}
	var fence vulkan.Fence
	r = vulkan.CreateFence(d.dev, &fi, nil, &fence)
	rc.fence = fence
	fi.Free()
	if err := check("vkCreateFence", int32(r)); err != nil {
		rc.destroy()
		return nil, err
	}
	if d.caps.Timestamps() {
		qi := vulkan.QueryPoolCreateInfo{
			SType:      vulkan.StructureTypeQueryPoolCreateInfo,
			QueryType:  vulkan.QueryTypeTimestamp,
			QueryCount: maxTimestamps,
		}
		var query vulkan.QueryPool
		r = vulkan.CreateQueryPool(d.dev, &qi, nil, &query)
		rc.query = query
		qi.Free()
		if err := check("vkCreateQueryPool", int32(r)); err != nil {
			rc.destroy()
			return nil, err
		}
	}
	return rc, nil
}

func (rc *runContext) destroy() {
	dev := rc.d.dev
	for _, p := range rc.dpools {
		vulkan.DestroyDescriptorPool(dev, p, nil)
	}
	if rc.query != vulkan.NullQueryPool {
		vulkan.DestroyQueryPool(dev, rc.query, nil)
	}
	if rc.fence != vulkan.NullFence {
		vulkan.DestroyFence(dev, rc.fence, nil)
	}
	if rc.pool != vulkan.NullCommandPool {
		vulkan.DestroyCommandPool(dev, rc.pool, nil)
	}
}

// descriptorSet allocates a set for layout, adding a pool when the current ones are full.
func (rc *runContext) descriptorSet(layout vulkan.DescriptorSetLayout, bindings int) (C.dv_handle, error) {
	for {
		if rc.dnext == len(rc.dpools) {
			sizes := []vulkan.DescriptorPoolSize{{Type: vulkan.DescriptorTypeStorageBuffer, DescriptorCount: setsPerPool * 16}}
			info := vulkan.DescriptorPoolCreateInfo{
				SType:         vulkan.StructureTypeDescriptorPoolCreateInfo,
				MaxSets:       setsPerPool,
				PoolSizeCount: 1,
				PPoolSizes:    sizes,
			}
			var p vulkan.DescriptorPool
			r := vulkan.CreateDescriptorPool(rc.d.dev, &info, nil, &p)
			info.Free()
			if err := check("vkCreateDescriptorPool", int32(r)); err != nil {
				return nil, err
			}
			rc.dpools = append(rc.dpools, p)
		}
		var set C.dv_handle
		r := C.dv_alloc_descriptor_set(rc.d.in.handle, rc.d.handle, C.dv_handle(unsafe.Pointer(rc.dpools[rc.dnext])),
			C.dv_handle(unsafe.Pointer(layout)), &set)
		switch {
		case r == 0:
			return set, nil
		case int32(r) == int32(vulkan.ErrorOutOfPoolMemory) || int32(r) == int32(vulkan.ErrorFragmentedPool):
			rc.dnext++ // this pool is full: move to the next (or a new) one
		default:
			return nil, check("vkAllocateDescriptorSets", int32(r))
		}
	}
}

// reset makes the context ready for the next Run; the GPU must be done with it.
func (rc *runContext) reset() error {
	for _, b := range rc.bufs {
		b.release()
	}
	rc.bufs = rc.bufs[:0]
	for _, p := range rc.dpools[:min(rc.dnext+1, len(rc.dpools))] {
		if err := check("vkResetDescriptorPool", int32(vulkan.ResetDescriptorPool(rc.d.dev, p, 0))); err != nil {
			return err
		}
	}
	rc.dnext = 0
	if err := check("vkResetCommandPool", int32(vulkan.ResetCommandPool(rc.d.dev, rc.pool, 0))); err != nil {
		return err
	}
	return check("vkResetFences", int32(vulkan.ResetFences(rc.d.dev, 1, []vulkan.Fence{rc.fence})))
}

func (d *Device) takeContext() (*runContext, error) {
	d.mu.Lock()
	if n := len(d.idle); n > 0 {
		rc := d.idle[n-1]
		d.idle = d.idle[:n-1]
		d.mu.Unlock()
		return rc, nil
	}
	d.mu.Unlock()
	return d.newRunContext()
}

// giveBack returns a finished context to the free list, or destroys it when it cannot be
// reset or the device is closing.
func (d *Device) giveBack(rc *runContext) {
	if err := rc.reset(); err != nil {
		d.noteErr(err)
		rc.destroy()
		return
	}
	d.mu.Lock()
	if !d.closed && len(d.idle) < 64 {
		d.idle = append(d.idle, rc)
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()
	rc.destroy()
}

// Timestamp is a GPU time taken between recorded commands.
type Timestamp struct {
	Label string
	Nanos float64 // since the first timestamp of the Run
}

// Recorder records the commands of one Run. It is only valid inside the function given
// to Run and must not be used from other goroutines.
type Recorder struct {
	rc     *runContext
	labels []string
}

// Binding is a byte range of a buffer bound to one descriptor of a pipeline.
type Binding struct {
	Buf    *Buffer
	Offset int64
	Size   int64 // 0 means to the end of the buffer
}

// Bind binds a whole buffer.
func Bind(b *Buffer) Binding { return Binding{Buf: b} }

func (r *Recorder) retain(b *Buffer) error {
	if b == nil {
		return fmt.Errorf("vk: nil buffer")
	}
	if b.d != r.rc.d {
		return fmt.Errorf("vk: buffer belongs to another device")
	}
	if err := b.acquire(); err != nil {
		return err
	}
	r.rc.bufs = append(r.rc.bufs, b)
	return nil
}

// Dispatch records one dispatch of p over groups workgroups with the given push
// constants and buffers (binding i of set 0 is bindings[i]). Checks every limit first.
func (r *Recorder) Dispatch(p *Pipeline, groups [3]uint32, push []byte, bindings ...Binding) error {
	caps := &r.rc.d.caps
	if p.d != r.rc.d {
		return fmt.Errorf("vk: Dispatch %s: pipeline belongs to another device", p.name)
	}
	if len(bindings) != p.bindings {
		return fmt.Errorf("vk: Dispatch %s: %d buffers given, pipeline has %d bindings", p.name, len(bindings), p.bindings)
	}
	if len(push) != p.pushSize {
		return fmt.Errorf("vk: Dispatch %s: %d bytes of push constants, pipeline takes %d", p.name, len(push), p.pushSize)
	}
	for i, g := range groups {
		if g == 0 {
			return nil // an empty dispatch does nothing; skip it as Vulkan would
		}
		if g > caps.MaxWorkgroupCount[i] {
			return fmt.Errorf("vk: Dispatch %s: %d workgroups in dimension %d, device allows %d", p.name, g, i, caps.MaxWorkgroupCount[i])
		}
	}
	bufs := make([]C.dv_handle, len(bindings))
	offs := make([]C.uint64_t, len(bindings))
	sizes := make([]C.uint64_t, len(bindings))
	for i, b := range bindings {
		if b.Buf == nil {
			return fmt.Errorf("vk: Dispatch %s: binding %d is nil", p.name, i)
		}
		size := b.Size
		if size == 0 {
			size = b.Buf.size - b.Offset
		}
		if b.Offset < 0 || size <= 0 || b.Offset > b.Buf.size || size > b.Buf.size-b.Offset { // no overflow
			return fmt.Errorf("vk: Dispatch %s: binding %d range [%d, %d) outside buffer of %d bytes", p.name, i, b.Offset, b.Offset+size, b.Buf.size)
		}
		if a := int64(caps.MinStorageBufferAlign); a > 1 && b.Offset%a != 0 {
			return fmt.Errorf("vk: Dispatch %s: binding %d offset %d not a multiple of minStorageBufferOffsetAlignment %d", p.name, i, b.Offset, a)
		}
		if uint64(size) > uint64(caps.MaxStorageBufferRange) {
			return fmt.Errorf("vk: Dispatch %s: binding %d spans %d bytes, over the device's maxStorageBufferRange %d", p.name, i, size, caps.MaxStorageBufferRange)
		}
		bufs[i], offs[i], sizes[i] = b.Buf.handle(), C.uint64_t(b.Buf.base+b.Offset), C.uint64_t(size)
	}
	for _, b := range bindings {
		if err := r.retain(b.Buf); err != nil {
			return fmt.Errorf("vk: Dispatch %s: %w", p.name, err)
		}
	}
	if err := r.retainPipeline(p); err != nil {
		return err
	}
	d := r.rc.d
	var set C.dv_handle
	if p.bindings > 0 {
		var err error
		if set, err = r.rc.descriptorSet(p.dsl, p.bindings); err != nil {
			return err
		}
		C.dv_write_storage_buffers(d.in.handle, d.handle, set, C.uint32_t(len(bufs)), &bufs[0], &offs[0], &sizes[0])
	}
	vulkan.CmdBindPipeline(r.rc.cmd, vulkan.PipelineBindPointCompute, p.pipeline)
	if p.bindings > 0 {
		sets := []vulkan.DescriptorSet{vulkan.DescriptorSet(unsafe.Pointer(set))}
		vulkan.CmdBindDescriptorSets(r.rc.cmd, vulkan.PipelineBindPointCompute, p.layout, 0, 1, sets, 0, nil)
	}
	if len(push) > 0 {
		vulkan.CmdPushConstants(r.rc.cmd, p.layout, vulkan.ShaderStageFlags(vulkan.ShaderStageComputeBit), 0, uint32(len(push)), unsafe.Pointer(&push[0]))
	}
	vulkan.CmdDispatch(r.rc.cmd, groups[0], groups[1], groups[2])
	return nil
}

// Barrier makes all earlier writes (shaders and copies) visible to later commands.
func (r *Recorder) Barrier() {
	C.dv_cmd_barrier(r.rc.d.in.handle, C.dv_handle(unsafe.Pointer(r.rc.cmd)), 0)
}

func (r *Recorder) hostBarrier() {
	C.dv_cmd_barrier(r.rc.d.in.handle, C.dv_handle(unsafe.Pointer(r.rc.cmd)), 1)
}

// Copy records a copy of n bytes from src at srcOff to dst at dstOff.
func (r *Recorder) Copy(src *Buffer, srcOff int64, dst *Buffer, dstOff int64, n int64) error {
	if err := src.checkRange("Copy", srcOff, int(n)); err != nil {
		return err
	}
	if err := dst.checkRange("Copy", dstOff, int(n)); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if err := r.retain(src); err != nil {
		return err
	}
	if err := r.retain(dst); err != nil {
		return err
	}
	region := []vulkan.BufferCopy{{SrcOffset: vulkan.DeviceSize(src.base + srcOff), DstOffset: vulkan.DeviceSize(dst.base + dstOff), Size: vulkan.DeviceSize(n)}}
	vulkan.CmdCopyBuffer(r.rc.cmd, src.buf, dst.buf, 1, region)
	return nil
}

// Timestamp records the GPU time once all earlier commands are done. RunTimed returns
// the times; on devices without timestamps it records nothing.
func (r *Recorder) Timestamp(label string) error {
	if r.rc.query == vulkan.NullQueryPool {
		return nil
	}
	if len(r.labels) == maxTimestamps {
		return fmt.Errorf("vk: more than %d timestamps in one Run", maxTimestamps)
	}
	vulkan.CmdWriteTimestamp(r.rc.cmd, vulkan.PipelineStageBottomOfPipeBit, r.rc.query, uint32(len(r.labels)))
	r.labels = append(r.labels, label)
	return nil
}

// Run records commands with record, submits them and waits for them to finish. If ctx
// ends first, Run returns ctx.Err() at once; the GPU work still completes in the
// background and every buffer it uses stays alive until then.
func (d *Device) Run(ctx context.Context, record func(*Recorder) error) error {
	_, err := d.run(ctx, record, false)
	return err
}

// RunTimed is Run that also returns the timestamps recorded with Recorder.Timestamp.
func (d *Device) RunTimed(ctx context.Context, record func(*Recorder) error) ([]Timestamp, error) {
	return d.run(ctx, record, true)
}

func (d *Device) run(ctx context.Context, record func(*Recorder) error, timed bool) ([]Timestamp, error) {
	if err := d.usable(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rc, err := d.takeContext()
	if err != nil {
		return nil, d.noteErr(err)
	}
	rec, recErr := d.recordInto(rc, vulkan.CommandBufferUsageFlags(vulkan.CommandBufferUsageOneTimeSubmitBit), record)
	if recErr != nil {
		d.giveBack(rc)
		return nil, recErr
	}

	d.inflight.Add(1)
	q := d.queueLocker()
	q.Lock()
	r2 := C.dv_queue_submit(d.in.handle, d.qhandle, C.dv_handle(unsafe.Pointer(rc.cmd)), C.dv_handle(unsafe.Pointer(rc.fence)))
	q.Unlock()
	if err := check("vkQueueSubmit", int32(r2)); err != nil {
		d.inflight.Done()
		d.giveBack(rc)
		return nil, d.noteErr(err)
	}
	if err := d.wait(ctx, rc); err != nil {
		return nil, err
	}
	defer func() {
		d.giveBack(rc)
		d.inflight.Done()
	}()
	if !timed || len(rec.labels) == 0 {
		return nil, nil
	}
	return rec.timestamps()
}

// recordInto begins rc's command buffer with flags, resets its timestamps, records with
// record and ends it. On an error the caller recycles or destroys rc.
func (d *Device) recordInto(rc *runContext, flags vulkan.CommandBufferUsageFlags, record func(*Recorder) error) (*Recorder, error) {
	rec := &Recorder{rc: rc}
	bi := vulkan.CommandBufferBeginInfo{SType: vulkan.StructureTypeCommandBufferBeginInfo, Flags: flags}
	r := vulkan.BeginCommandBuffer(rc.cmd, &bi)
	bi.Free()
	if err := check("vkBeginCommandBuffer", int32(r)); err != nil {
		return nil, d.noteErr(err)
	}
	if rc.query != vulkan.NullQueryPool {
		vulkan.CmdResetQueryPool(rc.cmd, rc.query, 0, maxTimestamps)
	}
	recErr := record(rec)
	if err := check("vkEndCommandBuffer", int32(vulkan.EndCommandBuffer(rc.cmd))); err != nil && recErr == nil {
		recErr = d.noteErr(err)
	}
	return rec, recErr
}

// wait blocks until rc's fence signals or ctx ends. On ctx's end the context is handed to
// a goroutine that waits for the GPU before recycling it.
func (d *Device) wait(ctx context.Context, rc *runContext) error {
	fences := []vulkan.Fence{rc.fence}
	for {
		r := vulkan.WaitForFences(d.dev, 1, fences, vulkan.True, uint64(fenceWaitSlice))
		if r == vulkan.Success {
			return nil
		}
		if r != vulkan.Timeout {
			err := d.noteErr(check("vkWaitForFences", int32(r)))
			d.inflight.Done() // the context is not reused: the device is gone
			return err
		}
		select {
		case <-ctx.Done():
			go func() {
				for {
					r := vulkan.WaitForFences(d.dev, 1, fences, vulkan.True, uint64(time.Second))
					if r == vulkan.Success {
						d.giveBack(rc)
						break
					}
					if r != vulkan.Timeout {
						d.noteErr(check("vkWaitForFences", int32(r)))
						break
					}
				}
				d.inflight.Done()
			}()
			return ctx.Err()
		default:
		}
	}
}

func (r *Recorder) timestamps() ([]Timestamp, error) {
	n := len(r.labels)
	raw := make([]uint64, n)
	res := vulkan.GetQueryPoolResults(r.rc.d.dev, r.rc.query, 0, uint32(n), uint(8*n), unsafe.Pointer(&raw[0]), 8,
		vulkan.QueryResultFlags(vulkan.QueryResult64Bit|vulkan.QueryResultWaitBit))
	if err := check("vkGetQueryPoolResults", int32(res)); err != nil {
		return nil, err
	}
	caps := &r.rc.d.caps
	mask := uint64(1)<<caps.TimestampBits - 1
	if caps.TimestampBits >= 64 {
		mask = ^uint64(0)
	}
	out := make([]Timestamp, n)
	for i := range raw {
		ticks := (raw[i] - raw[0]) & mask
		out[i] = Timestamp{Label: r.labels[i], Nanos: float64(ticks) * caps.TimestampPeriod}
	}
	return out, nil
}

// Update records a write of data (at most 65536 bytes, a multiple of 4) into b at byte
// offset off (a multiple of 4), ordered before later commands by a Barrier. It is the
// cheap way to hand a kernel its parameters inside the same submission.
func (r *Recorder) Update(b *Buffer, off int64, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if len(data)%4 != 0 || off%4 != 0 || len(data) > 65536 {
		return fmt.Errorf("vk: Update: %d bytes at offset %d (need multiples of 4, at most 65536)", len(data), off)
	}
	if err := b.checkRange("Update", off, len(data)); err != nil {
		return err
	}
	if err := r.retain(b); err != nil {
		return err
	}
	// vkCmdUpdateBuffer copies the data into the command buffer during the call.
	vulkan.CmdUpdateBuffer(r.rc.cmd, b.buf, vulkan.DeviceSize(b.base+off), vulkan.DeviceSize(len(data)), (*uint32)(unsafe.Pointer(&data[0])))
	return nil
}

// Fill records setting n bytes of b from off (both multiples of 4) to the 32-bit value v.
func (r *Recorder) Fill(b *Buffer, off, n int64, v uint32) error {
	if n == 0 {
		return nil
	}
	if n%4 != 0 || off%4 != 0 {
		return fmt.Errorf("vk: Fill: %d bytes at offset %d (need multiples of 4)", n, off)
	}
	if err := b.checkRange("Fill", off, int(n)); err != nil {
		return err
	}
	if err := r.retain(b); err != nil {
		return err
	}
	vulkan.CmdFillBuffer(r.rc.cmd, b.buf, vulkan.DeviceSize(b.base+off), vulkan.DeviceSize(n), v)
	return nil
}
