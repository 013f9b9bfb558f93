package dma

import (
	"context"
	"fmt"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/vk"
)

// Buffer is the device buffer that holds the tensor's elements in its layout (16-bit
// dtypes two to a 32-bit word, the first in the low half), for kernels of the caller's
// own on the same device (Device.VK). The tensor still owns it.
func (t *Tensor) Buffer() *vk.Buffer { return t.buf }

// Buffer is the device buffer that holds the weights, float32 [B, Hb, Lk], for kernels of
// the caller's own. The weights still own it.
func (w *Weights) Buffer() *vk.Buffer { return w.buf }

// RecordedStep is a decode step of one sequence (the append of k and v's new keys with
// their weights, then q's rows attending over the sequence, new keys included, into
// out) that the caller records into a submission of its own among other kernels: every
// layer of a model's decode step in one vk.Program. Each step: Prepare (the host writes
// the step's parameters), Submit the program, Commit with the submission's error.
// Results are those of KVCache.AppendAttendInto with the same arguments, bit for bit.
// Between Prepare and Commit no other call may use the step's sequence of the cache.
type RecordedStep struct {
	c        *KVCache
	seq, n   int
	q        *Tensor
	out      *Result
	opt      Options
	app      *kern.AppendBuffers
	sp       *stepProgram // its buffers (the program itself stays nil)
	st       *attendStep  // the prepared step, nil before Prepare
	at       int          // the sequence's length before the prepared append
	prepared bool
}

// StepPhase is what a recording of a RecordedStep depends on besides its buffers: a
// recording is valid for the steps of the phase it was recorded in. A sequence changes
// phase at most twice: when it grows past the window (selection starts) and on the step
// after (thresholds carried from step to step).
type StepPhase struct {
	Mode           Mode // ModeNone while the window covers every key
	Carry, Advance bool
}

// NewRecordedStep makes the decode step of sequence seq: k and v [1, n, KVHeads,
// HeadDim] BLHD (n at most 16), weights [1, BiasHeads, n], q [1, rows, H, HeadDim]
// (rows at most 4), out from NewResult(q); opt as in AttendInto. The tensors are bound,
// not copied: write their contents before each submission.
func (c *KVCache) NewRecordedStep(seq int, k, v *Tensor, weights *Weights, q *Tensor, out *Result, opt Options) (*RecordedStep, error) {
	fail := func(format string, a ...any) (*RecordedStep, error) {
		return nil, fmt.Errorf("dma: KVCache.NewRecordedStep: "+format, a...)
	}
	n, err := c.checkStep(k, v, weights, q, out, opt)
	if err != nil {
		return fail("%v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.room(seq, 0); err != nil {
		return fail("%v", err)
	}
	// The scratch does not depend on the sequence's length: size it on a full sequence.
	saved := c.lens[seq]
	c.lens[seq] = c.cfg.Capacity
	st, err := c.newStepInto(seq, q, out, opt)
	c.lens[seq] = saved
	if err != nil {
		return fail("%v", err)
	}
	sp, err := c.newStepProgram(st)
	if err != nil {
		return fail("%v", err)
	}
	if sp.appendParams, err = c.d.vd.NewMappedBuffer(kern.ParamsSize); err != nil {
		sp.close()
		return fail("%v", err)
	}
	return &RecordedStep{c: c, seq: seq, n: n, q: q, out: out, opt: opt, app: c.appendBuffers(k, v, weights), sp: sp}, nil
}

// Prepare writes the parameters of the next submission: the new keys go after the
// sequence's current keys, and q's rows are its last positions after them. It returns
// the phase the recording must have been made in (Record after Prepare records for it).
// Call Commit after the submission, or when it is not made.
func (s *RecordedStep) Prepare(ctx context.Context) (StepPhase, error) {
	fail := func(err error) (StepPhase, error) {
		return StepPhase{}, fmt.Errorf("dma: RecordedStep.Prepare: %w", err)
	}
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.sp == nil {
		return fail(fmt.Errorf("the step is closed"))
	}
	if s.prepared {
		return fail(fmt.Errorf("the step is prepared already (Commit the last one first)"))
	}
	at, err := c.room(s.seq, s.n)
	if err != nil {
		return fail(err)
	}
	c.lens[s.seq] = at + s.n
	st, err := c.newStepInto(s.seq, s.q, s.out, s.opt)
	if err != nil {
		c.lens[s.seq] = at
		return fail(err)
	}
	c.planCarry(st)
	ap := c.appendParamsOf(s.seq, at, s.n)
	if err := s.sp.appendParams.Upload(ctx, 0, ap.Bytes()); err == nil {
		err = s.sp.bufs.params.Upload(ctx, 0, st.p.Bytes())
	}
	if err != nil {
		c.lens[s.seq] = at
		c.dropCarry(s.seq)
		return fail(err)
	}
	s.st, s.at, s.prepared = st, at, true
	return StepPhase{Mode: st.mode, Carry: st.carry, Advance: st.advance}, nil
}

// Record records the step for the phase of the last Prepare into r (a recording of the
// caller's). It binds the step's buffers; the recording stays valid for every later
// step of the same phase.
func (s *RecordedStep) Record(r *vk.Recorder) error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.sp == nil || s.st == nil {
		return fmt.Errorf("dma: RecordedStep.Record: closed, or not prepared")
	}
	app := c.appendParamsOf(s.seq, s.at, s.n)
	r.Barrier() // after earlier commands' reads of the cache
	if err := c.d.kern.RecordAppend(r, &app, s.sp.appendParams, s.app); err != nil {
		return fmt.Errorf("dma: RecordedStep.Record: %w", err)
	}
	if err := c.recordStep(r, s.st, s.sp.bufs, func(string) error { return nil }); err != nil {
		return fmt.Errorf("dma: RecordedStep.Record: %w", err)
	}
	return nil
}

// Commit ends the prepared step: with err nil (the submission ran) the sequence keeps
// the new keys; otherwise it keeps its length from before Prepare.
func (s *RecordedStep) Commit(err error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !s.prepared {
		return
	}
	s.prepared = false
	if err != nil {
		c.lens[s.seq] = s.at
		c.dropCarry(s.seq)
	}
}

// Close frees the step's scratch (once no recording that binds it runs). It is safe to
// call more than once.
func (s *RecordedStep) Close() error {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.sp != nil {
		s.sp.close()
		s.sp = nil
	}
	return nil
}
