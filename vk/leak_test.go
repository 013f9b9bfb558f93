package vk_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/dmavk/dmavk/internal/memprobe"
	"github.com/dmavk/dmavk/vk"
)

// settledRSS is memprobe.SettledRSS (the test skips where /proc/self/statm is missing).
func settledRSS(t *testing.T) int64 {
	t.Helper()
	n, err := memprobe.SettledRSS()
	if err != nil {
		t.Skipf("no RSS: %v", err)
	}
	return n
}

// leakBound is the RSS growth allowed after warm-up. One leaked object per cycle makes
// far more: the smallest thing a cycle creates is a 4 KiB buffer (lavapipe backs it
// with malloc) plus its Vulkan objects, so 10,000 leaked cycles would add 40 MiB or
// more; a leaked device (lavapipe: queue thread, its stack, LLVM state) costs MiBs, so
// a few dozen leaked devices exceed it too. What legitimately moves after warm-up is
// malloc arena fragmentation, the Go heap's size and the validation layer's tables, a
// few MiB in all.
const leakBound = 20 << 20

// TestLeaks creates and destroys buffers, pipelines, Runs, devices and instances many
// times and checks the process does not grow. It takes about 30 s: skipped with -short
// and under the race detector (whose shadow memory grows by itself).
func TestLeaks(t *testing.T) {
	if testing.Short() {
		t.Skip("leak test skipped with -short")
	}
	if raceEnabled {
		t.Skip("leak test skipped under the race detector")
	}
	t.Setenv("DMAVK_CACHE_DIR", t.TempDir())
	in, err := vk.NewInstance(vk.Config{OnMessage: leakMessage(t)})
	if err != nil {
		t.Skip(err)
	}
	t.Logf("validation: %v", in.Validating())
	pd, err := in.Choose()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("buffers-runs", func(t *testing.T) {
		d, err := in.Open(pd, vk.Features{})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		rng := rand.New(rand.NewPCG(14, 15))
		desc := matmulDesc(t)
		pipe, err := d.NewPipeline(desc)
		if err != nil {
			t.Fatal(err)
		}
		defer pipe.Close()
		cycleLeaks(t, "buffer+run cycles", 10000, 1000, func(i int) error {
			p := pipe
			if i%20 == 0 { // a pipeline of its own every 20 cycles: 500 in all
				if p, err = d.NewPipeline(desc); err != nil {
					return err
				}
				defer p.Close()
			}
			return leakCycle(d, p, rng)
		})
	})
	t.Run("programs", func(t *testing.T) {
		d, err := in.Open(pd, vk.Features{})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		pipe, err := d.NewPipeline(matmulDesc(t))
		if err != nil {
			t.Fatal(err)
		}
		defer pipe.Close()
		cycleLeaks(t, "program cycles", 5000, 500, func(int) error { return programCycle(d, pipe) })
	})
	t.Run("devices", func(t *testing.T) {
		// 20 s or 1000 cycles, whichever ends first: the bound below is on the total,
		// and a fast machine's 20 s are more cycles of the driver's own per-device cost
		// (Mesa 22.3 with validation: ~17 KB a cycle).
		budget := 20 * time.Second
		const warm, most = 5, 1000
		var before int64
		start := time.Now()
		cycles := 0
		inst := in
		defer func() {
			if inst != in {
				inst.Close()
			}
		}()
		rng := rand.New(rand.NewPCG(16, 17))
		for ; cycles < warm || (time.Since(start) < budget && cycles < warm+most); cycles++ {
			if cycles == warm {
				before = settledRSS(t)
				start = time.Now()
			}
			if cycles%10 == 9 { // a new instance every 10 devices
				if inst != in {
					inst.Close()
				}
				if inst, err = vk.NewInstance(vk.Config{OnMessage: leakMessage(t)}); err != nil {
					t.Fatal(err)
				}
			}
			pd, err := inst.ChooseBy(strconv.Itoa(pd.Index))
			if err != nil {
				t.Fatal(err)
			}
			d, err := inst.Open(pd, vk.Features{})
			if err != nil {
				t.Fatal(err)
			}
			p, err := d.NewPipeline(matmulDesc(t))
			if err != nil {
				t.Fatal(err)
			}
			err = leakCycle(d, p, rng)
			p.Close()
			if cerr := d.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatalf("device cycle %d: %v", cycles, err)
			}
		}
		after := settledRSS(t)
		report(t, "device open/close cycles", cycles-warm, before, after, time.Since(start))
	})
	in.Close()
}

// leakMessage fails the test on validation findings (these instances are not
// vktest's, so its check does not see them).
func leakMessage(t *testing.T) func(vk.Message) {
	return func(m vk.Message) {
		if m.Validation || m.Severity == "error" {
			t.Errorf("validation %s: %s", m.Severity, m.Text)
		}
	}
}

func report(t *testing.T, what string, cycles int, before, after int64, took time.Duration) {
	t.Helper()
	growth := after - before
	t.Logf("%d %s in %v: RSS %.1f MiB -> %.1f MiB (%+.2f MiB, %.0f bytes/cycle)", cycles, what, took.Round(time.Millisecond),
		float64(before)/(1<<20), float64(after)/(1<<20), float64(growth)/(1<<20), float64(growth)/float64(max(cycles, 1)))
	if growth > leakBound {
		t.Errorf("RSS grew by %.1f MiB over %d %s, bound %d MiB", float64(growth)/(1<<20), cycles, what, leakBound>>20)
	}
}

// cycleLeaks runs cycle cycles times and fails t if the process grew by more than
// leakBound after the first warm cycles.
func cycleLeaks(t *testing.T, what string, cycles, warm int, cycle func(i int) error) {
	t.Helper()
	var before int64
	start := time.Now()
	for i := range cycles {
		if i == warm {
			before = settledRSS(t)
		}
		if err := cycle(i); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
	}
	report(t, what, cycles-warm, before, settledRSS(t), time.Since(start))
}

// leakCycle is one small round: three buffers, an upload, a product, a download.
func leakCycle(d *vk.Device, p *vk.Pipeline, rng *rand.Rand) error {
	return concurrentProduct(d, p, rng, 1+rng.IntN(32), 1+rng.IntN(32), 1+rng.IntN(32))
}

// programCycle records a small product into a Program (one operand in a mapped buffer),
// submits it three times with new data and frees everything.
func programCycle(d *vk.Device, p *vk.Pipeline) error {
	const m, n, k = 8, 8, 8
	a, err := d.NewMappedBuffer(4 * m * k)
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := d.NewBuffer(4 * k * n)
	if err != nil {
		return err
	}
	defer b.Close()
	c, err := d.NewBuffer(4 * m * n)
	if err != nil {
		return err
	}
	defer c.Close()
	prog, err := d.Record(func(r *vk.Recorder) error { return dispatchMatmul(r, p, a, b, c, m, n, k) })
	if err != nil {
		return err
	}
	defer prog.Close()
	ctx := context.Background()
	for i := range 3 {
		if err := a.Upload(ctx, 0, make([]byte, 4*m*k)); err != nil {
			return fmt.Errorf("upload %d: %w", i, err)
		}
		if err := prog.Submit(ctx); err != nil {
			return err
		}
	}
	return nil
}
