package dma

import (
	"errors"
	"fmt"
	"sync"
)

// ErrClosed is the error, tested with errors.Is, of every call that uses a closed
// object: a Device, or anything it handed out, closed by its own Close or by the
// Device's. The message names the argument: "dma: Forward: q is closed".
var ErrClosed = errors.New("dma: use of a closed object")

// closedError is ErrClosed naming the call and the closed argument.
type closedError struct{ op, what string }

func (e *closedError) Error() string        { return fmt.Sprintf("dma: %s: %s is closed", e.op, e.what) }
func (e *closedError) Is(target error) bool { return target == ErrClosed }

func closedErr(op, what string) error { return &closedError{op, what} }

// owned is an object a Device hands out and tracks until it is closed: tensors,
// weights, LSEs, masks, biases, key paddings and KV caches.
type owned interface {
	// owner is the device that made the object; nil for a nil or zero object.
	owner() *Device
	// state is the object's lifetime, guarded by the owner's lifetimes.mu.
	state() *lifetime
	// free releases the object's driver resources; called exactly once.
	free()
}

// lifetime is the state of one owned object.
type lifetime struct {
	closed bool // by its Close or the device's
	pins   int  // calls in progress that use it
}

// lifetimes is what a Device knows of the objects it handed out and of the calls in
// progress. Its zero value is ready: nothing open, no call running.
type lifetimes struct {
	mu      sync.Mutex
	closed  bool
	calls   int
	drained chan struct{} // made by Device.Close while calls run; closed by the last
	open    map[owned]struct{}
}

// use is an argument of a call: its name in messages and the object.
type use struct {
	name string
	o    owned
}

// enter starts call op, which uses the given objects: it fails with ErrClosed, naming the
// first closed one, when the device or any of them is closed, and else pins them all (a
// Close meanwhile frees nothing until the call ends) and returns what ends the call.
// Objects of other devices and nil ones are left to the call's own checks.
func (d *Device) enter(op string, uses ...use) (leave func(), err error) {
	l := &d.life
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, closedErr(op, "the device")
	}
	for _, u := range uses {
		if u.o != nil && u.o.owner() == d && u.o.state().closed {
			return nil, closedErr(op, u.name)
		}
	}
	for _, u := range uses {
		if u.o != nil && u.o.owner() == d {
			u.o.state().pins++
		}
	}
	l.calls++
	return func() { d.leave(uses) }, nil
}

// leave ends a call: it unpins its objects, frees those closed meanwhile, and lets a
// waiting Device.Close go on after the last call.
func (d *Device) leave(uses []use) {
	l := &d.life
	var free []owned
	l.mu.Lock()
	for _, u := range uses {
		if u.o != nil && u.o.owner() == d {
			s := u.o.state()
			s.pins--
			if s.closed && s.pins == 0 {
				free = append(free, u.o)
			}
		}
	}
	l.mu.Unlock()
	// Free before the call counts as ended: a Device.Close waiting for it destroys the
	// Vulkan device as soon as it does.
	for _, o := range free {
		o.free()
	}
	l.mu.Lock()
	l.calls--
	if l.calls == 0 && l.drained != nil {
		close(l.drained)
		l.drained = nil
	}
	l.mu.Unlock()
}

// adopt tracks o, just made by call op. When the device has been closed meanwhile (by a
// Close waiting for op to end) it frees o and fails.
func (d *Device) adopt(op string, o owned) error {
	l := &d.life
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		o.free()
		return closedErr(op, "the device")
	}
	if l.open == nil {
		l.open = map[owned]struct{}{}
	}
	l.open[o] = struct{}{}
	l.mu.Unlock()
	return nil
}

// release is the Close of an owned object: the first call frees it, at once or when the
// last call in progress that uses it ends; later calls, and calls after the device's
// Close (which freed it), do nothing.
func (d *Device) release(o owned) {
	l := &d.life
	l.mu.Lock()
	s := o.state()
	if s.closed {
		l.mu.Unlock()
		return
	}
	s.closed = true
	delete(l.open, o)
	now := s.pins == 0
	l.mu.Unlock()
	if now {
		o.free()
	}
}

// closeAll marks the device closed, waits for the calls in progress, then frees every
// object still open. It reports false when the device was closed already.
func (d *Device) closeAll() bool {
	l := &d.life
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.closed = true
	var wait chan struct{}
	if l.calls > 0 {
		l.drained = make(chan struct{})
		wait = l.drained
	}
	l.mu.Unlock()
	if wait != nil {
		<-wait
	}
	l.mu.Lock()
	open := l.open
	l.open = nil
	for o := range open {
		o.state().closed = true
	}
	l.mu.Unlock()
	// KV caches first: their recorded programs hold the tensors they bind.
	for o := range open {
		if _, ok := o.(*KVCache); ok {
			o.free()
		}
	}
	for o := range open {
		if _, ok := o.(*KVCache); !ok {
			o.free()
		}
	}
	return true
}

// isClosed reports whether o (of this device) is closed, for calls that return no error.
func (d *Device) isClosed(o owned) bool {
	d.life.mu.Lock()
	defer d.life.mu.Unlock()
	return d.life.closed || o.state().closed
}
