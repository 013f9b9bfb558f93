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

// Program is a recording kept for repeated submission: record it once with
// Device.Record, then Submit it as often as needed, for example once per decode step.
// What changes between submissions must live in buffers (parameters in a
// NewMappedBuffer, written with Upload before Submit); the commands, bindings and push
// constants are fixed. The buffers it binds stay alive until Close. Submissions of one
// Program are serialized; it is safe for concurrent use.
type Program struct {
	d      *Device
	mu     sync.Mutex
	rc     *runContext // owned: never returned to the device's free list
	labels []string
	busy   chan struct{} // set while a cancelled submission may still run; closed when done
}

// Record records commands with record into a Program (nothing is submitted).
func (d *Device) Record(record func(*Recorder) error) (*Program, error) {
	if err := d.usable(); err != nil {
		return nil, err
	}
	rc, err := d.newRunContext()
	if err != nil {
		return nil, d.noteErr(err)
	}
	// No one-time-submit flag: the recording is submitted again and again.
	rec, err := d.recordInto(rc, 0, record)
	if err != nil {
		rc.reset()
		rc.destroy()
		return nil, err
	}
	return &Program{d: d, rc: rc, labels: rec.labels}, nil
}

// Submit runs the program and waits for it to finish. If ctx ends first, Submit returns
// ctx.Err() at once; the GPU work still completes, and the next Submit or Close waits
// for it.
func (p *Program) Submit(ctx context.Context) error {
	_, err := p.submit(ctx, false)
	return err
}

// SubmitTimed is Submit that also returns the timestamps the program recorded.
func (p *Program) SubmitTimed(ctx context.Context) ([]Timestamp, error) {
	return p.submit(ctx, true)
}

func (p *Program) submit(ctx context.Context, timed bool) ([]Timestamp, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.d
	if p.rc == nil {
		return nil, fmt.Errorf("%w: program", ErrClosed)
	}
	if err := d.usable(); err != nil {
		return nil, err
	}
	if p.busy != nil {
		select {
		case <-p.busy:
			p.busy = nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fences := []vulkan.Fence{p.rc.fence}
	if err := check("vkResetFences", int32(vulkan.ResetFences(d.dev, 1, fences))); err != nil {
		return nil, d.noteErr(err)
	}
	d.inflight.Add(1)
	q := d.queueLocker()
	q.Lock()
	r := C.dv_queue_submit(d.in.handle, d.qhandle, C.dv_handle(unsafe.Pointer(p.rc.cmd)), C.dv_handle(unsafe.Pointer(p.rc.fence)))
	q.Unlock()
	if err := check("vkQueueSubmit", int32(r)); err != nil {
		d.inflight.Done()
		return nil, d.noteErr(err)
	}
	for {
		r := vulkan.WaitForFences(d.dev, 1, fences, vulkan.True, uint64(fenceWaitSlice))
		if r == vulkan.Success {
			break
		}
		if r != vulkan.Timeout {
			d.inflight.Done()
			return nil, d.noteErr(check("vkWaitForFences", int32(r)))
		}
		select {
		case <-ctx.Done():
			done := make(chan struct{})
			p.busy = done
			go func() {
				defer close(done)
				defer d.inflight.Done()
				for {
					r := vulkan.WaitForFences(d.dev, 1, fences, vulkan.True, uint64(time.Second))
					if r != vulkan.Timeout {
						if r != vulkan.Success {
							d.noteErr(check("vkWaitForFences", int32(r)))
						}
						return
					}
				}
			}()
			return nil, ctx.Err()
		default:
		}
	}
	d.inflight.Done()
	if !timed || len(p.labels) == 0 {
		return nil, nil
	}
	return (&Recorder{rc: p.rc, labels: p.labels}).timestamps()
}

// Close waits for a submission still running, then frees the program and releases its
// buffers. It is safe to call more than once.
func (p *Program) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rc == nil {
		return nil
	}
	if p.busy != nil {
		<-p.busy
		p.busy = nil
	}
	err := p.rc.reset()
	p.rc.destroy()
	p.rc = nil
	return err
}
