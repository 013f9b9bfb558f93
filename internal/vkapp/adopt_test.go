// The tests of dmavk on an application's device live here, beside the application,
// rather than in package dma: vulkan-go's wrappers store Go pointers in C memory, which
// the cgocheck2 run of package dma (tools/test.sh) would stop at.
package vkapp_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/heatmap"
	"github.com/dmavk/dmavk/internal/f16"
	"github.com/dmavk/dmavk/internal/vkapp"
	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/ref"
	"github.com/dmavk/dmavk/vk"
	"github.com/stretchr/testify/require"
	vulkan "github.com/vulkan-go/vulkan"
)

// open returns a dma.Device that dmavk opens itself on the test device.
func open(t *testing.T) *dma.Device {
	t.Helper()
	in := vktest.Instance(t)
	pd, err := in.Choose()
	require.NoError(t, err)
	d, err := dma.OpenOn(in, pd, dma.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

func seed(t *testing.T) *rand.Rand {
	s := rand.Uint64()
	t.Logf("seed %d", s)
	return rand.New(rand.NewPCG(s, 1))
}

// tensor uploads data (nil: a fixed pattern) into a new BLHD tensor of d.
func tensor(t *testing.T, d *dma.Device, dt dma.DType, s dma.Shape, data []float32) *dma.Tensor {
	t.Helper()
	x, err := d.NewTensor(dt, s, dma.BLHD)
	require.NoError(t, err)
	t.Cleanup(func() { x.Close() })
	if data == nil {
		data = make([]float32, s.Elems())
		for i := range data {
			data[i] = float32(math.Sin(float64(i)))
		}
	}
	require.NoError(t, x.Upload(context.Background(), data))
	return x
}

// newApp creates an application's own instance and device with vulkan-go, validation
// and synchronization validation on (required under DMAVK_VALIDATE=1 and in CI; else
// on when the layer is installed), and fails the test on any message it reports.
func newApp(t *testing.T, request func(vk.PhysicalDevice) vk.DeviceRequest) *vkapp.App {
	t.Helper()
	vktest.Instance(t) // skips cleanly where there is no loader at all
	cfg := vkapp.Config{Validate: true, SyncValidation: true, Request: request, Graphics: true}
	app, err := vkapp.New(cfg)
	if err != nil && !vk.ValidationRequested() && os.Getenv("CI") == "" {
		t.Logf("no validation layer (%v): the application runs without it", err)
		cfg.Validate = false
		app, err = vkapp.New(cfg)
	}
	require.NoError(t, err)
	t.Cleanup(func() {
		app.DestroyDevice() // the validation layer reports here any object dmavk left behind
		checkAppMessages(t, app)
		app.Destroy()
	})
	return app
}

func checkAppMessages(t *testing.T, app *vkapp.App) {
	t.Helper()
	for _, m := range app.Adopted.Messages() {
		if m.Validation || m.Severity == "error" {
			t.Errorf("validation %s: %s", m.Severity, m.Text)
		}
	}
}

// appTensor puts data ([B, L, H, D] order, BLHD) into a buffer of the application's
// and returns it as a dmavk tensor that reads it in place.
func appTensor(t *testing.T, app *vkapp.App, d *dma.Device, dt dma.DType, s dma.Shape, data []float32) (*vkapp.Buffer, *dma.Tensor) {
	t.Helper()
	n := int64(s.Elems()*dt.Size()+3) &^ 3
	// An offset into the buffer, as an application packing several arrays would.
	off := int64(d.VK().Caps().MinStorageBufferAlign)
	b, err := app.NewBuffer(off + n)
	require.NoError(t, err)
	t.Cleanup(func() { app.FreeBuffer(b) })
	for i, x := range data {
		if dt == dma.Float16 {
			binary.LittleEndian.PutUint16(b.Mapped[off+2*int64(i):], f16.FromFloat32(x))
		} else {
			binary.LittleEndian.PutUint32(b.Mapped[off+4*int64(i):], math.Float32bits(x))
		}
	}
	x, err := d.TensorFromBuffer(b.Handle(), off, dt, s, dma.BLHD)
	require.NoError(t, err)
	t.Cleanup(func() { x.Close() })
	return b, x
}

func float64s(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// TestAdoptedDevice: an application creates its instance and device with vulkan-go,
// enabling what dma.Recommend lists; dmavk adopts them, runs every path the device
// has (the same as on a device dmavk opens itself), records Forward into the
// application's command buffer (results read by the application's own copy after
// dmavk's barrier, with tensors in the application's buffers), submits behind and
// ahead of the application's semaphores, records a KV-cache step, draws a heat map
// into the application's image, and closes without touching what the application
// owns, all with validation and synchronization validation silent.
func TestAdoptedDevice(t *testing.T) {
	app := newApp(t, dma.Recommend)
	d, err := app.Adopt()
	require.NoError(t, err)
	defer func() { require.NoError(t, d.Close()) }()
	ctx := context.Background()
	rng := seed(t)

	// The paths are those of a device dmavk opens itself on the same GPU.
	own := open(t)
	require.Equal(t, own.Paths(), d.Paths())
	for _, p := range d.Paths() {
		t.Logf("%v: forward %s, decode %v %s", p.DType, p.Forward, p.Decode, p.DecodeWhyNot)
	}
	caps, err := app.PD.CapsWith(app.Enabled)
	require.NoError(t, err)
	require.Equal(t, dma.PathsFor(caps), d.Paths())

	for _, dt := range []dma.DType{dma.Float32, dma.Float16} {
		t.Run(dt.String(), func(t *testing.T) {
			qs := dma.Shape{B: 1, L: 75, H: 4, D: 64}
			ks := dma.Shape{B: 1, L: 75, H: 2, D: 64}
			qd := make([]float32, qs.Elems())
			kd := make([]float32, ks.Elems())
			vd := make([]float32, ks.Elems())
			wd := make([]float32, 2*ks.L)
			for _, x := range [][]float32{qd, kd, vd, wd} {
				for i := range x {
					x[i] = float32(rng.NormFloat64())
					if dt == dma.Float16 {
						x[i] = f16.ToFloat32(f16.FromFloat32(x[i]))
					}
				}
			}
			_, q := appTensor(t, app, d, dt, qs, qd)
			_, k := appTensor(t, app, d, dt, ks, kd)
			_, v := appTensor(t, app, d, dt, ks, vd)
			oBuf, o := appTensor(t, app, d, dt, qs, make([]float32, qs.Elems()))
			w, err := d.NewWeights(1, 2, ks.L)
			require.NoError(t, err)
			defer w.Close()
			require.NoError(t, w.Upload(ctx, wd))
			opt := dma.Options{Mode: dma.ModeRow, Window: 9, Causal: true, Weights: w}
			out, err := d.NewResult(q)
			require.NoError(t, err)
			out.O.Close()
			out.O = o // the result lands in the application's buffer
			defer out.LSE.Close()

			// The application's frame: dmavk's Forward, then its own copy of O.
			readback, err := app.NewBuffer(oBuf.Size)
			require.NoError(t, err)
			defer app.FreeBuffer(readback)
			cmd, err := app.NewCommandBuffer()
			require.NoError(t, err)
			defer app.FreeCommandBuffer(cmd)
			require.NoError(t, vkapp.Begin(cmd))
			rec, err := d.RecordInto(vkapp.CommandBufferHandle(cmd), vk.Visibility{Stage: vk.StageHost, Access: vk.AccessHostWrite}, vk.ForTransfer,
				func(r *dma.Recording) error { return r.Forward(ctx, q, k, v, opt, out) })
			require.NoError(t, err)
			vulkan.CmdCopyBuffer(cmd, oBuf.Buf, readback.Buf, 1, []vulkan.BufferCopy{{Size: vulkan.DeviceSize(oBuf.Size)}})
			vkapp.Barrier(cmd, vk.StageTransfer, vk.AccessTransferWrite, vk.StageHost, vk.AccessHostRead)
			_, err = app.Submit(cmd, vkapp.Submission{}, true)
			require.NoError(t, err)
			require.NoError(t, rec.Release())
			t.Logf("path %s", out.Path)

			got := make([]float32, qs.Elems())
			for i := range got {
				if dt == dma.Float16 {
					got[i] = f16.ToFloat32(binary.LittleEndian.Uint16(readback.Mapped[int64(d.VK().Caps().MinStorageBufferAlign)+2*int64(i):]))
				} else {
					got[i] = math.Float32frombits(binary.LittleEndian.Uint32(readback.Mapped[int64(d.VK().Caps().MinStorageBufferAlign)+4*int64(i):]))
				}
			}
			// Against the float64 reference, and bit for bit against dmavk's own submission.
			rq := &ref.Tensor4{B: 1, L: qs.L, H: qs.H, D: qs.D, Data: float64s(qd)}
			rk := &ref.Tensor4{B: 1, L: ks.L, H: ks.H, D: ks.D, Data: float64s(kd)}
			rv := &ref.Tensor4{B: 1, L: ks.L, H: ks.H, D: ks.D, Data: float64s(vd)}
			wo, _, err := ref.Forward(rq, rk, rv, float64s(wd), 2, ref.Options{Mode: ref.ModeRow, Window: 9, Causal: true})
			require.NoError(t, err)
			tol := 1e-5
			if dt == dma.Float16 {
				tol = 2e-3
			}
			maxRef := 0.0
			for _, x := range wo.Data {
				maxRef = max(maxRef, math.Abs(x))
			}
			require.LessOrEqual(t, ref.MaxAbsDiff(float64s(got), wo.Data), tol*maxRef)
			mine, err := d.Forward(ctx, q, k, v, opt)
			require.NoError(t, err)
			defer mine.Close()
			want, err := mine.O.Download(ctx)
			require.NoError(t, err)
			require.Equal(t, want, got)
			require.Equal(t, mine.Path, out.Path)

			// dmavk's own submission between the application's: it waits on the semaphore
			// the application's first submission signals, and signals one that the
			// application's readback waits on.
			before, err := app.NewSemaphore()
			require.NoError(t, err)
			defer vulkan.DestroySemaphore(app.Device, before, nil)
			after, err := app.NewSemaphore()
			require.NoError(t, err)
			defer vulkan.DestroySemaphore(app.Device, after, nil)
			first, err := app.NewCommandBuffer()
			require.NoError(t, err)
			defer app.FreeCommandBuffer(first)
			require.NoError(t, vkapp.Begin(first))
			vulkan.CmdFillBuffer(first, oBuf.Buf, 0, vulkan.DeviceSize(oBuf.Size), 0) // clear O on the GPU
			fence1, err := app.Submit(first, vkapp.Submission{Signal: []vulkan.Semaphore{before}}, false)
			require.NoError(t, err)
			sub, err := d.SubmitWith(vk.Sync{
				Wait:   []vk.Semaphore{{Handle: vkapp.SemaphoreHandle(before), Stage: vk.StageTransfer | vk.StageComputeShader}},
				Signal: []vk.Semaphore{{Handle: vkapp.SemaphoreHandle(after)}},
			}, func(r *dma.Recording) error { return r.Forward(ctx, q, k, v, opt, out) })
			require.NoError(t, err)
			last, err := app.NewCommandBuffer()
			require.NoError(t, err)
			defer app.FreeCommandBuffer(last)
			require.NoError(t, vkapp.Begin(last))
			vulkan.CmdFillBuffer(last, readback.Buf, 0, vulkan.DeviceSize(readback.Size), 0)
			vkapp.Barrier(last, vk.StageTransfer, vk.AccessTransferWrite, vk.StageTransfer, vk.AccessTransferWrite)
			vulkan.CmdCopyBuffer(last, oBuf.Buf, readback.Buf, 1, []vulkan.BufferCopy{{Size: vulkan.DeviceSize(oBuf.Size)}})
			vkapp.Barrier(last, vk.StageTransfer, vk.AccessTransferWrite, vk.StageHost, vk.AccessHostRead)
			_, err = app.Submit(last, vkapp.Submission{Wait: []vulkan.Semaphore{after},
				WaitStages: []vulkan.PipelineStageFlags{vulkan.PipelineStageFlags(vk.StageTransfer)}}, true)
			require.NoError(t, err)
			require.NoError(t, sub.Wait(ctx))
			require.NoError(t, app.WaitFence(fence1))
			for i := range got {
				a := int64(d.VK().Caps().MinStorageBufferAlign)
				if dt == dma.Float16 {
					got[i] = f16.ToFloat32(binary.LittleEndian.Uint16(readback.Mapped[a+2*int64(i):]))
				} else {
					got[i] = math.Float32frombits(binary.LittleEndian.Uint32(readback.Mapped[a+4*int64(i):]))
				}
			}
			require.Equal(t, want, got)
		})
	}

	t.Run("decode_step", func(t *testing.T) { adoptedDecodeStep(t, app, d) })
	t.Run("heatmap_into_application_image", func(t *testing.T) { adoptedHeatMap(t, app, d) })
	checkAppMessages(t, app)
}

// adoptedDecodeStep records a KV-cache step into the application's command buffer and
// checks it against the same step through AppendAttendInto, bit for bit.
func adoptedDecodeStep(t *testing.T, app *vkapp.App, d *dma.Device) {
	ctx := context.Background()
	rng := seed(t)
	cfg := dma.KVCacheConfig{Sequences: 1, Capacity: 64, KVHeads: 2, HeadDim: 32, DType: dma.Float32}
	rnd := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		return x
	}
	kp, vp, wp := rnd(40*2*32), rnd(40*2*32), rnd(2*40)
	k1, v1, w1, q1 := rnd(2*32), rnd(2*32), rnd(2), rnd(4*32)
	var outs [2][]float32
	for run := range 2 {
		c, err := d.NewKVCache(cfg)
		require.NoError(t, err)
		defer c.Close()
		kt := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 40, H: 2, D: 32}, kp)
		vt := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 40, H: 2, D: 32}, vp)
		wt, err := d.NewWeights(1, 2, 40)
		require.NoError(t, err)
		defer wt.Close()
		require.NoError(t, wt.Upload(ctx, wp))
		require.NoError(t, c.Append(ctx, 0, kt, vt, wt))
		k := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 1, H: 2, D: 32}, k1)
		v := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 1, H: 2, D: 32}, v1)
		w, err := d.NewWeights(1, 2, 1)
		require.NoError(t, err)
		defer w.Close()
		require.NoError(t, w.Upload(ctx, w1))
		q := tensor(t, d, dma.Float32, dma.Shape{B: 1, L: 1, H: 4, D: 32}, q1)
		out, err := c.NewResult(q)
		require.NoError(t, err)
		defer out.Close()
		opt := dma.Options{Mode: dma.ModeRow, Window: 7, Causal: true}
		if run == 0 {
			require.NoError(t, c.AppendAttendInto(ctx, 0, k, v, w, q, out, opt))
		} else {
			cmd, err := app.NewCommandBuffer()
			require.NoError(t, err)
			defer app.FreeCommandBuffer(cmd)
			require.NoError(t, vkapp.Begin(cmd))
			rec, err := d.RecordInto(vkapp.CommandBufferHandle(cmd), vk.Visibility{}, vk.ForHost, func(r *dma.Recording) error {
				return r.AppendAttend(c, 0, k, v, w, q, out, opt)
			})
			require.NoError(t, err)
			require.Equal(t, 41, c.Len(0))
			_, err = app.Submit(cmd, vkapp.Submission{}, true)
			require.NoError(t, err)
			require.NoError(t, rec.Release())
		}
		outs[run], err = out.O.Download(ctx)
		require.NoError(t, err)
	}
	require.Equal(t, outs[0], outs[1])
}

// adoptedHeatMap draws a heat map in the application's frame: dmavk's shader writes
// the pixels, the application copies them into its image and back, and they equal
// the PNG path's picture.
func adoptedHeatMap(t *testing.T, app *vkapp.App, d *dma.Device) {
	ctx := context.Background()
	rng := seed(t)
	w, err := d.NewWeights(1, 2, 90)
	require.NoError(t, err)
	defer w.Close()
	vals := make([]float32, 180)
	for i := range vals {
		vals[i] = float32(rng.NormFloat64())
	}
	require.NoError(t, w.Upload(ctx, vals))
	sel, err := d.Select(ctx, w, dma.SelectOptions{H: 2, Mode: dma.ModeRow, Window: 11, Causal: true})
	require.NoError(t, err)
	defer sel.Close()
	r, err := heatmap.New(d)
	require.NoError(t, err)
	defer r.Close()
	view := heatmap.View{Head: 1, Width: 160, Height: 130, Zoom: 1.5, Row0: 10, Key0: 20}
	want, err := r.Image(ctx, sel, view)
	require.NoError(t, err)

	n := int64(view.Width * view.Height * 4)
	pixels, err := d.VK().NewBuffer(n)
	require.NoError(t, err)
	defer pixels.Close()
	staging, err := app.NewBuffer(n)
	require.NoError(t, err)
	defer app.FreeBuffer(staging)
	img, err := app.NewImage(view.Width, view.Height, vulkan.FormatR8g8b8a8Unorm)
	require.NoError(t, err)
	defer app.FreeImage(img)
	pixelsApp, err := app.NewBuffer(n) // the application's buffer that dmavk draws into
	require.NoError(t, err)
	defer app.FreeBuffer(pixelsApp)
	target, err := d.VK().WrapBuffer(pixelsApp.Handle(), 0, n)
	require.NoError(t, err)
	defer target.Close()

	cmd, err := app.NewCommandBuffer()
	require.NoError(t, err)
	defer app.FreeCommandBuffer(cmd)
	require.NoError(t, vkapp.Begin(cmd))
	rec, err := d.RecordInto(vkapp.CommandBufferHandle(cmd), vk.Visibility{}, vk.ForTransfer, func(rec *dma.Recording) error {
		return rec.Layer(func(vr *vk.Recorder) error { return r.Record(vr, sel, view, target, false) })
	})
	require.NoError(t, err)
	// Closing what the recorded commands use, before the application submits them, is
	// safe: the pipeline, the selection's buffers and the wrapped target live on until
	// Release.
	require.NoError(t, r.Close())
	require.NoError(t, sel.Close())
	require.NoError(t, target.Close())
	vkapp.ImageBarrier(cmd, img.Img, vulkan.ImageLayoutUndefined, vulkan.ImageLayoutTransferDstOptimal, vk.StageTopOfPipe, 0, vk.StageTransfer, vk.AccessTransferWrite)
	vkapp.CopyBufferToImage(cmd, pixelsApp.Buf, img.Img, view.Width, view.Height)
	vkapp.ImageBarrier(cmd, img.Img, vulkan.ImageLayoutTransferDstOptimal, vulkan.ImageLayoutTransferSrcOptimal, vk.StageTransfer, vk.AccessTransferWrite, vk.StageTransfer, vk.AccessTransferRead)
	vkapp.CopyImageToBuffer(cmd, img.Img, staging.Buf, view.Width, view.Height)
	vkapp.Barrier(cmd, vk.StageTransfer, vk.AccessTransferWrite, vk.StageHost, vk.AccessHostRead)
	_, err = app.Submit(cmd, vkapp.Submission{}, true)
	require.NoError(t, err)
	require.NoError(t, rec.Release())
	require.True(t, bytes.Equal(want.Pix, staging.Mapped), "the application's image differs from the PNG path's picture")
}

// TestAdoptMinimalDevice: a device created with only what dma.Required lists runs the
// portable paths, and says so.
func TestAdoptMinimalDevice(t *testing.T) {
	app := newApp(t, dma.Required)
	d, err := app.Adopt()
	require.NoError(t, err)
	defer func() { require.NoError(t, d.Close()) }()
	for _, p := range d.Paths() {
		require.Equal(t, "portable", p.Forward, "%v", p.DType)
	}
	ctx := context.Background()
	q := tensor(t, d, dma.Float16, dma.Shape{B: 1, L: 20, H: 2, D: 16}, nil)
	k := tensor(t, d, dma.Float16, dma.Shape{B: 1, L: 20, H: 2, D: 16}, nil)
	res, err := d.Forward(ctx, q, k, k, dma.Options{Mode: dma.ModeNone, Causal: true})
	require.NoError(t, err)
	defer res.Close()
	require.Equal(t, "portable", res.Path)
}

// TestSyncValidationIsOn: the application's instance reports a write-after-write
// hazard, so the silence of the tests above means something.
func TestSyncValidationIsOn(t *testing.T) {
	app := newApp(t, nil)
	b, err := app.NewBuffer(256)
	require.NoError(t, err)
	defer app.FreeBuffer(b)
	cmd, err := app.NewCommandBuffer()
	require.NoError(t, err)
	defer app.FreeCommandBuffer(cmd)
	require.NoError(t, vkapp.Begin(cmd))
	vulkan.CmdFillBuffer(cmd, b.Buf, 0, 256, 1)
	vulkan.CmdFillBuffer(cmd, b.Buf, 0, 256, 2) // no barrier: a hazard
	_, err = app.Submit(cmd, vkapp.Submission{}, true)
	require.NoError(t, err)
	msgs := app.Adopted.Messages()
	if !app.Adopted.Validating() {
		t.Skip("no validation layer on this machine")
	}
	found := false
	for _, m := range msgs {
		found = found || strings.Contains(m.Text, "SYNC-HAZARD-WRITE-AFTER-WRITE") || strings.Contains(m.Text, "WRITE_AFTER_WRITE")
	}
	require.True(t, found, "synchronization validation reported nothing: %v", msgs)
}

func TestAdoptBadInput(t *testing.T) {
	app := newApp(t, nil)
	a := app.AppDevice()
	bad := a
	bad.QueueFamily = 99
	_, err := dma.Adopt(app.Adopted, bad)
	require.ErrorContains(t, err, "queue family 99")
	bad = a
	bad.QueueIndex = 5
	_, err = dma.Adopt(app.Adopted, bad)
	require.ErrorContains(t, err, "queue index 5")
	bad = a
	bad.Device = 0
	_, err = dma.Adopt(app.Adopted, bad)
	require.ErrorContains(t, err, "device handle is zero")
	bad = a
	bad.PhysicalDevice = 12345
	_, err = dma.Adopt(app.Adopted, bad)
	require.ErrorContains(t, err, "not one of this instance's")
	// Features the application did not enable with their extension are refused.
	bad = a
	bad.Enabled = vk.DeviceRequest{Features: vk.FeatureSet{CooperativeMatrix: true}}
	_, err = dma.Adopt(app.Adopted, bad)
	require.Error(t, err)
	_, err = dma.Adopt(nil, a)
	require.ErrorContains(t, err, "nil instance")
	// This device was created with nothing enabled.
	_, err = dma.Adopt(app.Adopted, a)
	require.ErrorContains(t, err, "without maintenance4")
}

func TestAdoptedTensorsBadInput(t *testing.T) {
	app := newApp(t, dma.Required)
	d, err := app.Adopt()
	require.NoError(t, err)
	_, err = d.TensorFromBuffer(0, 0, dma.Float32, dma.Shape{B: 1, L: 1, H: 1, D: 8}, dma.BLHD)
	require.ErrorContains(t, err, "handle is zero")
	_, err = d.TensorFromBuffer(1, 3, dma.Float32, dma.Shape{B: 1, L: 1, H: 1, D: 8}, dma.BLHD)
	if a := d.VK().Caps().MinStorageBufferAlign; a > 1 {
		require.ErrorContains(t, err, "multiple of minStorageBufferOffsetAlignment")
	}
	_, err = d.SubmitWith(vk.Sync{Wait: []vk.Semaphore{{}}}, func(*dma.Recording) error { return nil })
	require.ErrorContains(t, err, "zero handle")
	// While a recording is not released, Close refuses (its commands use dmavk's
	// pipelines); a Recording kept past its function refuses to record.
	cmd, err := app.NewCommandBuffer()
	require.NoError(t, err)
	defer app.FreeCommandBuffer(cmd)
	require.NoError(t, vkapp.Begin(cmd))
	var kept *dma.Recording
	rec, err := d.RecordInto(vkapp.CommandBufferHandle(cmd), vk.Visibility{}, vk.ForHost, func(r *dma.Recording) error {
		kept = r
		return nil
	})
	require.NoError(t, err)
	vulkan.EndCommandBuffer(cmd)
	require.ErrorContains(t, kept.Layer(func(*vk.Recorder) error { return nil }), "used after the recording function returned")
	require.ErrorContains(t, d.Close(), "not released")
	require.NoError(t, rec.Release())
	require.NoError(t, rec.Release())
	require.NoError(t, d.Close())
}
