package vk_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/vk"
)

// TestReadbackBuffer: a copy recorded into a readback buffer is what Download reads.
func TestReadbackBuffer(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	src := newBuffer(t, d, 1000)
	want := randBytes(rng, 1000)
	if err := src.Upload(ctx, 0, want); err != nil {
		t.Fatal(err)
	}
	rb, err := d.NewReadbackBuffer(1000)
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	if err := d.Run(ctx, func(r *vk.Recorder) error { return r.Copy(src, 0, rb, 0, 1000) }); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1000)
	if err := rb.Download(ctx, 0, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("readback differs")
	}
	if _, err := d.NewReadbackBuffer(0); err == nil {
		t.Fatal("size 0: no error")
	}
}
