package vk_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/vk"
)

func TestRunCancelledBefore(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	err := d.Run(ctx, func(*vk.Recorder) error { called = true; return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run with a cancelled context = %v, want context.Canceled", err)
	}
	if called {
		t.Errorf("record function called for a cancelled context")
	}
	ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if _, err := d.RunTimed(ctx, func(*vk.Recorder) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("RunTimed past its deadline = %v, want context.DeadlineExceeded", err)
	}
}

// longRun records reps dependent products of size n*n*n.
func longRun(p *vk.Pipeline, a, b, c *vk.Buffer, n, reps int) func(*vk.Recorder) error {
	return func(r *vk.Recorder) error {
		for i := range reps {
			if i > 0 {
				r.Barrier()
			}
			if err := dispatchMatmul(r, p, a, b, c, n, n, n); err != nil {
				return err
			}
		}
		return nil
	}
}

// TestRunCancelledWhileRunning cancels a Run while the device works on it: Run returns
// at once, the buffers it uses may be closed right away (their destruction waits for
// the GPU), and the device goes on working.
func TestRunCancelledWhileRunning(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	p := matmulPipeline(t, d)
	const n = 512
	rng := rand.New(rand.NewPCG(7, 8))
	mk := func() []*vk.Buffer {
		var bufs []*vk.Buffer
		for range 3 {
			b, err := d.NewBuffer(4 * n * n)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Upload(context.Background(), 0, f32Bytes(randFloats(rng, n*n))); err != nil {
				t.Fatal(err)
			}
			bufs = append(bufs, b)
		}
		return bufs
	}
	// Calibrate: how long does one product take here? Eight in one Run, so that the
	// fixed cost of a submission does not pass for GPU work (on a fast GPU it dominates).
	bufs := mk()
	const calib = 8
	start := time.Now()
	if err := d.Run(context.Background(), longRun(p, bufs[0], bufs[1], bufs[2], n, calib)); err != nil {
		t.Fatal(err)
	}
	one := time.Since(start) / calib
	// Aim at about 1.5 s of GPU work, cancelled after 100 ms.
	reps := max(2, min(100000, int(1500*time.Millisecond/max(one, time.Microsecond))))
	t.Logf("one %d^3 product: %v; recording %d of them", n, one, reps)

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	err := d.Run(ctx, longRun(p, bufs[0], bufs[1], bufs[2], n, reps))
	back := time.Since(start)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled (after %v)", err, back)
	}
	// The fence is polled every 20 ms; allow for a slow, busy machine (2 cores shared
	// with the CPU device's own threads, the race detector), well short of the 1.5 s
	// the work takes.
	if back > time.Second {
		t.Errorf("Run returned %v after start, %v after cancel", back, back-100*time.Millisecond)
	}
	t.Logf("cancelled Run returned after %v", back)
	// Close the buffers while the GPU still reads and writes them.
	for _, b := range bufs {
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// The device still works, right away, while the cancelled work finishes.
	multiplyOnce(t, d, p, rng, 33, 17, 9)
	// A second cancelled Run, then one that runs to the end.
	bufs = mk()
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := d.Run(ctx, longRun(p, bufs[0], bufs[1], bufs[2], n, reps/2)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run with a 50 ms timeout = %v, want context.DeadlineExceeded", err)
	}
	for _, b := range bufs {
		b.Close()
	}
	multiplyOnce(t, d, p, rng, 70, 65, 64)
	// Device.Close (at cleanup) waits for the abandoned work; validation checks no
	// buffer was destroyed while in use.
}

// TestConcurrentRuns has 16 goroutines run many small products on one device.
func TestConcurrentRuns(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	p := matmulPipeline(t, d)
	const workers = 16
	iters := 25
	if testing.Short() {
		iters = 5
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for i := range iters {
				m, n, k := 1+rng.IntN(40), 1+rng.IntN(40), 1+rng.IntN(40)
				if err := concurrentProduct(d, p, rng, m, n, k); err != nil {
					errs <- fmt.Errorf("worker %d, product %d (%dx%dx%d): %w", w, i, m, n, k, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// concurrentProduct is multiplyOnce for goroutines: it returns errors instead of
// calling t.Fatal.
func concurrentProduct(d *vk.Device, p *vk.Pipeline, rng *rand.Rand, m, n, k int) error {
	ctx := context.Background()
	a, b := randFloats(rng, m*k), randFloats(rng, k*n)
	var bufs [3]*vk.Buffer
	for i, size := range []int{m * k, k * n, m * n} {
		buf, err := d.NewBuffer(int64(4 * size))
		if err != nil {
			return err
		}
		defer buf.Close()
		bufs[i] = buf
	}
	if err := bufs[0].Upload(ctx, 0, f32Bytes(a)); err != nil {
		return err
	}
	if err := bufs[1].Upload(ctx, 0, f32Bytes(b)); err != nil {
		return err
	}
	if err := d.Run(ctx, func(r *vk.Recorder) error { return dispatchMatmul(r, p, bufs[0], bufs[1], bufs[2], m, n, k) }); err != nil {
		return err
	}
	out := make([]byte, 4*m*n)
	if err := bufs[2].Download(ctx, 0, out); err != nil {
		return err
	}
	ft := &fakeT{}
	checkProduct(ft, bytesF32(out), a, b, m, n, k)
	return ft.err
}

// fakeT collects the first failure of checkProduct outside the test goroutine.
type fakeT struct {
	testing.TB
	err error
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	if f.err == nil {
		f.err = fmt.Errorf(format, args...)
	}
}

func TestTimestamps(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	p := matmulPipeline(t, d)
	caps := d.Caps()
	const n = 128
	rng := rand.New(rand.NewPCG(10, 11))
	a, b := uploadFloats(t, d, randFloats(rng, n*n)), uploadFloats(t, d, randFloats(rng, n*n))
	c := newBuffer(t, d, 4*n*n)
	for range 3 {
		ts, err := d.RunTimed(context.Background(), func(r *vk.Recorder) error {
			if err := r.Timestamp("a"); err != nil {
				return err
			}
			if err := dispatchMatmul(r, p, a, b, c, n, n, n); err != nil {
				return err
			}
			return r.Timestamp("b")
		})
		if err != nil {
			t.Fatal(err)
		}
		if !caps.Timestamps() {
			if len(ts) != 0 {
				t.Fatalf("device without timestamps returned %v", ts)
			}
			t.Skipf("%s has no timestamps on its compute queue", caps.Name)
		}
		if len(ts) != 2 || ts[0].Label != "a" || ts[1].Label != "b" {
			t.Fatalf("timestamps %+v, want a and b", ts)
		}
		if ts[0].Nanos != 0 || ts[1].Nanos < ts[0].Nanos {
			t.Fatalf("timestamps %+v: want a = 0 <= b", ts)
		}
		t.Logf("%d^3 product: %.0f ns between timestamps", n, ts[1].Nanos)
	}
	// A Run without timestamps returns none.
	ts, err := d.RunTimed(context.Background(), func(r *vk.Recorder) error { return dispatchMatmul(r, p, a, b, c, n, n, n) })
	if err != nil || len(ts) != 0 {
		t.Errorf("RunTimed without Timestamp = %v, %v", ts, err)
	}
	// Too many timestamps is an error, not a crash.
	_, err = d.RunTimed(context.Background(), func(r *vk.Recorder) error {
		for i := range 1000 {
			if err := r.Timestamp(fmt.Sprint(i)); err != nil {
				return err
			}
		}
		return nil
	})
	wantErr(t, "1000 timestamps", err, "timestamps in one Run")
}
