package dma

import (
	"context"
	"time"

	"github.com/dmavk/dmavk/vk"
)

// SustainedSteps records n decode steps of (seq, q, out, opt) back to back in one program,
// the GPU never idle between them, and returns a function that submits it once and gives
// the wall time, and one that frees it (benchmarks: a step's cost under sustained load).
func (c *KVCache) SustainedSteps(seq int, q *Tensor, out *Result, opt Options, n int) (run func(context.Context) (time.Duration, error), free func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st, err := c.newStepInto(seq, q, out, opt)
	if err != nil {
		return nil, nil, err
	}
	sp, err := c.newStepProgram(st)
	if err != nil {
		return nil, nil, err
	}
	if err := sp.bufs.params.Upload(context.Background(), 0, st.p.Bytes()); err != nil {
		sp.close()
		return nil, nil, err
	}
	sp.prog, err = c.d.vd.Record(func(r *vk.Recorder) error {
		for range n {
			if err := c.recordStep(r, st, sp.bufs, stamper(r, false)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		sp.close()
		return nil, nil, err
	}
	run = func(ctx context.Context) (time.Duration, error) {
		start := time.Now()
		err := sp.prog.Submit(ctx)
		return time.Since(start), err
	}
	return run, sp.close, nil
}
