package vk_test

import (
	"bytes"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/vk"
)

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// roundTrip checks Upload and Download of a buffer of size bytes at odd offsets.
func roundTrip(t *testing.T, d *vk.Device, rng *rand.Rand, size int) {
	ctx := context.Background()
	b := newBuffer(t, d, int64(size))
	if b.Size() != int64(size) {
		t.Fatalf("Size() = %d, want %d", b.Size(), size)
	}
	want := randBytes(rng, size)
	if err := b.Upload(ctx, 0, want); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if err := b.Download(ctx, 0, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("size %d: whole round trip differs", size)
	}
	// Overwrite odd ranges and read odd ranges back, checking against a model.
	for range 8 {
		off := rng.IntN(size)
		n := rng.IntN(size - off + 1)
		patch := randBytes(rng, n)
		if err := b.Upload(ctx, int64(off), patch); err != nil {
			t.Fatalf("Upload(%d, %d bytes): %v", off, n, err)
		}
		copy(want[off:], patch)
		off = rng.IntN(size)
		n = rng.IntN(size - off + 1)
		part := make([]byte, n)
		if err := b.Download(ctx, int64(off), part); err != nil {
			t.Fatalf("Download(%d, %d bytes): %v", off, n, err)
		}
		if !bytes.Equal(part, want[off:off+n]) {
			t.Fatalf("size %d: Download(%d, %d bytes) differs", size, off, n)
		}
	}
	if err := b.Download(ctx, 0, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("size %d: buffer differs from the model after partial uploads", size)
	}
}

func TestUploadDownload(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	rng := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{1, 3, 4, 13, 4097, 1<<20 + 13} {
		roundTrip(t, d, rng, size)
	}
}

// TestUploadDownloadLarge crosses the 32 MiB staging chunk (on devices whose buffers
// are not host visible) with a 40 MiB buffer.
func TestUploadDownloadLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("40 MiB transfer skipped with -short")
	}
	d := vktest.Device(t, vk.Features{})
	rng := rand.New(rand.NewPCG(5, 6))
	roundTrip(t, d, rng, 40<<20+7)
}

func TestBufferRangeErrors(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	ctx := context.Background()
	b := newBuffer(t, d, 100)
	cases := []struct {
		off int64
		n   int
	}{{-1, 1}, {-1, 0}, {100, 1}, {99, 2}, {0, 101}, {101, 0}, {1 << 62, 1}, {math.MaxInt64, 1}, {math.MaxInt64 - 50, 100}}
	for _, c := range cases {
		err := b.Upload(ctx, c.off, make([]byte, c.n))
		if err == nil || !strings.Contains(err.Error(), "Upload") || !strings.Contains(err.Error(), "outside buffer of 100 bytes") {
			t.Errorf("Upload(%d, %d bytes) = %v, want a range error", c.off, c.n, err)
		}
		err = b.Download(ctx, c.off, make([]byte, c.n))
		if err == nil || !strings.Contains(err.Error(), "Download") || !strings.Contains(err.Error(), "outside buffer of 100 bytes") {
			t.Errorf("Download(%d, %d bytes) = %v, want a range error", c.off, c.n, err)
		}
	}
	// Zero-length transfers inside the buffer (its end included) do nothing.
	for _, off := range []int64{0, 50, 100} {
		if err := b.Upload(ctx, off, nil); err != nil {
			t.Errorf("Upload(%d, nil) = %v", off, err)
		}
		if err := b.Download(ctx, off, []byte{}); err != nil {
			t.Errorf("Download(%d, empty) = %v", off, err)
		}
	}
	// Even a cancelled context is fine for a no-op.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.Upload(cctx, 0, nil); err != nil {
		t.Errorf("zero-length Upload with cancelled ctx = %v", err)
	}
}

func TestBufferClosed(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	ctx := context.Background()
	b, err := d.NewBuffer(64)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := b.Upload(ctx, 0, make([]byte, 8)); !errors.Is(err, vk.ErrClosed) {
		t.Errorf("Upload after Close = %v, want ErrClosed", err)
	}
	if err := b.Download(ctx, 0, make([]byte, 8)); !errors.Is(err, vk.ErrClosed) {
		t.Errorf("Download after Close = %v, want ErrClosed", err)
	}
}

// TestMemoryUse: Device.Memory counts buffers from allocation to destruction (a buffer
// closed while a Run binds it counts until the Run ends), and its peak.
func TestMemoryUse(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	base := d.Memory()
	a, err := d.NewBuffer(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.NewBuffer(3 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Memory().Live - base.Live; got < 4<<20 {
		t.Fatalf("two buffers of 4 MiB: %d bytes live", got)
	}
	b.Close()
	if got := d.Memory().Live - base.Live; got < 1<<20 || got >= 4<<20 {
		t.Fatalf("after closing 3 MiB of 4: %d bytes live", got)
	}
	if got := d.Memory().Peak - base.Live; got < 4<<20 {
		t.Fatalf("peak %d bytes, want at least 4 MiB", got)
	}
	d.ResetPeakMemory()
	if m := d.Memory(); m.Peak != m.Live {
		t.Fatalf("after ResetPeakMemory: %+v", m)
	}
	a.Close()
	a.Close()
	if got := d.Memory().Live; got != base.Live {
		t.Fatalf("every buffer closed: %d bytes live, %d before", got, base.Live)
	}
}

// TestMemoryCache: a closed buffer's memory goes to the cache and back to the next
// buffer of its size and kind, up to the limit; a cache of 0
// frees at once.
func TestMemoryCache(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	d.SetMemoryCache(4 << 20)
	defer d.SetMemoryCache(0)
	base := d.Memory()
	mk := func(n int64) *vk.Buffer {
		t.Helper()
		b, err := d.NewBuffer(n)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a := mk(1 << 20)
	if err := a.Upload(context.Background(), 0, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	a.Close()
	m := d.Memory()
	if m.Live != base.Live || m.Cached < 1<<20 {
		t.Fatalf("after closing 1 MiB: %+v (before %+v)", m, base)
	}
	b := mk(1 << 20) // a's memory again
	if m := d.Memory(); m.Cached != base.Cached || m.Live < base.Live+1<<20 {
		t.Fatalf("a buffer of the cached size: %+v", m)
	}
	// Reused memory holds what it held: every byte written here reads back.
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i * 7)
	}
	if err := b.Upload(context.Background(), 0, want); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1<<20)
	if err := b.Download(context.Background(), 0, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("reused buffer: download differs from upload")
	}
	b.Close()
	c := mk(2 << 20)
	c.Close()
	e := mk(2 << 20) // c's
	e.Close()
	f := mk(1 << 20) // b's
	f.Close()
	if m := d.Memory(); m.Cached > 4<<20 || m.Cached < 3<<20 {
		t.Fatalf("1 + 2 MiB cached under a 4 MiB limit: %+v", m)
	}
	big := mk(5 << 20) // over the limit: freed at once on Close
	big.Close()
	if m := d.Memory(); m.Cached > 4<<20 || m.Cached < 3<<20 {
		t.Fatalf("a buffer over the limit stays cached: %+v", m)
	}
	d.SetMemoryCache(1 << 20)
	if m := d.Memory(); m.Cached > 1<<20 {
		t.Fatalf("after lowering the limit to 1 MiB: %+v", m)
	}
	d.SetMemoryCache(0)
	if m := d.Memory(); m.Cached != 0 || m.Live != base.Live {
		t.Fatalf("cache off: %+v", m)
	}
}
