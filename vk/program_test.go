package vk_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/vk"
)

// TestProgram records a product once and submits it many times with new inputs each
// time (one of them in a mapped buffer, written by Upload alone): every submission
// computes the current inputs' product; the program keeps its buffers alive after their
// Close; a closed program refuses to run.
func TestProgram(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	p := matmulPipeline(t, d)
	ctx := context.Background()
	const m, n, k = 33, 17, 29
	a, err := d.NewMappedBuffer(4 * m * k)
	if err != nil {
		t.Fatal(err)
	}
	var bufs [2]*vk.Buffer
	for i, size := range []int{k * n, m * n} {
		if bufs[i], err = d.NewBuffer(int64(4 * size)); err != nil {
			t.Fatal(err)
		}
	}
	prog, err := d.Record(func(r *vk.Recorder) error {
		if err := r.Timestamp("start"); err != nil {
			return err
		}
		if err := dispatchMatmul(r, p, a, bufs[0], bufs[1], m, n, k); err != nil {
			return err
		}
		return r.Timestamp("end")
	})
	if err != nil {
		t.Fatal(err)
	}
	out := bufs[1]
	defer out.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	var x, y []float32
	check := func(i int) {
		t.Helper()
		ts, err := prog.SubmitTimed(ctx)
		if err != nil {
			t.Fatalf("submission %d: %v", i, err)
		}
		if caps := d.Caps(); caps.Timestamps() && (len(ts) != 2 || ts[1].Label != "end" || ts[1].Nanos < 0) {
			t.Fatalf("timestamps %v", ts)
		}
		got := make([]byte, 4*m*n)
		if err := out.Download(ctx, 0, got); err != nil {
			t.Fatal(err)
		}
		checkProduct(t, bytesF32(got), x, y, m, n, k)
	}
	for i := range 20 {
		x, y = randFloats(rng, m*k), randFloats(rng, k*n)
		if err := a.Upload(ctx, 0, f32Bytes(x)); err != nil {
			t.Fatal(err)
		}
		if err := bufs[0].Upload(ctx, 0, f32Bytes(y)); err != nil {
			t.Fatal(err)
		}
		check(i)
	}
	// The program holds its buffers: closing ours frees them only with the program.
	a.Close()
	bufs[0].Close()
	check(20)
	if err := prog.Close(); err != nil {
		t.Fatal(err)
	}
	if err := prog.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := prog.Submit(ctx); !errors.Is(err, vk.ErrClosed) {
		t.Fatalf("Submit after Close: %v, want ErrClosed", err)
	}
}
