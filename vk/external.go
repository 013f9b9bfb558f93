package vk

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"sync"
	"time"
	"unsafe"

	vulkan "github.com/vulkan-go/vulkan"
)

// WrapBuffer makes the range [offset, offset+size) of the application's VkBuffer a
// Buffer that kernels bind in place (no copy). The VkBuffer must live on this device,
// have been created with VK_BUFFER_USAGE_STORAGE_BUFFER_BIT (and TRANSFER_SRC/DST for
// Upload and Download, which then go through a staging copy), and outlive the Buffer
// and every submission or recording that binds it. offset must be a multiple of the
// device's minStorageBufferOffsetAlignment. Close never destroys the VkBuffer.
func (d *Device) WrapBuffer(handle uint64, offset, size int64) (*Buffer, error) {
	if err := d.usable(); err != nil {
		return nil, err
	}
	if handle == 0 {
		return nil, fmt.Errorf("vk: WrapBuffer: the buffer handle is zero")
	}
	if offset < 0 || size <= 0 {
		return nil, fmt.Errorf("vk: WrapBuffer: range [%d, %d) is empty or negative", offset, offset+size)
	}
	if a := int64(d.caps.MinStorageBufferAlign); a > 1 && offset%a != 0 {
		return nil, fmt.Errorf("vk: WrapBuffer: offset %d is not a multiple of minStorageBufferOffsetAlignment %d", offset, a)
	}
	return &Buffer{d: d, buf: vulkan.Buffer(unsafe.Pointer(handleOf(handle))), size: size, base: offset, borrowed: true}, nil
}

// Vulkan pipeline stage and access flags for Visibility.
const (
	StageTopOfPipe      = 0x1
	StageDrawIndirect   = 0x2
	StageVertexInput    = 0x4
	StageVertexShader   = 0x8
	StageFragmentShader = 0x80
	StageComputeShader  = 0x800
	StageTransfer       = 0x1000
	StageBottomOfPipe   = 0x2000
	StageHost           = 0x4000
	StageAllCommands    = 0x10000

	AccessIndirectCommandRead  = 0x1
	AccessIndexRead            = 0x2
	AccessVertexAttributeRead  = 0x4
	AccessUniformRead          = 0x8
	AccessShaderRead           = 0x20
	AccessShaderWrite          = 0x40
	AccessColorAttachmentWrite = 0x100
	AccessTransferRead         = 0x800
	AccessTransferWrite        = 0x1000
	AccessHostRead             = 0x2000
	AccessHostWrite            = 0x4000
	AccessMemoryRead           = 0x8000
	AccessMemoryWrite          = 0x10000
)

// Visibility is the pipeline stages and accesses on the far side of a barrier: the
// application's commands that read what dmavk wrote (or wrote what dmavk reads).
type Visibility struct {
	Stage  uint32 // VkPipelineStageFlags
	Access uint32 // VkAccessFlags
}

// Common Visibility values.
var (
	ForComputeShader = Visibility{StageComputeShader, AccessShaderRead | AccessShaderWrite}
	ForVertexInput   = Visibility{StageVertexInput, AccessVertexAttributeRead | AccessIndexRead}
	ForVertexShader  = Visibility{StageVertexShader, AccessShaderRead | AccessUniformRead}
	ForFragment      = Visibility{StageFragmentShader, AccessShaderRead | AccessUniformRead}
	ForTransfer      = Visibility{StageTransfer, AccessTransferRead | AccessTransferWrite}
	ForIndirect      = Visibility{StageDrawIndirect, AccessIndirectCommandRead}
	ForHost          = Visibility{StageHost, AccessHostRead}
)

// dmavk's own commands: compute shaders and transfers.
const (
	ownStages = StageComputeShader | StageTransfer
	ownWrites = AccessShaderWrite | AccessTransferWrite
	ownAccess = AccessShaderRead | AccessShaderWrite | AccessTransferRead | AccessTransferWrite
)

// BarrierTo makes every earlier write of dmavk's commands (compute shaders, copies,
// fills) visible to the later commands v names, e.g. ForVertexInput before a draw that
// fetches vertices from a result.
func (r *Recorder) BarrierTo(v Visibility) {
	C.dv_cmd_barrier_masks(r.rc.d.in.handle, C.dv_handle(unsafe.Pointer(r.rc.cmd)), ownStages, ownWrites, C.uint32_t(v.Stage), C.uint32_t(v.Access))
}

// BarrierFrom makes earlier writes of the application's commands that v names (e.g.
// {StageComputeShader, AccessShaderWrite}) visible to dmavk's later commands, and orders
// those commands after the application's earlier reads.
func (r *Recorder) BarrierFrom(v Visibility) {
	C.dv_cmd_barrier_masks(r.rc.d.in.handle, C.dv_handle(unsafe.Pointer(r.rc.cmd)), C.uint32_t(v.Stage), C.uint32_t(v.Access), ownStages, ownAccess)
}

// External is dmavk's share of a command buffer the application owns: the descriptor
// sets its commands use and the buffers they bind. Recorded commands reference them
// until the GPU has executed the command buffer for the last time, so the application
// calls Release only after that (its fence has signalled, or vkQueueWaitIdle returned).
// Release frees only dmavk's objects; the command buffer stays the application's to
// reset or free. Device.Close fails while Externals are not released.
type External struct {
	mu    sync.Mutex
	rc    *runContext
	pipes []*Pipeline
}

// externals maps the run contexts of External recordings to them, so that a Dispatch
// there keeps its pipeline alive until Release.
var externals sync.Map // *runContext -> *External

// retainPipeline keeps p alive while an External recording uses it (a Run or Program
// needs nothing: Pipeline.Close waits for them).
func (r *Recorder) retainPipeline(p *Pipeline) error {
	e, ok := externals.Load(r.rc)
	if !ok {
		return nil
	}
	p.extMu.Lock()
	defer p.extMu.Unlock()
	if p.closing {
		return fmt.Errorf("vk: Dispatch %s: %w: pipeline", p.name, ErrClosed)
	}
	p.extRefs++
	ext := e.(*External)
	ext.pipes = append(ext.pipes, p)
	return nil
}

// deferClose marks p closing and reports whether recordings still use it (the last
// Release then destroys it).
func (p *Pipeline) deferClose() bool {
	p.extMu.Lock()
	defer p.extMu.Unlock()
	p.closing = true
	return p.extRefs > 0
}

func (p *Pipeline) releaseExternal() {
	p.extMu.Lock()
	p.extRefs--
	last := p.extRefs == 0 && p.closing
	p.extMu.Unlock()
	if last {
		p.destroy()
	}
}

// RecordExternal records commands with record into the application's command buffer
// cmd (a VkCommandBuffer in the recording state, outside a render pass, from a pool
// of the device's queue family). Nothing is begun, ended or submitted: the
// application does that. The commands start with no barrier: use BarrierFrom first
// if the application's earlier commands wrote what they read, and BarrierTo last so
// that its later commands see the results.
func (d *Device) RecordExternal(cmd uintptr, record func(*Recorder) error) (*External, error) {
	if err := d.usable(); err != nil {
		return nil, err
	}
	if cmd == 0 {
		return nil, fmt.Errorf("vk: RecordExternal: the command buffer handle is zero")
	}
	rc := &runContext{d: d, cmd: vulkan.CommandBuffer(unsafe.Pointer(handleOf(uint64(cmd))))}
	d.mu.Lock()
	d.externals++
	d.mu.Unlock()
	e := &External{rc: rc}
	externals.Store(rc, e)
	defer externals.Delete(rc)
	if err := record(&Recorder{rc: rc}); err != nil {
		// Commands may already be in the application's command buffer: it must not
		// submit it; what they reference is freed now.
		e.Release()
		return nil, err
	}
	return e, nil
}

// Busy reports an error while recordings into application command buffers are not
// released (Close then refuses too).
func (d *Device) Busy() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.externals > 0 {
		return fmt.Errorf("vk: %d recordings into application command buffers not released (External.Release, once the application's submission has completed)", d.externals)
	}
	return nil
}

// Release frees the descriptor sets of the recorded commands and lets go of the
// buffers they bind. Call it once the GPU is done with the command buffer. It is safe
// to call more than once.
func (e *External) Release() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	rc := e.rc
	if rc == nil {
		return nil
	}
	e.rc = nil
	for _, b := range rc.bufs {
		b.release()
	}
	for _, p := range e.pipes {
		p.releaseExternal()
	}
	e.pipes = nil
	for _, p := range rc.dpools {
		vulkan.DestroyDescriptorPool(rc.d.dev, p, nil)
	}
	rc.d.mu.Lock()
	rc.d.externals--
	rc.d.mu.Unlock()
	return nil
}

// Semaphore is one of the application's binary semaphores that a submission waits
// on or signals.
type Semaphore struct {
	Handle uint64 // VkSemaphore
	// Stage is where the wait applies (VkPipelineStageFlags; waits only); 0 means the
	// compute and transfer stages, where dmavk's commands start.
	Stage uint32
}

// Sync is what a submission waits on before its commands run and signals after.
type Sync struct {
	Wait, Signal []Semaphore
}

// Submission is work submitted with Submit. Its resources are released once the GPU
// is done, whether or not anyone waits.
type Submission struct {
	done chan struct{}
	err  error
}

// Wait blocks until the submission has finished or ctx ends.
func (s *Submission) Wait(ctx context.Context) error {
	select {
	case <-s.done:
		return s.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Done is closed when the submission has finished.
func (s *Submission) Done() <-chan struct{} { return s.done }

// Submit records commands with record and submits them after the waits of sync,
// signalling its semaphores when they are done, and returns without waiting: the
// application orders its own work after dmavk's through those semaphores. A semaphore
// to wait on must have its signal operation submitted before Submit is called
// (Vulkan's rule for binary semaphores).
func (d *Device) Submit(record func(*Recorder) error, sync Sync) (*Submission, error) {
	if err := d.usable(); err != nil {
		return nil, err
	}
	for i, s := range append(append([]Semaphore(nil), sync.Wait...), sync.Signal...) {
		if s.Handle == 0 {
			return nil, fmt.Errorf("vk: Submit: semaphore %d has a zero handle", i)
		}
	}
	rc, err := d.takeContext()
	if err != nil {
		return nil, d.noteErr(err)
	}
	if _, err := d.recordInto(rc, vulkan.CommandBufferUsageFlags(vulkan.CommandBufferUsageOneTimeSubmitBit), record); err != nil {
		d.giveBack(rc)
		return nil, err
	}
	n, m := len(sync.Wait), len(sync.Signal)
	wait := make([]C.dv_handle, n+1)
	stages := make([]C.uint32_t, n+1)
	signal := make([]C.dv_handle, m+1)
	for i, s := range sync.Wait {
		wait[i], stages[i] = handleOf(s.Handle), C.uint32_t(s.Stage)
		if s.Stage == 0 {
			stages[i] = ownStages
		}
	}
	for i, s := range sync.Signal {
		signal[i] = handleOf(s.Handle)
	}
	d.inflight.Add(1)
	q := d.queueLocker()
	q.Lock()
	r := C.dv_queue_submit_sync(d.in.handle, d.qhandle, C.dv_handle(unsafe.Pointer(rc.cmd)), C.dv_handle(unsafe.Pointer(rc.fence)),
		C.uint32_t(n), &wait[0], &stages[0], C.uint32_t(m), &signal[0])
	q.Unlock()
	if err := check("vkQueueSubmit", int32(r)); err != nil {
		d.inflight.Done()
		d.giveBack(rc)
		return nil, d.noteErr(err)
	}
	s := &Submission{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer d.inflight.Done()
		fences := []vulkan.Fence{rc.fence}
		for {
			r := vulkan.WaitForFences(d.dev, 1, fences, vulkan.True, uint64(time.Second))
			if r == vulkan.Success {
				d.giveBack(rc)
				return
			}
			if r != vulkan.Timeout {
				s.err = d.noteErr(check("vkWaitForFences", int32(r)))
				return
			}
		}
	}()
	return s, nil
}
