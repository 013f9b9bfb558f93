package dma

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/vk"
)

// KVCacheConfig describes a KVCache.
type KVCacheConfig struct {
	Sequences int   // independent sequences (each with its own length), at least 1
	Capacity  int   // keys each sequence can hold
	KVHeads   int   // Hkv
	HeadDim   int   // D
	BiasHeads int   // heads of the dynamic weights: KVHeads (0 means KVHeads) or the query heads
	DType     DType // of K, V and the queries
}

// KVCache keeps, on the device, the keys, values and dynamic weights of a few sequences
// for token-by-token decoding: each step appends the new keys (with their weights,
// computed once, e.g. by DynamicWeights on the new values) and attends a few query rows
// over the whole cache, reading the weights of every cached key but the K and V rows of
// the kept keys only. One cache per layer; safe for concurrent use (calls on one cache are
// serialized). Close it when done.
type KVCache struct {
	d    *Device
	cfg  KVCacheConfig
	k, v *vk.Buffer // [Sequences][Capacity][KVHeads][HeadDim], BLHD
	w    *vk.Buffer // float32 [Sequences][BiasHeads][Capacity]

	mu      sync.Mutex
	lens    []int
	scratch [5]*vk.Buffer // Attend's params, weights, ord, thresholds, partials
}

// NewKVCache allocates an empty cache.
func (d *Device) NewKVCache(cfg KVCacheConfig) (*KVCache, error) {
	if cfg.BiasHeads == 0 {
		cfg.BiasHeads = cfg.KVHeads
	}
	if cfg.Sequences < 1 || cfg.Capacity < 1 || cfg.KVHeads < 1 || cfg.HeadDim < 1 || cfg.BiasHeads < 1 {
		return nil, fmt.Errorf("dma: NewKVCache: %+v: every size must be at least 1", cfg)
	}
	if cfg.DType != Float32 && cfg.DType != Float16 && cfg.DType != BFloat16 {
		return nil, fmt.Errorf("dma: NewKVCache: unsupported dtype %v", cfg.DType)
	}
	if cfg.BiasHeads != cfg.KVHeads && cfg.BiasHeads%cfg.KVHeads != 0 {
		return nil, fmt.Errorf("dma: NewKVCache: BiasHeads %d must be KVHeads %d or the query heads (a multiple of it)", cfg.BiasHeads, cfg.KVHeads)
	}
	elems := int64(cfg.Sequences) * int64(cfg.Capacity) * int64(cfg.KVHeads) * int64(cfg.HeadDim)
	if elems >= math.MaxUint32 {
		return nil, fmt.Errorf("dma: NewKVCache: %d elements per tensor, over 32-bit indices", elems)
	}
	kvBytes := (elems*int64(cfg.DType.Size()) + 3) &^ 3
	wBytes := int64(cfg.Sequences) * int64(cfg.BiasHeads) * int64(cfg.Capacity) * 4
	if err := d.limits(map[string]int64{"the cache's K": kvBytes, "the cache's weights": wBytes}); err != nil {
		return nil, err
	}
	c := &KVCache{d: d, cfg: cfg, lens: make([]int, cfg.Sequences)}
	var err error
	for _, x := range []struct {
		dst  **vk.Buffer
		size int64
	}{{&c.k, kvBytes}, {&c.v, kvBytes}, {&c.w, wBytes}} {
		if *x.dst, err = d.vd.NewBuffer(x.size); err != nil {
			c.Close()
			return nil, fmt.Errorf("dma: NewKVCache: %w", err)
		}
	}
	return c, nil
}

// Len is the number of keys sequence seq holds.
func (c *KVCache) Len(seq int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq < 0 || seq >= len(c.lens) {
		return 0
	}
	return c.lens[seq]
}

// Reset empties sequence seq (its memory is reused).
func (c *KVCache) Reset(seq int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq < 0 || seq >= len(c.lens) {
		return fmt.Errorf("dma: KVCache.Reset: sequence %d of %d", seq, len(c.lens))
	}
	c.lens[seq] = 0
	return nil
}

// Append adds n keys to sequence seq: k and v are [1, n, KVHeads, HeadDim] BLHD tensors
// of the cache's dtype, weights [1, BiasHeads, n] (e.g. DynamicWeights of v). It fails,
// changing nothing, when the sequence would exceed the capacity.
func (c *KVCache) Append(ctx context.Context, seq int, k, v *Tensor, weights *Weights) error {
	if k == nil || v == nil || weights == nil {
		return fmt.Errorf("dma: KVCache.Append: nil k, v or weights")
	}
	cfg := c.cfg
	want := Shape{B: 1, L: k.shape.L, H: cfg.KVHeads, D: cfg.HeadDim}
	for _, t := range []struct {
		name string
		t    *Tensor
	}{{"k", k}, {"v", v}} {
		if t.t.d != c.d {
			return fmt.Errorf("dma: KVCache.Append: %s lives on another device", t.name)
		}
		if t.t.shape != want || t.t.layout != BLHD || t.t.dtype != cfg.DType {
			return fmt.Errorf("dma: KVCache.Append: %s is %v %v %v, want %v BLHD %v", t.name, t.t.shape, t.t.layout, t.t.dtype, want, cfg.DType)
		}
	}
	n := want.L
	if weights.B != 1 || weights.Hb != cfg.BiasHeads || weights.Lk != n {
		return fmt.Errorf("dma: KVCache.Append: weights [%d %d %d], want [1 %d %d]", weights.B, weights.Hb, weights.Lk, cfg.BiasHeads, n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.k == nil {
		return fmt.Errorf("dma: KVCache.Append: the cache is closed")
	}
	if seq < 0 || seq >= len(c.lens) {
		return fmt.Errorf("dma: KVCache.Append: sequence %d of %d", seq, len(c.lens))
	}
	at := c.lens[seq]
	if at+n > cfg.Capacity {
		return fmt.Errorf("dma: KVCache.Append: sequence %d holds %d keys, %d more exceed the capacity %d", seq, at, n, cfg.Capacity)
	}
	es := int64(cfg.DType.Size())
	row := int64(cfg.KVHeads) * int64(cfg.HeadDim) * es
	kvOff := (int64(seq)*int64(cfg.Capacity) + int64(at)) * row
	err := c.d.vd.Run(ctx, func(r *vk.Recorder) error {
		// Buffer copies take any byte offset and size: 16-bit rows need no alignment.
		if err := r.Copy(k.buf, 0, c.k, kvOff, int64(n)*row); err != nil {
			return err
		}
		if err := r.Copy(v.buf, 0, c.v, kvOff, int64(n)*row); err != nil {
			return err
		}
		for hb := range cfg.BiasHeads {
			dst := ((int64(seq)*int64(cfg.BiasHeads)+int64(hb))*int64(cfg.Capacity) + int64(at)) * 4
			if err := r.Copy(weights.buf, int64(hb)*int64(n)*4, c.w, dst, int64(n)*4); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("dma: KVCache.Append: %w", err)
	}
	c.lens[seq] = at + n
	return nil
}

// Attend computes attention of q ([1, n, H, HeadDim] BLHD or BHLD, n <= 4 rows: the
// last n positions of sequence seq) over the sequence's cached keys: O and LSE as
// Forward would give for these rows over the same keys. opt.Mode row (causal; a window
// that covers every cached key is mode none) or none; Window, Causal, Scale and Softcap
// as in Forward; the weights are the cache's (opt.Weights, WeightParams, masks, biases and
// key padding must be unset).
func (c *KVCache) Attend(ctx context.Context, seq int, q *Tensor, opt Options) (*Result, error) {
	res, _, err := c.attend(ctx, seq, q, opt, false)
	return res, err
}

// AttendProfiled is Attend that also returns where the GPU time went: Selection (the
// copy of the sequence's weights, ord, and the thresholds), Attention (the split-K pass
// and its merge), and Passes "ord", "tau", "attention" (zero on devices without
// timestamps).
func (c *KVCache) AttendProfiled(ctx context.Context, seq int, q *Tensor, opt Options) (*Result, Profile, error) {
	return c.attend(ctx, seq, q, opt, true)
}

func (c *KVCache) attend(ctx context.Context, seq int, q *Tensor, opt Options, timed bool) (*Result, Profile, error) {
	var prof Profile
	res, err := c.attendRun(ctx, seq, q, opt, timed, &prof)
	return res, prof, err
}

func (c *KVCache) attendRun(ctx context.Context, seq int, q *Tensor, opt Options, timed bool, prof *Profile) (*Result, error) {
	cfg := c.cfg
	fail := func(format string, a ...any) (*Result, error) {
		return nil, fmt.Errorf("dma: KVCache.Attend: "+format, a...)
	}
	if q == nil || q.d != c.d {
		return fail("q is nil or lives on another device")
	}
	qs := q.shape
	if qs.B != 1 || qs.D != cfg.HeadDim || qs.H%cfg.KVHeads != 0 || q.dtype != cfg.DType {
		return fail("q is %v %v, want [B=1 L=n H=a multiple of %d D=%d] %v", qs, q.dtype, cfg.KVHeads, cfg.HeadDim, cfg.DType)
	}
	if cfg.BiasHeads != cfg.KVHeads && cfg.BiasHeads != qs.H {
		return fail("the cache's %d bias heads are neither its %d kv heads nor q's %d heads", cfg.BiasHeads, cfg.KVHeads, qs.H)
	}
	if qs.L < 1 || qs.L > kern.DecodeMaxRows {
		return fail("%d query rows: Attend takes 1 to %d (Forward takes longer chunks)", qs.L, kern.DecodeMaxRows)
	}
	if opt.Weights != nil || opt.WeightParams != nil || opt.Mask != nil || opt.Bias != nil || opt.KeyPadding != nil {
		return fail("weights, masks, biases and key padding come from the cache")
	}
	if opt.Softcap < 0 || math.IsNaN(float64(opt.Softcap)) || math.IsInf(float64(opt.Softcap), 0) {
		return fail("softcap %v must be finite and >= 0", opt.Softcap)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.k == nil {
		return fail("the cache is closed")
	}
	if seq < 0 || seq >= len(c.lens) {
		return fail("sequence %d of %d", seq, len(c.lens))
	}
	lk := c.lens[seq]
	if lk == 0 {
		return fail("sequence %d is empty", seq)
	}
	mode := opt.Mode
	if mode == ModeRow && opt.Window >= lk {
		mode = ModeNone
	}
	switch {
	case mode == ModeRow && !opt.Causal:
		return fail("mode row needs Causal (without it every row keeps the same keys: use Forward's mode shared)")
	case mode != ModeRow && mode != ModeNone:
		return fail("mode %v: row or none", mode)
	}
	scale := opt.Scale
	if scale == 0 {
		scale = float32(1 / math.Sqrt(float64(qs.D)))
	}
	w := max(opt.Window, 1)
	bc := kern.BlockSize(w)
	kvRow := uint32(cfg.KVHeads * cfg.HeadDim)
	cacheView := kern.View{Off: uint32(seq) * uint32(cfg.Capacity) * kvRow, SB: uint32(cfg.Capacity) * kvRow, SL: kvRow, SH: uint32(cfg.HeadDim)}
	res := &Result{Path: "decode"}
	var err error
	if res.O, err = c.d.NewTensor(q.dtype, qs, q.layout); err != nil {
		return nil, err
	}
	p := kern.Params{
		B: 1, Lq: u32(qs.L), Lk: u32(lk), H: u32(qs.H), Hkv: u32(cfg.KVHeads), Hb: u32(cfg.BiasHeads), D: u32(qs.D),
		G: u32(qs.H / cfg.KVHeads), Mode: u32(int(mode)), Causal: b32(opt.Causal), Window: u32(w), BlockC: u32(bc),
		NBlocks: u32((lk + bc - 1) / bc), NCap: u32(w + bc), Storage: q.dtype.storage(),
		PosOffset: int32(lk - qs.L), Scale: scale, Softcap: opt.Softcap,
		Q: view(q), K: cacheView, V: cacheView, O: view(res.O),
	}
	// Scratch kept by the cache between calls (they are serialized), grown on demand:
	// a decode step allocates only its outputs.
	buf := func(slot int, size int64) (*vk.Buffer, error) {
		if b := c.scratch[slot]; b != nil && b.Size() >= size {
			return b, nil
		}
		if c.scratch[slot] != nil {
			c.scratch[slot].Close()
			c.scratch[slot] = nil
		}
		b, err := c.d.vd.NewBuffer(max(size, 4))
		if err == nil {
			c.scratch[slot] = b
		}
		return b, err
	}
	params, err := buf(0, kern.ParamsSize)
	if err != nil {
		res.closePartial()
		return nil, err
	}
	delta, err1 := buf(1, int64(cfg.BiasHeads)*int64(lk)*4)
	ord, err2 := buf(2, int64(cfg.BiasHeads)*int64(lk)*4)
	tau, err3 := buf(3, int64(cfg.BiasHeads)*int64(qs.L)*8)
	part, err4 := buf(4, kern.DecodePartSize(&p))
	lse, err5 := c.d.vd.NewBuffer(int64(qs.H) * int64(qs.L) * 4)
	for _, e := range []error{err1, err2, err3, err4, err5} {
		if e != nil {
			if lse != nil {
				lse.Close()
			}
			res.closePartial()
			return nil, e
		}
	}
	res.LSE = &LSE{buf: lse, B: 1, H: qs.H, Lq: qs.L}
	// The ord pass alone (the plan of mode none), then tau straight from ord.
	pOrd := p
	pOrd.Mode = kern.ModeNone
	stamp := func(r *vk.Recorder, label string) error {
		if !timed {
			return nil
		}
		return r.Timestamp(label)
	}
	ts, err := c.d.vd.RunTimed(ctx, func(r *vk.Recorder) error {
		if err := r.Update(params, 0, p.Bytes()); err != nil {
			return err
		}
		if err := stamp(r, "start"); err != nil {
			return err
		}
		for hb := range cfg.BiasHeads {
			src := (int64(seq)*int64(cfg.BiasHeads) + int64(hb)) * int64(cfg.Capacity) * 4
			if err := r.Copy(c.w, src, delta, int64(hb)*int64(lk)*4, int64(lk)*4); err != nil {
				return err
			}
		}
		r.Barrier()
		if err := c.d.kern.RecordPlan(r, &pOrd, params, delta, nil, &kern.PlanBuffers{Ord: ord}); err != nil {
			return err
		}
		r.Barrier()
		if err := stamp(r, "ord"); err != nil {
			return err
		}
		if mode == ModeRow {
			if err := c.d.kern.RecordTopW(r, &p, params, ord, tau); err != nil {
				return err
			}
		}
		if err := stamp(r, "tau"); err != nil {
			return err
		}
		if err := c.d.kern.RecordDecode(r, &p, params, &kern.AttnBuffers{Q: q.buf, K: c.k, V: c.v, O: res.O.buf, LSE: lse,
			Ord: ord, Tau: tau}, part); err != nil {
			return err
		}
		return stamp(r, "attention")
	})
	if err != nil {
		res.closePartial()
		return nil, fmt.Errorf("dma: KVCache.Attend: %w", err)
	}
	if len(ts) == 4 {
		prof.Selection = time.Duration(ts[2].Nanos - ts[0].Nanos)
		prof.Attention = time.Duration(ts[3].Nanos - ts[2].Nanos)
		for i := 1; i < 4; i++ {
			prof.Passes = append(prof.Passes, Pass{Name: ts[i].Label, Time: time.Duration(ts[i].Nanos - ts[i-1].Nanos)})
		}
	}
	return res, nil
}

// Close frees the cache.
func (c *KVCache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range append([]*vk.Buffer{c.k, c.v, c.w}, c.scratch[:]...) {
		if b != nil {
			b.Close()
		}
	}
	c.k, c.v, c.w, c.scratch = nil, nil, nil, [5]*vk.Buffer{}
	return nil
}
