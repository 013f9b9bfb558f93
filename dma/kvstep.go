package dma

import (
	"context"
	"fmt"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/vk"
)

// AppendAttendInto is one decode step in one submission: Append of the step's new keys
// (k and v [1, n, KVHeads, HeadDim], weights [1, BiasHeads, n], n at most 16), then
// AttendInto of q's rows over the sequence, new keys included. Results are those of
// Append followed by AttendInto, bit for bit; the host pays one parameter write per part,
// one submission and one wait (the first call with given tensors records the step; later
// calls reuse it). If it fails, the sequence keeps its length from before the call.
func (c *KVCache) AppendAttendInto(ctx context.Context, seq int, k, v *Tensor, weights *Weights, q *Tensor, out *Result, opt Options) error {
	_, err := c.appendAttendInto(ctx, seq, k, v, weights, q, out, opt, false)
	return err
}

// AppendAttendIntoProfiled is AppendAttendInto that also returns where the GPU time went:
// the passes of AttendProfiled, and "append" (not counted in Selection or Attention).
func (c *KVCache) AppendAttendIntoProfiled(ctx context.Context, seq int, k, v *Tensor, weights *Weights, q *Tensor, out *Result, opt Options) (Profile, error) {
	return c.appendAttendInto(ctx, seq, k, v, weights, q, out, opt, true)
}

// fusedKey tells recorded append-and-attend steps apart.
type fusedKey struct {
	a appendKey
	s stepKey
}

// fusedProgram is a recorded append-and-attend step: the step's program and scratch,
// and the append's parameters in mapped memory.
type fusedProgram struct {
	step         *stepProgram
	appendParams *vk.Buffer
}

func (fp *fusedProgram) close() {
	fp.step.close()
	if fp.appendParams != nil {
		fp.appendParams.Close()
	}
}

func (c *KVCache) appendAttendInto(ctx context.Context, seq int, k, v *Tensor, weights *Weights, q *Tensor, out *Result, opt Options, timed bool) (Profile, error) {
	fail := func(format string, a ...any) (Profile, error) {
		return Profile{}, fmt.Errorf("dma: KVCache.AppendAttendInto: "+format, a...)
	}
	n, err := c.checkAppend(k, v, weights)
	if err != nil {
		return fail("%v", err)
	}
	if n > maxRecordedAppend {
		return fail("%d new keys: a step appends at most %d (Append takes more)", n, maxRecordedAppend)
	}
	if err := checkStepOptions(opt); err != nil {
		return fail("%v", err)
	}
	if err := c.checkInto(q, out); err != nil {
		return fail("%v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.k == nil {
		return fail("the cache is closed")
	}
	if seq < 0 || seq >= len(c.lens) {
		return fail("sequence %d of %d", seq, len(c.lens))
	}
	at := c.lens[seq]
	if at+n > c.cfg.Capacity {
		return fail("sequence %d holds %d keys, %d more exceed the capacity %d", seq, at, n, c.cfg.Capacity)
	}
	ap := c.appendParamsOf(seq, at, n)
	c.lens[seq] = at + n
	prof, err := c.runFused(ctx, seq, ap, c.appendBuffers(k, v, weights), appendKey{seq, k.buf, v.buf, weights.buf, n}, q, out, opt, timed)
	if err != nil {
		c.lens[seq] = at // the keys past it, if written, are overwritten by the next append
		c.dropCarry(seq)
		return fail("%v", err)
	}
	return prof, nil
}

// runFused runs the step of q over sequence seq (its new keys already counted in c.lens)
// after the append ap, recording both first if needed; c.mu is held.
func (c *KVCache) runFused(ctx context.Context, seq int, ap kern.Params, bufs *kern.AppendBuffers, akey appendKey, q *Tensor, out *Result, opt Options, timed bool) (Profile, error) {
	st, err := c.newStepInto(seq, q, out, opt)
	if err != nil {
		return Profile{}, err
	}
	c.planCarry(st)
	key := fusedKey{akey, c.stepKeyOf(st, timed)}
	fp, ok := c.fused.get(key)
	if !ok {
		if fp, err = c.newFusedProgram(st, ap, bufs, timed); err != nil {
			return Profile{}, err
		}
		c.fused.add(key, fp)
	}
	if err := fp.appendParams.Upload(ctx, 0, ap.Bytes()); err != nil {
		return Profile{}, err
	}
	if err := fp.step.bufs.params.Upload(ctx, 0, st.p.Bytes()); err != nil {
		return Profile{}, err
	}
	ts, err := fp.step.prog.SubmitTimed(ctx)
	if err != nil {
		return Profile{}, err
	}
	return stepProfile(ts), nil
}

// newFusedProgram records the append ap followed by the step st.
func (c *KVCache) newFusedProgram(st *attendStep, ap kern.Params, bufs *kern.AppendBuffers, timed bool) (*fusedProgram, error) {
	sp, err := c.newStepProgram(st)
	if err != nil {
		return nil, err
	}
	fp := &fusedProgram{step: sp}
	if fp.appendParams, err = c.d.vd.NewMappedBuffer(kern.ParamsSize); err != nil {
		fp.close()
		return nil, err
	}
	sp.prog, err = c.d.vd.Record(func(r *vk.Recorder) error {
		stamp := stamper(r, timed)
		if err := stamp("start"); err != nil {
			return err
		}
		r.Barrier() // after earlier submissions' reads of the cache
		if err := c.d.kern.RecordAppend(r, &ap, fp.appendParams, bufs); err != nil {
			return err
		}
		if err := stamp("append"); err != nil {
			return err
		}
		return c.recordStep(r, st, sp.bufs, stamp) // its barrier orders the append first
	})
	if err != nil {
		fp.close()
		return nil, err
	}
	return fp, nil
}
