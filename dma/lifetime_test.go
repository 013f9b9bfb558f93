package dma_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dmavk/dmavk/dma"
	"github.com/stretchr/testify/require"
)

// objects is one of everything a Device hands out, each used once, so that closing
// them exercises every kind of state: tensors, weights, a key padding, a mask, a bias,
// a Forward result with computed weights, Backward's gradients, a KV cache with recorded
// appends and steps, and a step result.
type objects struct {
	q, k, v, dO         *dma.Tensor
	w                   *dma.Weights
	kp                  *dma.KeyPadding
	mask                *dma.Mask
	bias                *dma.Bias
	wp                  *dma.WeightParams
	res                 *dma.Result
	grads               *dma.Grads
	cache               *dma.KVCache
	qStep, kStep, vStep *dma.Tensor
	wStep               *dma.Weights
	out                 *dma.Result
}

const lifeL, lifeH, lifeHkv, lifeD = 40, 4, 2, 32

func newObjects(t *testing.T, d *dma.Device) *objects {
	t.Helper()
	ctx := context.Background()
	o := &objects{}
	data := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(i%7)/7 - 0.5
		}
		return x
	}
	tensor := func(l, h int) *dma.Tensor {
		s := dma.Shape{B: 1, L: l, H: h, D: lifeD}
		x, err := d.TensorFrom(ctx, dma.Float16, s, dma.BLHD, data(s.Elems()))
		require.NoError(t, err)
		return x
	}
	o.q, o.k, o.v, o.dO = tensor(lifeL, lifeH), tensor(lifeL, lifeHkv), tensor(lifeL, lifeHkv), tensor(lifeL, lifeH)
	var err error
	o.w, err = d.NewWeights(1, lifeHkv, lifeL)
	require.NoError(t, err)
	require.NoError(t, o.w.Upload(ctx, data(lifeHkv*lifeL)))
	valid := make([]bool, lifeL)
	for i := range valid {
		valid[i] = i%5 != 3
	}
	o.kp, err = d.NewKeyPadding(ctx, 1, lifeL, valid)
	require.NoError(t, err)
	ms := dma.MaskShape{B: 1, H: 1, Lq: lifeL, Lk: lifeL}
	o.mask, err = d.NewMask(ctx, ms, make([]bool, lifeL*lifeL))
	require.NoError(t, err)
	o.bias, err = d.NewBias(ctx, ms, data(lifeL*lifeL))
	require.NoError(t, err)
	o.wp = &dma.WeightParams{Hb: lifeHkv, Wdt: data(lifeHkv * lifeD * lifeHkv), A: []float32{0.5, -0.25}}
	opt := dma.Options{Window: 8, Causal: true, WeightParams: o.wp}
	o.res, err = d.Forward(ctx, o.q, o.k, o.v, opt)
	require.NoError(t, err)
	o.grads, err = d.Backward(ctx, o.q, o.k, o.v, o.res, o.dO, opt, dma.BackwardOptions{})
	require.NoError(t, err)
	o.cache, err = d.NewKVCache(dma.KVCacheConfig{Sequences: 2, Capacity: 2 * lifeL, KVHeads: lifeHkv, HeadDim: lifeD, DType: dma.Float16})
	require.NoError(t, err)
	require.NoError(t, o.cache.Append(ctx, 0, o.k, o.v, o.w))
	o.qStep, o.kStep, o.vStep = tensor(1, lifeH), tensor(1, lifeHkv), tensor(1, lifeHkv)
	o.wStep, err = d.NewWeights(1, lifeHkv, 1)
	require.NoError(t, err)
	require.NoError(t, o.wStep.Upload(ctx, []float32{1, 2}))
	o.out, err = o.cache.NewResult(o.qStep)
	require.NoError(t, err)
	// Recorded programs: a recorded append, a recorded step, a recorded append and step.
	require.NoError(t, o.cache.Append(ctx, 1, o.kStep, o.vStep, o.wStep))
	step := dma.Options{Window: 8, Causal: true}
	require.NoError(t, o.cache.AttendInto(ctx, 1, o.qStep, o.out, step))
	require.NoError(t, o.cache.AppendAttendInto(ctx, 0, o.kStep, o.vStep, o.wStep, o.qStep, o.out, step))
	return o
}

type closer struct {
	name string
	c    interface{ Close() error }
}

// closers are every object's Close, in creation order.
func (o *objects) closers() []closer {
	return []closer{
		{"q", o.q}, {"k", o.k}, {"v", o.v}, {"dO", o.dO}, {"weights", o.w}, {"key padding", o.kp},
		{"mask", o.mask}, {"bias", o.bias}, {"result", o.res}, {"result O", o.res.O}, {"result LSE", o.res.LSE},
		{"result weights", o.res.Weights}, {"grads", o.grads}, {"grad dK", o.grads.DK}, {"cache", o.cache},
		{"step q", o.qStep}, {"step k", o.kStep}, {"step v", o.vStep}, {"step weights", o.wStep},
		{"step result", o.out}, {"step result O", o.out.O},
	}
}

// requireClosed checks that every call on the objects fails with ErrClosed, whose
// message names the call and the closed argument.
func (o *objects) requireClosed(t *testing.T, d *dma.Device, deviceClosed bool) {
	t.Helper()
	ctx := context.Background()
	is := func(err error, want string) {
		t.Helper()
		require.ErrorIs(t, err, dma.ErrClosed)
		if deviceClosed {
			want = "the device"
		}
		require.ErrorContains(t, err, want+" is closed")
	}
	opt := dma.Options{Window: 8, Causal: true, WeightParams: o.wp}
	_, err := d.Forward(ctx, o.q, o.k, o.v, opt)
	is(err, "q")
	_, err = o.q.Download(ctx)
	is(err, "the tensor")
	is(o.q.Upload(ctx, make([]float32, lifeL*lifeH*lifeD)), "the tensor")
	_, err = o.w.Download(ctx)
	is(err, "the weights")
	_, err = o.res.LSE.Download(ctx)
	is(err, "the LSE")
	is(o.cache.Append(ctx, 0, o.kStep, o.vStep, o.wStep), "the cache")
	_, err = o.cache.Attend(ctx, 0, o.qStep, dma.Options{Window: 8, Causal: true})
	is(err, "the cache")
	is(o.cache.Reset(0), "the cache")
	require.Zero(t, o.cache.Len(0))
}

// TestCloseDeviceFirst: the device's Close releases everything still open; every later
// Close returns nil and does nothing, and every use fails with ErrClosed.
func TestCloseDeviceFirst(t *testing.T) {
	d := open(t)
	o := newObjects(t, d)
	require.NoError(t, d.Close())
	require.NoError(t, d.Close())
	for range 2 {
		for _, c := range o.closers() {
			require.NoError(t, c.c.Close(), c.name)
		}
	}
	o.requireClosed(t, d, true)
	_, err := d.NewTensor(dma.Float32, dma.Shape{B: 1, L: 1, H: 1, D: 8}, dma.BLHD)
	require.ErrorIs(t, err, dma.ErrClosed)
	require.EqualError(t, err, "dma: NewTensor: the device is closed")
	_, err = d.NewKVCache(dma.KVCacheConfig{Sequences: 1, Capacity: 1, KVHeads: 1, HeadDim: 8})
	require.EqualError(t, err, "dma: NewKVCache: the device is closed")
}

// TestCloseAnyOrder: objects and their device closed in random orders, the device
// anywhere among them, each object twice.
func TestCloseAnyOrder(t *testing.T) {
	rng := seed(t)
	for round := range 6 {
		d := open(t)
		o := newObjects(t, d)
		cs := append(o.closers(), closer{"device", d})
		cs = append(cs, cs...)
		rng.Shuffle(len(cs), func(i, j int) { cs[i], cs[j] = cs[j], cs[i] })
		if round == 0 { // children first, then the device
			cs = append(o.closers(), closer{"device", d})
		}
		for _, c := range cs {
			require.NoError(t, c.c.Close(), "round %d: %s", round, c.name)
		}
		require.NoError(t, d.Close())
		o.requireClosed(t, d, true)
	}
}

// TestClosedArgumentNamed: a closed argument of any call fails it before any GPU work,
// with ErrClosed and the argument's name; the device and the other arguments stay
// usable.
func TestClosedArgumentNamed(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	opt := func(o *objects) dma.Options { return dma.Options{Window: 8, Causal: true, WeightParams: o.wp} }
	step := dma.Options{Window: 8, Causal: true}
	cases := []struct {
		want  string
		close func(o *objects) interface{ Close() error }
		call  func(o *objects) error
	}{
		{"dma: Forward: q is closed", func(o *objects) interface{ Close() error } { return o.q },
			func(o *objects) error { _, err := d.Forward(ctx, o.q, o.k, o.v, opt(o)); return err }},
		{"dma: Forward: k is closed", func(o *objects) interface{ Close() error } { return o.k },
			func(o *objects) error { _, err := d.Forward(ctx, o.q, o.k, o.v, opt(o)); return err }},
		{"dma: ForwardProfiled: v is closed", func(o *objects) interface{ Close() error } { return o.v },
			func(o *objects) error { _, _, err := d.ForwardProfiled(ctx, o.q, o.k, o.v, opt(o)); return err }},
		{"dma: Forward: opt.Weights is closed", func(o *objects) interface{ Close() error } { return o.w },
			func(o *objects) error {
				_, err := d.Forward(ctx, o.q, o.k, o.v, dma.Options{Window: 8, Weights: o.w})
				return err
			}},
		{"dma: Forward: opt.KeyPadding is closed", func(o *objects) interface{ Close() error } { return o.kp },
			func(o *objects) error {
				_, err := d.Forward(ctx, o.q, o.k, o.v, dma.Options{KeyPadding: o.kp})
				return err
			}},
		{"dma: Forward: opt.Mask is closed", func(o *objects) interface{ Close() error } { return o.mask },
			func(o *objects) error {
				_, err := d.Forward(ctx, o.q, o.k, o.v, dma.Options{Mode: dma.ModeExplicit, Mask: o.mask, Bias: o.bias})
				return err
			}},
		{"dma: Forward: opt.Bias is closed", func(o *objects) interface{ Close() error } { return o.bias },
			func(o *objects) error {
				_, err := d.Forward(ctx, o.q, o.k, o.v, dma.Options{Mode: dma.ModeExplicit, Mask: o.mask, Bias: o.bias})
				return err
			}},
		{"dma: Backward: dO is closed", func(o *objects) interface{ Close() error } { return o.dO },
			func(o *objects) error {
				_, err := d.Backward(ctx, o.q, o.k, o.v, o.res, o.dO, opt(o), dma.BackwardOptions{})
				return err
			}},
		{"dma: Backward: res.O is closed", func(o *objects) interface{ Close() error } { return o.res.O },
			func(o *objects) error {
				_, err := d.Backward(ctx, o.q, o.k, o.v, o.res, o.dO, opt(o), dma.BackwardOptions{})
				return err
			}},
		{"dma: Backward: res.LSE is closed", func(o *objects) interface{ Close() error } { return o.res.LSE },
			func(o *objects) error {
				_, err := d.Backward(ctx, o.q, o.k, o.v, o.res, o.dO, opt(o), dma.BackwardOptions{})
				return err
			}},
		{"dma: Backward: res.Weights is closed", func(o *objects) interface{ Close() error } { return o.res.Weights },
			func(o *objects) error {
				_, err := d.Backward(ctx, o.q, o.k, o.v, o.res, o.dO, opt(o), dma.BackwardOptions{})
				return err
			}},
		{"dma: DynamicWeights: v is closed", func(o *objects) interface{ Close() error } { return o.v },
			func(o *objects) error { _, err := d.DynamicWeights(ctx, o.v, o.wp); return err }},
		{"dma: Tensor.Upload: the tensor is closed", func(o *objects) interface{ Close() error } { return o.q },
			func(o *objects) error { return o.q.Upload(ctx, make([]float32, lifeL*lifeH*lifeD)) }},
		{"dma: Tensor.UploadHalf: the tensor is closed", func(o *objects) interface{ Close() error } { return o.q },
			func(o *objects) error { return o.q.UploadHalf(ctx, make([]uint16, lifeL*lifeH*lifeD)) }},
		{"dma: Tensor.DownloadHalf: the tensor is closed", func(o *objects) interface{ Close() error } { return o.q },
			func(o *objects) error { _, err := o.q.DownloadHalf(ctx); return err }},
		{"dma: Tensor.Download: the tensor is closed", func(o *objects) interface{ Close() error } { return o.grads.DQ },
			func(o *objects) error { _, err := o.grads.DQ.Download(ctx); return err }},
		{"dma: Weights.Upload: the weights is closed", func(o *objects) interface{ Close() error } { return o.w },
			func(o *objects) error { return o.w.Upload(ctx, make([]float32, lifeHkv*lifeL)) }},
		{"dma: Weights.Download: the weights is closed", func(o *objects) interface{ Close() error } { return o.grads.DDelta },
			func(o *objects) error { _, err := o.grads.DDelta.Download(ctx); return err }},
		{"dma: LSE.Download: the LSE is closed", func(o *objects) interface{ Close() error } { return o.res },
			func(o *objects) error { _, err := o.res.LSE.Download(ctx); return err }},
		{"dma: KVCache.Append: the cache is closed", func(o *objects) interface{ Close() error } { return o.cache },
			func(o *objects) error { return o.cache.Append(ctx, 0, o.kStep, o.vStep, o.wStep) }},
		{"dma: KVCache.Append: weights is closed", func(o *objects) interface{ Close() error } { return o.wStep },
			func(o *objects) error { return o.cache.Append(ctx, 0, o.kStep, o.vStep, o.wStep) }},
		{"dma: KVCache.Attend: q is closed", func(o *objects) interface{ Close() error } { return o.qStep },
			func(o *objects) error { _, err := o.cache.Attend(ctx, 0, o.qStep, step); return err }},
		{"dma: KVCache.AttendBatch: qs[1] is closed", func(o *objects) interface{ Close() error } { return o.qStep },
			func(o *objects) error {
				_, err := o.cache.AttendBatch(ctx, []int{0, 1}, []*dma.Tensor{o.q, o.qStep}, step)
				return err
			}},
		{"dma: KVCache.AttendInto: out.O is closed", func(o *objects) interface{ Close() error } { return o.out },
			func(o *objects) error { return o.cache.AttendInto(ctx, 0, o.qStep, o.out, step) }},
		{"dma: KVCache.AppendAttendInto: v is closed", func(o *objects) interface{ Close() error } { return o.vStep },
			func(o *objects) error {
				return o.cache.AppendAttendInto(ctx, 0, o.kStep, o.vStep, o.wStep, o.qStep, o.out, step)
			}},
		{"dma: KVCache.NewResult: q is closed", func(o *objects) interface{ Close() error } { return o.qStep },
			func(o *objects) error { _, err := o.cache.NewResult(o.qStep); return err }},
		{"dma: KVCache.Reset: the cache is closed", func(o *objects) interface{ Close() error } { return o.cache },
			func(o *objects) error { return o.cache.Reset(0) }},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			o := newObjects(t, d)
			defer func() {
				for _, c := range o.closers() {
					c.c.Close()
				}
			}()
			require.NoError(t, c.close(o).Close())
			err := c.call(o)
			require.ErrorIs(t, err, dma.ErrClosed)
			require.EqualError(t, err, c.want)
			// Nothing else was closed.
			_, err = o.kStep.Download(ctx)
			require.NoError(t, err)
			if c.close(o) != interface{ Close() error }(o.cache) {
				require.Equal(t, lifeL+1, o.cache.Len(0))
			}
		})
	}
}

// TestCloseWhileInUse: goroutines run every kind of call while others close the objects
// they use and then the device. Each call succeeds or fails with ErrClosed; nothing
// crashes, and the race detector sees no race.
func TestCloseWhileInUse(t *testing.T) {
	ctx := context.Background()
	for round := range 3 {
		d := open(t)
		o := newObjects(t, d)
		opt := dma.Options{Window: 8, Causal: true, WeightParams: o.wp}
		step := dma.Options{Window: 8, Causal: true}
		calls := []func() error{
			func() error {
				res, err := d.Forward(ctx, o.q, o.k, o.v, opt)
				res.Close()
				return err
			},
			func() error {
				g, err := d.Backward(ctx, o.q, o.k, o.v, o.res, o.dO, opt, dma.BackwardOptions{})
				g.Close()
				return err
			},
			func() error { _, err := o.q.Download(ctx); return err },
			func() error { return o.v.Upload(ctx, make([]float32, lifeL*lifeHkv*lifeD)) },
			func() error { _, err := o.res.LSE.Download(ctx); return err },
			func() error { return o.cache.AttendInto(ctx, 1, o.qStep, o.out, step) },
			func() error {
				res, err := o.cache.Attend(ctx, 0, o.qStep, step)
				res.Close()
				return err
			},
			func() error {
				if err := o.cache.Reset(1); err != nil {
					return err
				}
				return o.cache.Append(ctx, 1, o.kStep, o.vStep, o.wStep)
			},
			func() error {
				w, err := d.DynamicWeights(ctx, o.v, o.wp)
				w.Close()
				return err
			},
		}
		var wg sync.WaitGroup
		var done atomic.Bool // the device's Close has returned
		var ran atomic.Int64 // calls made
		errs := make(chan error, len(calls))
		start := make(chan struct{})
		for i, call := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for n := 0; !done.Load(); n++ {
					err := call()
					ran.Add(1)
					// AttendInto of sequence 1 may find it just reset: not about closing.
					if err != nil && !errors.Is(err, dma.ErrClosed) && !(i == 5 && strings.Contains(err.Error(), "empty")) {
						errs <- fmt.Errorf("call %d, run %d: %w", i, n, err)
						return
					}
				}
			}()
		}
		close(start)
		for ran.Load() < int64(2*len(calls)) { // every kind of call under way
			runtime.Gosched()
		}
		// Close half of the objects while the calls run, each from two goroutines at
		// once, then the device, from two goroutines at once.
		cs := o.closers()
		r := rand.New(rand.NewPCG(uint64(round), 7))
		r.Shuffle(len(cs), func(i, j int) { cs[i], cs[j] = cs[j], cs[i] })
		closeNil := func(name string, c interface{ Close() error }) {
			if err := c.Close(); err != nil {
				t.Errorf("%s: Close: %v", name, err)
			}
		}
		var cw sync.WaitGroup
		for _, c := range cs[:len(cs)/2] {
			cw.Add(2)
			go func() { defer cw.Done(); closeNil(c.name, c.c) }()
			go func() { defer cw.Done(); closeNil(c.name, c.c) }()
		}
		cw.Wait()
		cw.Add(2)
		go func() { defer cw.Done(); closeNil("device", d) }()
		go func() { defer cw.Done(); closeNil("device", d) }()
		cw.Wait()
		done.Store(true)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		for _, c := range o.closers() {
			require.NoError(t, c.c.Close())
		}
		o.requireClosed(t, d, true)
	}
}

// TestCloseAfterCancelledCall: calls whose context ended return at once while the GPU
// still runs their work; the device's Close waits for that work before it frees the
// buffers and kernels it uses.
func TestCloseAfterCancelledCall(t *testing.T) {
	for range 3 {
		d := open(t)
		s := dma.Shape{B: 1, L: 1024, H: 4, D: 64}
		data := make([]float32, s.Elems())
		q, err := d.TensorFrom(context.Background(), dma.Float32, s, dma.BLHD, data)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		errs := make(chan error)
		go func() {
			_, err := d.Forward(ctx, q, q, q, dma.Options{Causal: true})
			errs <- err
		}()
		time.Sleep(5 * time.Millisecond)
		cancel()
		err = <-errs
		t.Logf("forward: %v", err)
		if err != nil {
			require.ErrorIs(t, err, context.Canceled)
		}
		require.NoError(t, d.Close())
		require.NoError(t, q.Close())
	}
}
