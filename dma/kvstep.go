package dma

import (
	"context"
	"fmt"
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

func (c *KVCache) appendAttendInto(ctx context.Context, seq int, k, v *Tensor, weights *Weights, q *Tensor, out *Result, opt Options, timed bool) (Profile, error) {
	fail := func(format string, a ...any) (Profile, error) {
		return Profile{}, fmt.Errorf("dma: KVCache.AppendAttendInto: "+format, a...)
	}
	leave, err := c.enter("KVCache.AppendAttendInto", append([]use{{"k", k}, {"v", v}, {"weights", weights}, {"q", q}}, resultUses(out)...)...)
	if err != nil {
		return Profile{}, err
	}
	defer leave()
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
	c.lens[seq] = at + n // the step attends the new keys too
	st, err := c.newStepInto(seq, q, out, opt)
	var prof Profile
	if err == nil {
		prof, err = c.runInto(ctx, st, app, timed)
	}
	if err != nil {
		c.lens[seq] = at // the keys past it, if written, are overwritten by the next append
		c.dropCarry(seq)
		return fail("%v", err)
	}
	return prof, nil
}

// checkStep checks the arguments of a recorded decode step (append n keys, then attend
// q into out) and returns n.
func (c *KVCache) checkStep(k, v *Tensor, weights *Weights, q *Tensor, out *Result, opt Options) (int, error) {
	n, err := c.checkAppend(k, v, weights)
	if err != nil {
		return 0, err
	}
	if n > maxRecordedAppend {
		return 0, fmt.Errorf("%d new keys: a step appends at most %d (Append takes more)", n, maxRecordedAppend)
	}
	if err := checkStepOptions(opt); err != nil {
		return 0, err
	}
	if err := c.checkInto(q, out); err != nil {
		return 0, err
	}
	return n, nil
}
