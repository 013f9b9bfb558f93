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
	scratch [][5]*vk.Buffer // Attend's params, weights, ord, thresholds, partials per sequence of a call
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
	rs, _, err := c.attend(ctx, []int{seq}, []*Tensor{q}, opt, false)
	if err != nil {
		return nil, err
	}
	return rs[0], nil
}

// AttendProfiled is Attend that also returns where the GPU time went: Selection (the
// copy of the sequence's weights, ord, and the thresholds), Attention (the split-K pass
// and its merge), and Passes "ord", "tau", "attention" (zero on devices without
// timestamps).
func (c *KVCache) AttendProfiled(ctx context.Context, seq int, q *Tensor, opt Options) (*Result, Profile, error) {
	rs, prof, err := c.attend(ctx, []int{seq}, []*Tensor{q}, opt, true)
	if err != nil {
		return nil, prof, err
	}
	return rs[0], prof, nil
}

// AttendBatch is Attend for several sequences in one submission (one wait for all):
// qs[i] attends sequence seqs[i]; the sequences may have different lengths and
// different numbers of rows. Either every result comes back or none.
func (c *KVCache) AttendBatch(ctx context.Context, seqs []int, qs []*Tensor, opt Options) ([]*Result, error) {
	rs, _, err := c.attend(ctx, seqs, qs, opt, false)
	return rs, err
}

// attendStep is one sequence's share of an attend call.
type attendStep struct {
	seq  int
	q    *Tensor
	res  *Result
	lse  *vk.Buffer
	p    kern.Params
	mode Mode
	lk   int
}

func (c *KVCache) attend(ctx context.Context, seqs []int, qs []*Tensor, opt Options, timed bool) (rs []*Result, prof Profile, err error) {
	cfg := c.cfg
	fail := func(format string, a ...any) ([]*Result, Profile, error) {
		return nil, prof, fmt.Errorf("dma: KVCache.Attend: "+format, a...)
	}
	if len(seqs) == 0 || len(seqs) != len(qs) {
		return fail("%d sequences for %d query tensors", len(seqs), len(qs))
	}
	if opt.Weights != nil || opt.WeightParams != nil || opt.Mask != nil || opt.Bias != nil || opt.KeyPadding != nil {
		return fail("weights, masks, biases and key padding come from the cache")
	}
	if opt.Softcap < 0 || math.IsNaN(float64(opt.Softcap)) || math.IsInf(float64(opt.Softcap), 0) {
		return fail("softcap %v must be finite and >= 0", opt.Softcap)
	}
	for _, q := range qs {
		if q == nil || q.d != c.d {
			return fail("q is nil or lives on another device")
		}
		s := q.shape
		if s.B != 1 || s.D != cfg.HeadDim || s.H%cfg.KVHeads != 0 || q.dtype != cfg.DType {
			return fail("q is %v %v, want [B=1 L=n H=a multiple of %d D=%d] %v", s, q.dtype, cfg.KVHeads, cfg.HeadDim, cfg.DType)
		}
		if cfg.BiasHeads != cfg.KVHeads && cfg.BiasHeads != s.H {
			return fail("the cache's %d bias heads are neither its %d kv heads nor q's %d heads", cfg.BiasHeads, cfg.KVHeads, s.H)
		}
		if s.L < 1 || s.L > kern.DecodeMaxRows {
			return fail("%d query rows: Attend takes 1 to %d (Forward takes longer chunks)", s.L, kern.DecodeMaxRows)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.k == nil {
		return fail("the cache is closed")
	}
	steps := make([]*attendStep, len(seqs))
	defer func() {
		if err != nil {
			for _, st := range steps {
				if st != nil && st.res != nil {
					st.res.closePartial()
				} else if st != nil && st.lse != nil {
					st.lse.Close()
				}
			}
		}
	}()
	kvRow := uint32(cfg.KVHeads * cfg.HeadDim)
	for i, seq := range seqs {
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
		q, qsh := qs[i], qs[i].shape
		scale := opt.Scale
		if scale == 0 {
			scale = float32(1 / math.Sqrt(float64(qsh.D)))
		}
		w := max(opt.Window, 1)
		bc := kern.BlockSize(w)
		cacheView := kern.View{Off: uint32(seq) * uint32(cfg.Capacity) * kvRow, SB: uint32(cfg.Capacity) * kvRow, SL: kvRow, SH: uint32(cfg.HeadDim)}
		st := &attendStep{seq: seq, q: q, mode: mode, lk: lk, res: &Result{Path: "decode"}}
		steps[i] = st
		if st.res.O, err = c.d.NewTensor(q.dtype, qsh, q.layout); err != nil {
			return nil, prof, err
		}
		if st.lse, err = c.d.vd.NewBuffer(int64(qsh.H) * int64(qsh.L) * 4); err != nil {
			return nil, prof, err
		}
		st.res.LSE = &LSE{buf: st.lse, B: 1, H: qsh.H, Lq: qsh.L}
		st.p = kern.Params{
			B: 1, Lq: u32(qsh.L), Lk: u32(lk), H: u32(qsh.H), Hkv: u32(cfg.KVHeads), Hb: u32(cfg.BiasHeads), D: u32(qsh.D),
			G: u32(qsh.H / cfg.KVHeads), Mode: u32(int(mode)), Causal: b32(opt.Causal), Window: u32(w), BlockC: u32(bc),
			NBlocks: u32((lk + bc - 1) / bc), NCap: u32(w + bc), Storage: q.dtype.storage(),
			PosOffset: int32(lk - qsh.L), Scale: scale, Softcap: opt.Softcap,
			Q: view(q), K: cacheView, V: cacheView, O: view(st.res.O),
		}
	}
	// Scratch kept by the cache between calls (they are serialized), one set per
	// sequence of the call, grown on demand: a decode step allocates only its outputs.
	for len(c.scratch) < len(steps) {
		c.scratch = append(c.scratch, [5]*vk.Buffer{})
	}
	buf := func(i, slot int, size int64) (*vk.Buffer, error) {
		if b := c.scratch[i][slot]; b != nil && b.Size() >= size {
			return b, nil
		}
		if c.scratch[i][slot] != nil {
			c.scratch[i][slot].Close()
			c.scratch[i][slot] = nil
		}
		b, err := c.d.vd.NewBuffer(max(size, 4))
		if err == nil {
			c.scratch[i][slot] = b
		}
		return b, err
	}
	type scratch struct{ params, delta, ord, tau, part *vk.Buffer }
	bufs := make([]scratch, len(steps))
	for i, st := range steps {
		hb, n := int64(cfg.BiasHeads), int64(st.p.Lq)
		sizes := []int64{kern.ParamsSize, hb * int64(st.lk) * 4, hb * int64(st.lk) * 4, hb * n * 8, kern.DecodePartSize(&st.p)}
		dst := []**vk.Buffer{&bufs[i].params, &bufs[i].delta, &bufs[i].ord, &bufs[i].tau, &bufs[i].part}
		for slot, size := range sizes {
			if *dst[slot], err = buf(i, slot, size); err != nil {
				return nil, prof, err
			}
		}
	}
	stamp := func(r *vk.Recorder, label string) error {
		if !timed {
			return nil
		}
		return r.Timestamp(label)
	}
	ts, err := c.d.vd.RunTimed(ctx, func(r *vk.Recorder) error {
		for i, st := range steps {
			b := bufs[i]
			if err := r.Update(b.params, 0, st.p.Bytes()); err != nil {
				return err
			}
			if err := stamp(r, "start"); err != nil {
				return err
			}
			for hb := range cfg.BiasHeads {
				src := (int64(st.seq)*int64(cfg.BiasHeads) + int64(hb)) * int64(cfg.Capacity) * 4
				if err := r.Copy(c.w, src, b.delta, int64(hb)*int64(st.lk)*4, int64(st.lk)*4); err != nil {
					return err
				}
			}
			r.Barrier()
			// The ord pass alone (the plan of mode none), then tau straight from ord.
			pOrd := st.p
			pOrd.Mode = kern.ModeNone
			if err := c.d.kern.RecordPlan(r, &pOrd, b.params, b.delta, nil, &kern.PlanBuffers{Ord: b.ord}); err != nil {
				return err
			}
			r.Barrier()
			if err := stamp(r, "ord"); err != nil {
				return err
			}
			if st.mode == ModeRow {
				if err := c.d.kern.RecordTopW(r, &st.p, b.params, b.ord, b.tau); err != nil {
					return err
				}
			}
			if err := stamp(r, "tau"); err != nil {
				return err
			}
			if err := c.d.kern.RecordDecode(r, &st.p, b.params, &kern.AttnBuffers{Q: st.q.buf, K: c.k, V: c.v, O: st.res.O.buf,
				LSE: st.lse, Ord: b.ord, Tau: b.tau}, b.part); err != nil {
				return err
			}
			r.Barrier()
			if err := stamp(r, "attention"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, prof, fmt.Errorf("dma: KVCache.Attend: %w", err)
	}
	// Four stamps per sequence: start, ord, tau, attention.
	for i := 0; i+3 < len(ts); i += 4 {
		prof.Selection += time.Duration(ts[i+2].Nanos - ts[i].Nanos)
		prof.Attention += time.Duration(ts[i+3].Nanos - ts[i+2].Nanos)
		for j := i + 1; j <= i+3; j++ {
			prof.Passes = append(prof.Passes, Pass{Name: ts[j].Label, Time: time.Duration(ts[j].Nanos - ts[j-1].Nanos)})
		}
	}
	rs = make([]*Result, len(steps))
	for i, st := range steps {
		rs[i] = st.res
	}
	return rs, prof, nil
}

// Close frees the cache.
func (c *KVCache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := []*vk.Buffer{c.k, c.v, c.w}
	for _, s := range c.scratch {
		all = append(all, s[:]...)
	}
	for _, b := range all {
		if b != nil {
			b.Close()
		}
	}
	c.k, c.v, c.w, c.scratch = nil, nil, nil, nil
	return nil
}
