package dma

import (
	"context"
	"fmt"
	"time"

	"github.com/dmavk/dmavk/vk"
)

// SustainedSteps records n decode steps of (seq, q, out, opt) back to back in one program,
// the GPU never idle between them, and returns a function that submits it once and gives
// the wall time, and one that frees it (benchmarks: a step's cost under sustained load).
// With carried, every step takes the thresholds' carried dispatch as a decode step
// does (the cache must hold them for one key less: an AttendInto before the last Append);
// each step first copies back the carried state the program started from (a copy of 8
// bytes per bias head), so every replay does the same work as the first step.
func (c *KVCache) SustainedSteps(seq int, q *Tensor, out *Result, opt Options, n int, carried bool) (run func(context.Context) (time.Duration, error), free func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.newStepInto(seq, q, out, opt)
	if err != nil {
		return nil, nil, err
	}
	if carried {
		c.planCarry(st)
		if !st.advance {
			return nil, nil, fmt.Errorf("SustainedSteps: no carried thresholds for %d keys", st.p.Lk-1)
		}
	}
	sp, err := c.newStepProgram(st)
	if err != nil {
		return nil, nil, err
	}
	if err := sp.bufs.params.Upload(context.Background(), 0, st.p.Bytes()); err != nil {
		sp.close()
		return nil, nil, err
	}
	stateOff, stateLen := int64(seq*c.cfg.BiasHeads)*8, int64(c.cfg.BiasHeads)*8
	snapshot, err := c.d.vd.NewBuffer(stateLen)
	if err != nil {
		sp.close()
		return nil, nil, err
	}
	free = func() {
		sp.close()
		snapshot.Close()
	}
	if carried {
		err := c.d.vd.Run(context.Background(), func(r *vk.Recorder) error { return r.Copy(c.carryState, stateOff, snapshot, 0, stateLen) })
		if err != nil {
			free()
			return nil, nil, err
		}
	}
	sp.prog, err = c.d.vd.Record(func(r *vk.Recorder) error {
		for range n {
			if carried {
				r.Barrier()
				if err := r.Copy(snapshot, 0, c.carryState, stateOff, stateLen); err != nil {
					return err
				}
			}
			if err := c.recordStep(r, st, sp.bufs, stamper(r, false)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		free()
		return nil, nil, err
	}
	run = func(ctx context.Context) (time.Duration, error) {
		start := time.Now()
		err := sp.prog.Submit(ctx)
		return time.Since(start), err
	}
	return run, free, nil
}
