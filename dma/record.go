package dma

import (
	"context"
	"fmt"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/vk"
)

// Recording is dmavk work recorded into a command buffer: the application's
// (Device.RecordInto), which it submits itself, or dmavk's own submission ordered by
// the application's semaphores (Device.SubmitWith). Its methods are valid only inside
// the function given to RecordInto or SubmitWith.
//
// Lifetimes: recorded commands bind the tensors, results, caches and temporary
// buffers they use; dmavk keeps all of those alive (a Close of them is deferred)
// until the recording is released, so Close any of them whenever convenient. The
// application's own buffers (TensorFromBuffer) are the application's to keep alive
// until its submission completes.
type Recording struct {
	d    *Device
	r    *vk.Recorder
	done bool // the recording function has returned
}

func (rec *Recording) usable(op string) error {
	if rec.done {
		return fmt.Errorf("dma: Recording.%s: used after the recording function returned", op)
	}
	return nil
}

// Recorded is a recording into the application's command buffer. Release it once
// the GPU has finished executing that command buffer (its fence signalled); until
// then everything the commands use stays alive. Device.Close fails while a Recorded
// is not released.
type Recorded struct{ ext *vk.External }

// Release lets go of what the recorded commands use. Safe to call more than once.
func (r *Recorded) Release() error { return r.ext.Release() }

// RecordInto records dmavk work with record into the application's command buffer
// cmd (a VkCommandBuffer being recorded, outside a render pass, from a pool of the
// device's queue family). Nothing is submitted. The work starts after a barrier from
// the application's earlier commands described by from (e.g. {StageComputeShader,
// AccessShaderWrite} when a compute pass wrote Q; the zero Visibility for none) and ends
// with a barrier that makes every result visible to the later commands that to names
// (vk.ForComputeShader, vk.ForVertexInput, ...).
//
// Recorded commands hold their parameters: submit the command buffer once per
// recording (record again for the next step), in the order recorded.
func (d *Device) RecordInto(cmd uintptr, from, to vk.Visibility, record func(*Recording) error) (*Recorded, error) {
	ext, err := d.vd.RecordExternal(cmd, func(r *vk.Recorder) error {
		if from.Stage != 0 {
			r.BarrierFrom(from)
		}
		rec := &Recording{d: d, r: r}
		defer func() { rec.done = true }()
		if err := record(rec); err != nil {
			return err
		}
		r.BarrierTo(to)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dma: RecordInto: %w", err)
	}
	return &Recorded{ext: ext}, nil
}

// SubmitWith records dmavk work with record into a submission of dmavk's own that
// waits on sync.Wait (the application's semaphores, e.g. the one its frame signals)
// and signals sync.Signal when it is done, and returns without waiting. Results are
// visible to any later work that waits on a signalled semaphore. Wait on the returned
// Submission (or on the semaphores) before reading results on the host.
func (d *Device) SubmitWith(sync vk.Sync, record func(*Recording) error) (*vk.Submission, error) {
	s, err := d.vd.Submit(func(r *vk.Recorder) error {
		r.Barrier()
		rec := &Recording{d: d, r: r}
		defer func() { rec.done = true }()
		if err := record(rec); err != nil {
			return err
		}
		r.Barrier()
		return nil
	}, sync)
	if err != nil {
		return nil, fmt.Errorf("dma: SubmitWith: %w", err)
	}
	return s, nil
}

// recorded is the runner that records into the Recording's command buffer.
func (rec *Recording) recorded(_ context.Context, record func(*vk.Recorder) error) ([]vk.Timestamp, error) {
	return nil, record(rec.r)
}

// Forward records Forward(q, k, v, opt) writing into out: out.O like q (shape, dtype,
// layout), out.LSE [B, H, Lq], and out.Weights [B, Hb, Lk] when opt.WeightParams
// computes weights and the caller wants them (nil: they stay internal). ctx bounds the
// uploads of WeightParams, the only host work; out.Path says which kernel was recorded.
func (rec *Recording) Forward(ctx context.Context, q, k, v *Tensor, opt Options, out *Result) error {
	if err := rec.usable("Forward"); err != nil {
		return err
	}
	if out == nil {
		return fmt.Errorf("dma: Recording.Forward: nil result")
	}
	_, _, err := rec.d.forwardWith(ctx, "Recording.Forward", q, k, v, opt, false, out, rec.recorded, nil)
	if err == nil {
		rec.r.Barrier() // later recorded work may read the results
	}
	return err
}

// Layer records the application's own kernels (a model layer: vk.Pipeline dispatches
// of its shaders on Device.VK()) between dmavk's, ordered after the work recorded
// before and before the work recorded after it.
func (rec *Recording) Layer(layer func(*vk.Recorder) error) error {
	if err := rec.usable("Layer"); err != nil {
		return err
	}
	rec.r.Barrier()
	if err := layer(rec.r); err != nil {
		return err
	}
	rec.r.Barrier()
	return nil
}

// AppendAttend records one decode step of cache's sequence seq: the append of k, v
// and weights (1 to 16 new keys) and the attention of q's rows over the sequence,
// into out (KVCache.AppendAttendInto's arguments). The sequence's length grows when
// the step is recorded: submit the recording before any other use of the cache.
func (rec *Recording) AppendAttend(cache *KVCache, seq int, k, v *Tensor, weights *Weights, q *Tensor, out *Result, opt Options) error {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("dma: Recording.AppendAttend: "+format, a...)
	}
	if err := rec.usable("AppendAttend"); err != nil {
		return err
	}
	c := cache
	if c == nil || c.d != rec.d {
		return fail("cache is nil or lives on another device")
	}
	n, err := c.checkStep(k, v, weights, q, out, opt)
	if err != nil {
		return fail("%v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	at, err := c.room(seq, n)
	if err != nil {
		return fail("%v", err)
	}
	app := &stepAppend{appendKey{seq, k.buf, v.buf, weights.buf, n}, c.appendParamsOf(seq, at, n), c.appendBuffers(k, v, weights)}
	c.lens[seq] = at + n
	// The step runs when the application submits it: no thresholds carried from or to
	// the steps dmavk submits itself.
	c.dropCarry(seq)
	st, err := c.newStepInto(seq, q, out, opt)
	if err == nil {
		err = c.recordStepNow(rec.r, st, app)
	}
	if err != nil {
		c.lens[seq] = at
		return fail("%v", err)
	}
	rec.r.Barrier()
	return nil
}

// recordStepNow records app's append and st with their parameters written by the
// commands themselves (the recording is submitted as it is, once).
func (c *KVCache) recordStepNow(r *vk.Recorder, st *attendStep, app *stepAppend) error {
	sizes := c.stepSizes(&st.p)
	var bufs stepBuffers
	var appendParams *vk.Buffer
	all := []**vk.Buffer{&bufs.params, &bufs.tau, &bufs.sel, &bufs.part, &appendParams}
	// Closed on return: the recorded commands keep them alive until released.
	defer func() {
		for _, b := range all {
			if *b != nil {
				(*b).Close()
			}
		}
	}()
	for i, size := range []int64{sizes[0], sizes[1], sizes[2], sizes[3], kern.ParamsSize} {
		b, err := c.d.vd.NewBuffer(max(size, 4))
		if err != nil {
			return err
		}
		*all[i] = b
	}
	r.Barrier() // after earlier reads of the cache
	if err := r.Update(appendParams, 0, app.p.Bytes()); err != nil {
		return err
	}
	if err := r.Update(bufs.params, 0, st.p.Bytes()); err != nil {
		return err
	}
	r.Barrier()
	if err := c.d.kern.RecordAppend(r, &app.p, appendParams, app.bufs); err != nil {
		return err
	}
	return c.recordStep(r, st, bufs, func(string) error { return nil })
}

// checkForwardInto checks a Result that Forward writes into.
func checkForwardInto(q *Tensor, out *Result, hb, lk int, computesWeights bool) error {
	if out.O == nil || out.LSE == nil {
		return fmt.Errorf("dma: Forward: the result needs O and LSE")
	}
	if out.O.d != q.d || out.O.shape != q.shape || out.O.dtype != q.dtype || out.O.layout != q.layout {
		return fmt.Errorf("dma: Forward: result O is %v %v %v, want q's %v %v %v", out.O.shape, out.O.dtype, out.O.layout, q.shape, q.dtype, q.layout)
	}
	if out.O.buf == q.buf {
		return fmt.Errorf("dma: Forward: result O is q")
	}
	s := q.shape
	if out.LSE.B != s.B || out.LSE.H != s.H || out.LSE.Lq != s.L {
		return fmt.Errorf("dma: Forward: result LSE is [%d %d %d], want [%d %d %d]", out.LSE.B, out.LSE.H, out.LSE.Lq, s.B, s.H, s.L)
	}
	if w := out.Weights; w != nil && computesWeights && (w.B != s.B || w.Hb != hb || w.Lk != lk) {
		return fmt.Errorf("dma: Forward: result weights are [%d %d %d], want [%d %d %d]", w.B, w.Hb, w.Lk, s.B, hb, lk)
	}
	return nil
}

// bufOrNil is the LSE's buffer, nil for a nil LSE.
func (l *LSE) bufOrNil() *vk.Buffer {
	if l == nil {
		return nil
	}
	return l.buf
}

// NewResult allocates the outputs of a Forward of q's shape, for Recording.Forward: O
// like q and the LSE of its rows.
func (d *Device) NewResult(q *Tensor) (*Result, error) {
	if q == nil || q.d != d {
		return nil, fmt.Errorf("dma: NewResult: q is nil or lives on another device")
	}
	o, err := d.newTensor("NewResult", q.dtype, q.shape, q.layout)
	if err != nil {
		return nil, err
	}
	s := q.shape
	lse, err := d.newLSE("NewResult", s.B, s.H, s.L)
	if err != nil {
		o.Close()
		return nil, err
	}
	return &Result{O: o, LSE: lse}, nil
}

// TensorFromBuffer is a tensor in the application's buffer: the bytes from offset of
// the VkBuffer handle (created on this device with STORAGE_BUFFER usage, and
// TRANSFER_SRC/DST for Upload and Download), bound in place by every kernel, never
// copied. The buffer holds the tensor in layout l, 16-bit elements packed two to a
// word; it must span the tensor's bytes rounded up to 4, and outlive the tensor and
// any submission that uses it. offset must be a multiple of the device's
// minStorageBufferOffsetAlignment. Close never destroys the VkBuffer.
func (d *Device) TensorFromBuffer(handle uint64, offset int64, dt DType, s Shape, l Layout) (*Tensor, error) {
	if dt != Float32 && dt != Float16 && dt != BFloat16 {
		return nil, fmt.Errorf("dma: TensorFromBuffer: unsupported dtype %v", dt)
	}
	if l != BLHD && l != BHLD {
		return nil, fmt.Errorf("dma: TensorFromBuffer: unknown layout %v", l)
	}
	if s.B < 1 || s.L < 1 || s.H < 1 || s.D < 1 {
		return nil, fmt.Errorf("dma: TensorFromBuffer: shape %v: every dimension must be at least 1", s)
	}
	n := int64(s.B) * int64(s.L) * int64(s.H) * int64(s.D)
	if n > 1<<32-1 {
		return nil, fmt.Errorf("dma: TensorFromBuffer: shape %v has %d elements, more than 2^32", s, n)
	}
	buf, err := d.vd.WrapBuffer(handle, offset, (n*int64(dt.Size())+3)&^3)
	if err != nil {
		return nil, fmt.Errorf("dma: TensorFromBuffer: %w", err)
	}
	t := &Tensor{d: d, buf: buf, dtype: dt, shape: s, layout: l}
	if err := d.adopt("TensorFromBuffer", t); err != nil {
		return nil, err
	}
	return t, nil
}
