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
	// ord of every cached key's weight (kern.Ord, uint32 [Sequences][BiasHeads][Capacity]),
	// computed once at Append: a step reads it, never the float weights.
	ord *vk.Buffer

	// The thresholds carried from step to step (one-row steps in mode row): the last
	// one-row step's tau of each sequence (uvec2 [Sequences][BiasHeads]), valid for
	// tauLen[seq] keys and window tauW[seq] (tauLen -1: none), and select_advance's
	// scratch (carryWords words per sequence, zero between runs).
	carryState, carryScratch *vk.Buffer
	carryWords               int64

	mu           sync.Mutex
	lens         []int
	tauLen       []int
	tauW         []int
	appendParams *vk.Buffer      // a one-shot Append's parameters
	scratch      [][4]*vk.Buffer // Attend's stepBuffers per sequence of a call
	steps        mru[stepKey, *stepProgram]
	appends      mru[appendKey, *appendProgram]
	fused        mru[stepKey, *stepProgram] // AppendAttendInto's

	life lifetime
}

// maxStepPrograms bounds the recorded steps a cache keeps (AttendInto), and
// maxAppendPrograms the recorded appends (Append of a few keys).
const maxStepPrograms, maxAppendPrograms = 16, 16

// maxRecordedAppend is the most keys an Append records for reuse: a decode step's tokens
// (a recording keeps its buffers alive, which a prefill's large chunks should not be).
const maxRecordedAppend = 16

// NewKVCache allocates an empty cache.
func (d *Device) NewKVCache(cfg KVCacheConfig) (*KVCache, error) {
	leave, err := d.enter("NewKVCache")
	if err != nil {
		return nil, err
	}
	defer leave()
	if cfg.BiasHeads == 0 {
		cfg.BiasHeads = cfg.KVHeads
	}
	if cfg.Sequences < 1 || cfg.Capacity < 1 || cfg.KVHeads < 1 || cfg.HeadDim < 1 || cfg.BiasHeads < 1 {
		return nil, fmt.Errorf("dma: NewKVCache: %+v: every size must be at least 1", cfg)
	}
	if cfg.DType != Float32 && cfg.DType != Float16 && cfg.DType != BFloat16 {
		return nil, fmt.Errorf("dma: NewKVCache: unsupported dtype %v", cfg.DType)
	}
	if err := checkHeadDim(cfg.HeadDim); err != nil {
		return nil, fmt.Errorf("dma: NewKVCache: %w", err)
	}
	if cfg.BiasHeads != cfg.KVHeads && cfg.BiasHeads%cfg.KVHeads != 0 {
		return nil, fmt.Errorf("dma: NewKVCache: BiasHeads %d must be KVHeads %d or the query heads (a multiple of it)", cfg.BiasHeads, cfg.KVHeads)
	}
	elems := int64(cfg.Sequences) * int64(cfg.Capacity) * int64(cfg.KVHeads) * int64(cfg.HeadDim)
	if elems >= math.MaxUint32 {
		return nil, fmt.Errorf("dma: NewKVCache: %d elements per tensor, over 32-bit indices", elems)
	}
	kvBytes := (elems*int64(cfg.DType.Size()) + 3) &^ 3
	keys := int64(cfg.Sequences) * int64(cfg.BiasHeads) * int64(cfg.Capacity)
	if keys >= math.MaxUint32 {
		return nil, fmt.Errorf("dma: NewKVCache: %d weights, over 32-bit indices", keys)
	}
	wBytes := keys * 4
	if err := d.limits(map[string]int64{"the cache's K": kvBytes, "the cache's weights": wBytes}); err != nil {
		return nil, err
	}
	c := &KVCache{d: d, cfg: cfg, lens: make([]int, cfg.Sequences), tauLen: make([]int, cfg.Sequences), tauW: make([]int, cfg.Sequences),
		steps: mru[stepKey, *stepProgram]{max: maxStepPrograms}, appends: mru[appendKey, *appendProgram]{max: maxAppendPrograms},
		fused: mru[stepKey, *stepProgram]{max: maxStepPrograms}}
	for i := range c.tauLen {
		c.tauLen[i] = -1
	}
	c.carryWords = kern.CarryScratchWords(&kern.Params{B: 1, Hb: u32(cfg.BiasHeads), Lk: u32(cfg.Capacity)}, u32(cfg.Capacity))
	for _, x := range []struct {
		dst  **vk.Buffer
		size int64
	}{{&c.k, kvBytes}, {&c.v, kvBytes}, {&c.ord, wBytes},
		{&c.carryState, int64(cfg.Sequences) * int64(cfg.BiasHeads) * 8}, {&c.carryScratch, int64(cfg.Sequences) * c.carryWords * 4}} {
		if *x.dst, err = d.vd.NewBuffer(x.size); err != nil {
			c.free()
			return nil, fmt.Errorf("dma: NewKVCache: %w", err)
		}
	}
	err = d.vd.Run(context.Background(), func(r *vk.Recorder) error {
		return r.Fill(c.carryScratch, 0, c.carryScratch.Size(), 0) // select_advance's counters start at 0
	})
	if err != nil {
		c.free()
		return nil, fmt.Errorf("dma: NewKVCache: %w", err)
	}
	if err := d.adopt("NewKVCache", c); err != nil {
		return nil, err
	}
	return c, nil
}

// enter starts call op on the cache, which uses the given objects too.
func (c *KVCache) enter(op string, uses ...use) (func(), error) {
	return c.d.enter(op, append([]use{{"the cache", c}}, uses...)...)
}

// resultUses are out's parts, as arguments of a call.
func resultUses(out *Result) []use {
	if out == nil {
		return nil
	}
	return []use{{"out.O", out.O}, {"out.LSE", out.LSE}}
}

// Len is the number of keys sequence seq holds (0 once the cache is closed).
func (c *KVCache) Len(seq int) int {
	if c.d.isClosed(c) {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq < 0 || seq >= len(c.lens) {
		return 0
	}
	return c.lens[seq]
}

// Reset empties sequence seq (its memory is reused).
func (c *KVCache) Reset(seq int) error {
	leave, err := c.enter("KVCache.Reset")
	if err != nil {
		return err
	}
	defer leave()
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq < 0 || seq >= len(c.lens) {
		return fmt.Errorf("dma: KVCache.Reset: sequence %d of %d", seq, len(c.lens))
	}
	c.lens[seq] = 0
	c.tauLen[seq] = -1
	return nil
}

// Truncate keeps the first n keys of sequence seq and forgets the rest (none when it
// holds n or fewer): a step or prompt taken back, e.g. after a failed pass that appended
// the keys of some layers only.
func (c *KVCache) Truncate(seq, n int) error {
	leave, err := c.enter("KVCache.Truncate")
	if err != nil {
		return err
	}
	defer leave()
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq < 0 || seq >= len(c.lens) {
		return fmt.Errorf("dma: KVCache.Truncate: sequence %d of %d", seq, len(c.lens))
	}
	if n < 0 {
		return fmt.Errorf("dma: KVCache.Truncate: %d keys", n)
	}
	if n < c.lens[seq] {
		c.lens[seq] = n
		c.tauLen[seq] = -1 // the carried thresholds were of the longer sequence
	}
	return nil
}

// Append adds n keys to sequence seq: k and v are [1, n, KVHeads, HeadDim] BLHD tensors
// of the cache's dtype, weights [1, BiasHeads, n] (e.g. DynamicWeights of v). It fails,
// changing nothing, when the sequence would exceed the capacity.
func (c *KVCache) Append(ctx context.Context, seq int, k, v *Tensor, weights *Weights) error {
	leave, err := c.enter("KVCache.Append", use{"k", k}, use{"v", v}, use{"weights", weights})
	if err != nil {
		return err
	}
	defer leave()
	n, err := c.checkAppend(k, v, weights)
	if err != nil {
		return fmt.Errorf("dma: KVCache.Append: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	at, err := c.room(seq, n)
	if err != nil {
		return fmt.Errorf("dma: KVCache.Append: %w", err)
	}
	p := c.appendParamsOf(seq, at, n)
	bufs := c.appendBuffers(k, v, weights)
	if n <= maxRecordedAppend {
		err = c.appendRecorded(ctx, appendKey{seq, k.buf, v.buf, weights.buf, n}, p, bufs)
	} else {
		var params *vk.Buffer
		if params, err = growBuffer(c.d, &c.appendParams, kern.ParamsSize); err == nil {
			err = c.d.vd.Run(ctx, func(r *vk.Recorder) error {
				if err := r.Update(params, 0, p.Bytes()); err != nil {
					return err
				}
				r.Barrier()
				return c.d.kern.RecordAppend(r, &p, params, bufs)
			})
		}
	}
	if err != nil {
		return fmt.Errorf("dma: KVCache.Append: %w", err)
	}
	c.lens[seq] = at + n
	return nil
}

// room checks that the cache is open and sequence seq can take n more keys, and returns
// the position of the first; c.mu is held.
func (c *KVCache) room(seq, n int) (int, error) {
	if c.k == nil {
		return 0, fmt.Errorf("the cache is closed")
	}
	if seq < 0 || seq >= len(c.lens) {
		return 0, fmt.Errorf("sequence %d of %d", seq, len(c.lens))
	}
	at := c.lens[seq]
	if at+n > c.cfg.Capacity {
		return 0, fmt.Errorf("sequence %d holds %d keys, %d more exceed the capacity %d", seq, at, n, c.cfg.Capacity)
	}
	return at, nil
}

// checkAppend checks the new keys of an append against the cache and returns their
// number.
func (c *KVCache) checkAppend(k, v *Tensor, weights *Weights) (int, error) {
	if k == nil || v == nil || weights == nil {
		return 0, fmt.Errorf("nil k, v or weights")
	}
	cfg := c.cfg
	want := Shape{B: 1, L: k.shape.L, H: cfg.KVHeads, D: cfg.HeadDim}
	for _, t := range []struct {
		name string
		t    *Tensor
	}{{"k", k}, {"v", v}} {
		if t.t.d != c.d {
			return 0, fmt.Errorf("%s lives on another device", t.name)
		}
		if t.t.shape != want || t.t.layout != BLHD || t.t.dtype != cfg.DType {
			return 0, fmt.Errorf("%s is %v %v %v, want %v BLHD %v", t.name, t.t.shape, t.t.layout, t.t.dtype, want, cfg.DType)
		}
	}
	n := want.L
	if weights.B != 1 || weights.Hb != cfg.BiasHeads || weights.Lk != n {
		return 0, fmt.Errorf("weights [%d %d %d], want [1 %d %d]", weights.B, weights.Hb, weights.Lk, cfg.BiasHeads, n)
	}
	return n, nil
}

// appendBuffers are kv_append's buffers for these new keys.
func (c *KVCache) appendBuffers(k, v *Tensor, weights *Weights) *kern.AppendBuffers {
	return &kern.AppendBuffers{K: k.buf, V: v.buf, Weights: weights.buf, CacheK: c.k, CacheV: c.v, CacheOrd: c.ord}
}

// appendParamsOf are kv_append's parameters for n keys of sequence seq at position at: the
// cache's K/V layout and ord rows.
func (c *KVCache) appendParamsOf(seq, at, n int) kern.Params {
	cfg := c.cfg
	row := u32(cfg.KVHeads * cfg.HeadDim)
	view := kern.View{Off: u32(seq*cfg.Capacity) * row, SB: u32(cfg.Capacity) * row, SL: row, SH: u32(cfg.HeadDim)}
	return kern.Params{B: 1, Lq: u32(n), Hkv: u32(cfg.KVHeads), D: u32(cfg.HeadDim), Hb: u32(cfg.BiasHeads),
		Storage: cfg.DType.storage(), PosOffset: int32(at), K: view, V: view,
		OrdOff: u32(seq * cfg.BiasHeads * cfg.Capacity), OrdSL: u32(cfg.Capacity)}
}

// appendKey tells recorded appends apart: the sequence, the new keys' buffers and count
// (the position is a parameter).
type appendKey struct {
	seq     int
	k, v, w *vk.Buffer
	n       int
}

// appendProgram is a recorded Append with its parameters in mapped memory.
type appendProgram struct {
	prog   *vk.Program
	params *vk.Buffer
}

func (ap *appendProgram) close() {
	if ap.prog != nil {
		ap.prog.Close()
	}
	if ap.params != nil {
		ap.params.Close()
	}
}

// appendRecorded runs p through the recording of key, recording it first if needed;
// c.mu is held.
func (c *KVCache) appendRecorded(ctx context.Context, key appendKey, p kern.Params, bufs *kern.AppendBuffers) error {
	ap, ok := c.appends.get(key)
	if !ok {
		ap = &appendProgram{}
		var err error
		if ap.params, err = c.d.vd.NewMappedBuffer(kern.ParamsSize); err != nil {
			return err
		}
		ap.prog, err = c.d.vd.Record(func(r *vk.Recorder) error {
			r.Barrier() // after earlier submissions' reads of the cache
			return c.d.kern.RecordAppend(r, &p, ap.params, bufs)
		})
		if err != nil {
			ap.close()
			return err
		}
		c.appends.add(key, ap)
	}
	if err := ap.params.Upload(ctx, 0, p.Bytes()); err != nil {
		return err
	}
	return ap.prog.Submit(ctx)
}

// growBuffer returns *slot when it holds at least size bytes, else replaces it with a
// new buffer of that size (the cache's scratch, kept between calls, which are serialized).
func growBuffer(d *Device, slot **vk.Buffer, size int64) (*vk.Buffer, error) {
	if b := *slot; b != nil && b.Size() >= size {
		return b, nil
	}
	if *slot != nil {
		(*slot).Close()
		*slot = nil
	}
	b, err := d.vd.NewBuffer(max(size, 4))
	if err == nil {
		*slot = b
	}
	return b, err
}

// Attend computes attention of q ([1, n, H, HeadDim] BLHD or BHLD, n <= 4 rows: the
// last n positions of sequence seq) over the sequence's cached keys: O and LSE as
// Forward would give for these rows over the same keys. opt.Mode row or shared (causal:
// shared selects once over every cached key; a window that covers every cached key is
// mode none) or none; Window, Causal, Scale and Softcap
// as in Forward (Window 0: every cached key); the weights are the cache's: opt.Weights
// and WeightParams are ignored, so the prefill's Forward options serve here too, and
// Mask, Bias and KeyPadding must be unset.
func (c *KVCache) Attend(ctx context.Context, seq int, q *Tensor, opt Options) (*Result, error) {
	rs, _, err := c.attend(ctx, []int{seq}, []*Tensor{q}, opt, false)
	if err != nil {
		return nil, err
	}
	return rs[0], nil
}

// AttendProfiled is Attend that also returns where the GPU time went: Selection (the
// thresholds, from the ord of the cached weights), Attention (the split-K pass and its
// merge), and Passes "tau", "split", "merge" (zero on devices without timestamps).
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

// AttendBatchProfiled is AttendBatch that also returns where the GPU time went, summed
// over the steps (as AttendProfiled).
func (c *KVCache) AttendBatchProfiled(ctx context.Context, seqs []int, qs []*Tensor, opt Options) ([]*Result, Profile, error) {
	return c.attend(ctx, seqs, qs, opt, true)
}

// attendStep is one sequence's share of an attend call.
type attendStep struct {
	seq  int
	q    *Tensor
	o    *Tensor
	lse  *vk.Buffer
	p    kern.Params
	mode Mode
	// carry: a one-row step in mode row, which leaves its thresholds in the cache's
	// carried state; advance: it computes them from the previous step's (select_advance)
	// instead of a radix select over every key.
	carry, advance bool
}

// stepBuffers is the scratch of one step: its parameters, the thresholds, the radix
// select's records and the split-K partials.
type stepBuffers struct{ params, tau, sel, part *vk.Buffer }

// checkStepOptions rejects the options a cache step cannot take. Weights and
// WeightParams are ignored (the cache holds the weights of its keys), so that the
// Options of a prefill's Forward serve its decode steps too.
func checkStepOptions(opt Options) error {
	if opt.Mask != nil || opt.Bias != nil || opt.KeyPadding != nil {
		return fmt.Errorf("a cache step takes no Mask, Bias or KeyPadding (append only the keys that exist)")
	}
	if opt.Window < 0 {
		return fmt.Errorf("window %d must be at least 1 (or 0: every key)", opt.Window)
	}
	if opt.Softcap < 0 || math.IsNaN(float64(opt.Softcap)) || math.IsInf(float64(opt.Softcap), 0) {
		return fmt.Errorf("softcap %v must be finite and >= 0", opt.Softcap)
	}
	return nil
}

// checkQuery checks a step's query tensor against the cache.
func (c *KVCache) checkQuery(q *Tensor) error {
	cfg := c.cfg
	if q == nil || q.d != c.d {
		return fmt.Errorf("q is nil or lives on another device")
	}
	s := q.shape
	if s.B != 1 || s.D != cfg.HeadDim || s.H%cfg.KVHeads != 0 || q.dtype != cfg.DType {
		return fmt.Errorf("q is %v %v, want [B=1 L=n H=a multiple of %d D=%d] %v", s, q.dtype, cfg.KVHeads, cfg.HeadDim, cfg.DType)
	}
	if cfg.BiasHeads != cfg.KVHeads && cfg.BiasHeads != s.H {
		return fmt.Errorf("the cache's %d bias heads are neither its %d kv heads nor q's %d heads", cfg.BiasHeads, cfg.KVHeads, s.H)
	}
	if s.L < 1 || s.L > kern.DecodeMaxRows {
		return fmt.Errorf("%d query rows: Attend takes 1 to %d (Forward takes longer chunks)", s.L, kern.DecodeMaxRows)
	}
	return nil
}

// newStep builds the parameters of q's rows (the last rows of sequence seq) over its
// cached keys; c.mu is held.
func (c *KVCache) newStep(seq int, q *Tensor, opt Options) (*attendStep, error) {
	cfg := c.cfg
	if seq < 0 || seq >= len(c.lens) {
		return nil, fmt.Errorf("sequence %d of %d", seq, len(c.lens))
	}
	lk := c.lens[seq]
	if lk == 0 {
		return nil, fmt.Errorf("sequence %d is empty", seq)
	}
	qsh := q.shape
	if qsh.L > lk {
		return nil, fmt.Errorf("%d query rows, but sequence %d holds %d keys (the rows are its last positions)", qsh.L, seq, lk)
	}
	mode := opt.Mode
	if (mode == ModeRow || mode == ModeShared) && (opt.Window == 0 || opt.Window >= lk) {
		mode = ModeNone
	}
	switch {
	case (mode == ModeRow || mode == ModeShared) && !opt.Causal:
		return nil, fmt.Errorf("mode %v needs Causal (without it every row keeps the same keys: use Forward)", mode)
	case mode != ModeRow && mode != ModeShared && mode != ModeNone:
		return nil, fmt.Errorf("mode %v: row, shared or none", mode)
	}
	scale := opt.Scale
	if scale == 0 {
		scale = float32(1 / math.Sqrt(float64(qsh.D)))
	}
	w := 1 // mode none has no window
	if mode == ModeRow || mode == ModeShared {
		w = opt.Window // below lk here
	}
	bc := kern.BlockSize(w)
	kvRow := uint32(cfg.KVHeads * cfg.HeadDim)
	cacheView := kern.View{Off: uint32(seq) * uint32(cfg.Capacity) * kvRow, SB: uint32(cfg.Capacity) * kvRow, SL: kvRow, SH: uint32(cfg.HeadDim)}
	st := &attendStep{seq: seq, q: q, mode: mode}
	st.p = kern.Params{
		B: 1, Lq: u32(qsh.L), Lk: u32(lk), H: u32(qsh.H), Hkv: u32(cfg.KVHeads), Hb: u32(cfg.BiasHeads), D: u32(qsh.D),
		G: u32(qsh.H / cfg.KVHeads), Mode: u32(int(mode)), Causal: b32(opt.Causal), Window: u32(w), BlockC: u32(bc),
		NBlocks: u32((lk + bc - 1) / bc), NCap: u32(w + bc), Storage: q.dtype.storage(),
		PosOffset: int32(lk - qsh.L), Scale: scale, Softcap: opt.Softcap,
		Q: view(q), K: cacheView, V: cacheView,
		OrdOff: uint32(seq) * uint32(cfg.BiasHeads) * uint32(cfg.Capacity), OrdSL: uint32(cfg.Capacity),
	}
	return st, nil
}

// planCarry decides how st finds its thresholds: carried from the previous step's when
// that step was the same window over one key less (and already had more than w keys);
// else a full select, which then becomes the carried state. c.mu is held; the caller
// calls dropCarry on the step's sequence if the step does not run.
func (c *KVCache) planCarry(st *attendStep) {
	if (st.mode != ModeRow && st.mode != ModeShared) || st.p.Lq != 1 {
		return // (one row: modes row and shared select alike)
	}
	lk, w := int(st.p.Lk), int(st.p.Window)
	st.carry = true
	st.advance = c.tauLen[st.seq] == lk-1 && c.tauW[st.seq] == w && lk-1 > w
	c.tauLen[st.seq], c.tauW[st.seq] = lk, w
}

// dropCarry forgets the carried thresholds of seq (a step failed: the state is unknown).
func (c *KVCache) dropCarry(seq int) { c.tauLen[seq] = -1 }

// newStepInto is newStep writing into out's O and LSE.
func (c *KVCache) newStepInto(seq int, q *Tensor, out *Result, opt Options) (*attendStep, error) {
	st, err := c.newStep(seq, q, opt)
	if err != nil {
		return nil, err
	}
	st.o, st.lse = out.O, out.LSE.buf
	st.p.O = view(out.O)
	return st, nil
}

// stepSizes are the byte sizes of a step's stepBuffers, for grids sized for the capacity.
func (c *KVCache) stepSizes(p *kern.Params) [4]int64 {
	_, _, _, tau := kern.PlanSizes(p)
	return [4]int64{kern.ParamsSize, tau, kern.TopWScratchSize(p), c.d.kern.DecodePartSize(p, u32(c.cfg.Capacity))}
}

// recordStep records one step: the thresholds (mode row) and the split-K attention. The
// grids are sized for the cache's capacity, so the recording stays valid as the
// sequence grows (only the parameters in b.params change). Stamps: "tau", "split",
// "merge".
func (c *KVCache) recordStep(r *vk.Recorder, st *attendStep, b stepBuffers, stamp func(string) error) error {
	capacity := u32(c.cfg.Capacity)
	hb := int64(c.cfg.BiasHeads)
	r.Barrier() // after earlier submissions' writes of the cache (Append)
	// The thresholds, each row's (mode shared: the decode kernel reads the last row's for
	// all); the selection kernels see mode row.
	pRow := st.p
	pRow.Mode = kern.ModeRow
	switch {
	case st.advance:
		carry := kern.Carry{State: c.carryState, StateRow: u32(st.seq * c.cfg.BiasHeads), Scratch: c.carryScratch, ScratchWord: u32(st.seq * int(c.carryWords))}
		if err := c.d.kern.RecordTopWAdvance(r, &pRow, b.params, c.ord, b.tau, carry, capacity); err != nil {
			return err
		}
	case st.mode == ModeRow || st.mode == ModeShared:
		if err := c.d.kern.RecordTopW(r, &pRow, b.params, c.ord, b.tau, b.sel, capacity); err != nil {
			return err
		}
		if st.carry {
			// The decode pass reads b.tau, not the copy: no barrier before it.
			if err := r.Copy(b.tau, 0, c.carryState, int64(st.seq)*hb*8, hb*8); err != nil {
				return err
			}
		}
	}
	if err := stamp("tau"); err != nil {
		return err
	}
	if err := c.d.kern.RecordDecode(r, &st.p, b.params, &kern.AttnBuffers{Q: st.q.buf, K: c.k, V: c.v, O: st.o.buf,
		LSE: st.lse, Ord: c.ord, Tau: b.tau}, b.part, capacity, stamp); err != nil {
		return err
	}
	r.Barrier()
	return stamp("merge")
}

func (c *KVCache) attend(ctx context.Context, seqs []int, qs []*Tensor, opt Options, timed bool) (rs []*Result, prof Profile, err error) {
	fail := func(format string, a ...any) ([]*Result, Profile, error) {
		return nil, prof, fmt.Errorf("dma: KVCache.Attend: "+format, a...)
	}
	op := "KVCache.Attend"
	if len(seqs) != 1 {
		op = "KVCache.AttendBatch"
	}
	uses := make([]use, len(qs))
	for i, q := range qs {
		uses[i] = use{fmt.Sprintf("qs[%d]", i), q}
		if len(qs) == 1 {
			uses[i].name = "q"
		}
	}
	leave, err := c.enter(op, uses...)
	if err != nil {
		return nil, prof, err
	}
	defer leave()
	if len(seqs) == 0 || len(seqs) != len(qs) {
		return fail("%d sequences for %d query tensors", len(seqs), len(qs))
	}
	if err := checkStepOptions(opt); err != nil {
		return fail("%v", err)
	}
	for _, q := range qs {
		if err := c.checkQuery(q); err != nil {
			return fail("%v", err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.k == nil {
		return fail("the cache is closed")
	}
	steps := make([]*attendStep, len(seqs))
	results := make([]*Result, len(seqs))
	defer func() {
		if err != nil {
			for _, res := range results {
				if res != nil {
					res.closePartial()
				}
			}
		}
	}()
	defer func() {
		if err != nil {
			for _, seq := range seqs {
				if seq >= 0 && seq < len(c.tauLen) {
					c.dropCarry(seq)
				}
			}
		}
	}()
	for i, seq := range seqs {
		st, err := c.newStep(seq, qs[i], opt)
		if err != nil {
			return fail("%v", err)
		}
		c.planCarry(st)
		steps[i] = st
		res := &Result{Path: "decode"}
		results[i] = res
		qsh := qs[i].shape
		if res.O, err = c.d.newTensor(op, qs[i].dtype, qsh, qs[i].layout); err != nil {
			return nil, prof, err
		}
		if res.LSE, err = c.d.newLSE(op, 1, qsh.H, qsh.L); err != nil {
			return nil, prof, err
		}
		st.lse = res.LSE.buf
		st.o = res.O
		st.p.O = view(res.O)
	}
	// Scratch kept by the cache between calls (they are serialized), one set per
	// sequence of the call, grown on demand: a call allocates only its outputs.
	for len(c.scratch) < len(steps) {
		c.scratch = append(c.scratch, [4]*vk.Buffer{})
	}
	bufs := make([]stepBuffers, len(steps))
	for i, st := range steps {
		var got [4]*vk.Buffer
		for slot, size := range c.stepSizes(&st.p) {
			if got[slot], err = growBuffer(c.d, &c.scratch[i][slot], size); err != nil {
				return nil, prof, err
			}
		}
		bufs[i] = stepBuffers{got[0], got[1], got[2], got[3]}
	}
	ts, err := c.d.vd.RunTimed(ctx, func(r *vk.Recorder) error {
		stamp := stamper(r, timed)
		for i, st := range steps {
			if err := r.Update(bufs[i].params, 0, st.p.Bytes()); err != nil {
				return err
			}
			r.Barrier()
			if err := stamp("start"); err != nil {
				return err
			}
			if err := c.recordStep(r, st, bufs[i], stamp); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, prof, fmt.Errorf("dma: KVCache.Attend: %w", err)
	}
	prof = stepProfile(ts)
	return results, prof, nil
}

// stepProfile adds up the stamps of recordStep's steps ("start", "tau", "split",
// "merge" each, "append" after "start" in AppendAttendInto's; a step's attention is its
// split and merge passes).
func stepProfile(ts []vk.Timestamp) Profile {
	var prof Profile
	for i := 1; i < len(ts); i++ {
		if ts[i].Label == "start" {
			continue
		}
		d := time.Duration(ts[i].Nanos - ts[i-1].Nanos)
		switch ts[i].Label {
		case "tau":
			prof.Selection += d
		case "append": // AppendAttendInto's: neither selection nor attention
		default:
			prof.Attention += d
		}
		prof.Passes = append(prof.Passes, Pass{Name: ts[i].Label, Time: d})
	}
	return prof
}

// NewResult allocates the outputs of a step of q's shape, for AttendInto: O like q (shape,
// dtype, layout) and the LSE of its rows.
func (c *KVCache) NewResult(q *Tensor) (*Result, error) {
	const op = "KVCache.NewResult"
	leave, err := c.enter(op, use{"q", q})
	if err != nil {
		return nil, err
	}
	defer leave()
	if err := c.checkQuery(q); err != nil {
		return nil, fmt.Errorf("dma: %s: %w", op, err)
	}
	o, err := c.d.newTensor(op, q.dtype, q.shape, q.layout)
	if err != nil {
		return nil, err
	}
	lse, err := c.d.newLSE(op, 1, q.shape.H, q.shape.L)
	if err != nil {
		o.Close()
		return nil, err
	}
	return &Result{O: o, LSE: lse, Path: "decode"}, nil
}

// stepKey tells recorded steps apart: everything a recording bakes in.
type stepKey struct {
	seq       int
	q, o, lse *vk.Buffer
	p         kern.Params // with Lk, PosOffset and NBlocks cleared: they change every step
	mode      Mode
	timed     bool
	carry     bool      // the thresholds go to the carried state
	advance   bool      // and come from it
	app       appendKey // the append recorded before the step (AppendAttendInto), or zero
}

// stepKeyOf is the key of st's recording.
func (c *KVCache) stepKeyOf(st *attendStep, timed bool) stepKey {
	key := stepKey{seq: st.seq, q: st.q.buf, o: st.o.buf, lse: st.lse, p: st.p, mode: st.mode, timed: timed, carry: st.carry, advance: st.advance}
	key.p.Lk, key.p.PosOffset, key.p.NBlocks = 0, 0, 0
	return key
}

// stepProgram is a recorded step (AttendInto, AppendAttendInto) with its own scratch;
// bufs.params and appendParams (the append's, nil without one) are mapped, written
// before each submission.
type stepProgram struct {
	prog         *vk.Program
	bufs         stepBuffers
	appendParams *vk.Buffer
}

// newStepProgram allocates the scratch of a recorded step of st: parameters in mapped
// memory (written before each submission), the rest on the device. Nothing is recorded.
func (c *KVCache) newStepProgram(st *attendStep) (*stepProgram, error) {
	sp := &stepProgram{}
	sizes := c.stepSizes(&st.p)
	var err error
	if sp.bufs.params, err = c.d.vd.NewMappedBuffer(sizes[0]); err != nil {
		return nil, err
	}
	for i, dst := range []**vk.Buffer{&sp.bufs.tau, &sp.bufs.sel, &sp.bufs.part} {
		if *dst, err = c.d.vd.NewBuffer(max(sizes[i+1], 4)); err != nil {
			sp.close()
			return nil, err
		}
	}
	return sp, nil
}

func (sp *stepProgram) close() {
	if sp.prog != nil {
		sp.prog.Close()
	}
	for _, b := range []*vk.Buffer{sp.bufs.params, sp.bufs.tau, sp.bufs.sel, sp.bufs.part, sp.appendParams} {
		if b != nil {
			b.Close()
		}
	}
}

// checkInto checks q and the result a recorded step writes into.
func (c *KVCache) checkInto(q *Tensor, out *Result) error {
	if err := c.checkQuery(q); err != nil {
		return err
	}
	if out == nil || out.O == nil || out.LSE == nil {
		return fmt.Errorf("nil result")
	}
	if out.O.d != c.d || out.LSE.d != c.d {
		return fmt.Errorf("out is not of this device")
	}
	if out.O.shape != q.shape || out.O.dtype != q.dtype || out.O.layout != q.layout {
		return fmt.Errorf("out.O is %v %v %v, want q's %v %v %v", out.O.shape, out.O.layout, out.O.dtype, q.shape, q.layout, q.dtype)
	}
	if out.LSE.B != 1 || out.LSE.H != q.shape.H || out.LSE.Lq != q.shape.L {
		return fmt.Errorf("out.LSE is [%d %d %d], want [1 %d %d]", out.LSE.B, out.LSE.H, out.LSE.Lq, q.shape.H, q.shape.L)
	}
	if out.O.buf == q.buf {
		return fmt.Errorf("out.O is q")
	}
	return nil
}

// AttendInto is Attend writing into out (from NewResult, or any Result whose O has q's
// shape, dtype and layout) instead of allocating. It is the fast way to decode: the
// first call for a given sequence, q, out and options records the step, and later calls
// with the same arguments submit that recording again (the cache keeps the most recent
// ones), so a step costs the host one parameter write, one submission and one wait.
// q and out are read and written in place: change q's contents between calls, not the
// tensor.
func (c *KVCache) AttendInto(ctx context.Context, seq int, q *Tensor, out *Result, opt Options) error {
	_, err := c.attendInto(ctx, seq, q, out, opt, false)
	return err
}

// AttendIntoProfiled is AttendInto that also returns where the GPU time went (as
// AttendProfiled).
func (c *KVCache) AttendIntoProfiled(ctx context.Context, seq int, q *Tensor, out *Result, opt Options) (Profile, error) {
	return c.attendInto(ctx, seq, q, out, opt, true)
}

func (c *KVCache) attendInto(ctx context.Context, seq int, q *Tensor, out *Result, opt Options, timed bool) (Profile, error) {
	fail := func(format string, a ...any) (Profile, error) {
		return Profile{}, fmt.Errorf("dma: KVCache.AttendInto: "+format, a...)
	}
	leave, err := c.enter("KVCache.AttendInto", append([]use{{"q", q}}, resultUses(out)...)...)
	if err != nil {
		return Profile{}, err
	}
	defer leave()
	if err := checkStepOptions(opt); err != nil {
		return fail("%v", err)
	}
	if err := c.checkInto(q, out); err != nil {
		return fail("%v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.k == nil {
		return fail("the cache is closed")
	}
	st, err := c.newStepInto(seq, q, out, opt)
	if err != nil {
		return fail("%v", err)
	}
	prof, err := c.runInto(ctx, st, nil, timed)
	if err != nil {
		return fail("%v", err)
	}
	return prof, nil
}

// stepAppend is the append a recorded step runs first (AppendAttendInto): its key, its
// parameters and its buffers.
type stepAppend struct {
	key  appendKey
	p    kern.Params
	bufs *kern.AppendBuffers
}

// runInto runs st through its recording, after app's append when app is not nil,
// recording it first if needed (AttendInto's recordings and AppendAttendInto's are kept
// apart, maxStepPrograms of each). On failure the carried thresholds of st's sequence
// are dropped. c.mu is held.
func (c *KVCache) runInto(ctx context.Context, st *attendStep, app *stepAppend, timed bool) (Profile, error) {
	c.planCarry(st)
	key, progs := c.stepKeyOf(st, timed), &c.steps
	if app != nil {
		key.app, progs = app.key, &c.fused
	}
	sp, ok := progs.get(key)
	var err error
	if !ok {
		if sp, err = c.recordInto(st, app, timed); err == nil {
			progs.add(key, sp)
		}
	}
	if err == nil && app != nil {
		err = sp.appendParams.Upload(ctx, 0, app.p.Bytes())
	}
	if err == nil {
		err = sp.bufs.params.Upload(ctx, 0, st.p.Bytes())
	}
	var ts []vk.Timestamp
	if err == nil {
		ts, err = sp.prog.SubmitTimed(ctx)
	}
	if err != nil {
		c.dropCarry(st.seq)
		return Profile{}, err
	}
	return stepProfile(ts), nil
}

// recordInto records st, after app's append when app is not nil (stamp "append").
func (c *KVCache) recordInto(st *attendStep, app *stepAppend, timed bool) (*stepProgram, error) {
	sp, err := c.newStepProgram(st)
	if err != nil {
		return nil, err
	}
	if app != nil {
		if sp.appendParams, err = c.d.vd.NewMappedBuffer(kern.ParamsSize); err != nil {
			sp.close()
			return nil, err
		}
	}
	sp.prog, err = c.d.vd.Record(func(r *vk.Recorder) error {
		stamp := stamper(r, timed)
		if err := stamp("start"); err != nil {
			return err
		}
		if app != nil {
			r.Barrier() // after earlier submissions' reads of the cache
			if err := c.d.kern.RecordAppend(r, &app.p, sp.appendParams, app.bufs); err != nil {
				return err
			}
			if err := stamp("append"); err != nil {
				return err
			}
		}
		return c.recordStep(r, st, sp.bufs, stamp) // its barrier orders the append first
	})
	if err != nil {
		sp.close()
		return nil, err
	}
	return sp, nil
}

// Close frees the cache and its recorded steps (once no call in progress uses it).
// Closing again, or after the device's Close, does nothing and returns nil.
func (c *KVCache) Close() error {
	if c != nil && c.d != nil {
		c.d.release(c)
	}
	return nil
}

func (c *KVCache) owner() *Device {
	if c == nil {
		return nil
	}
	return c.d
}
func (c *KVCache) state() *lifetime { return &c.life }

// free releases the cache's programs and buffers.
func (c *KVCache) free() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.steps.closeAll()
	c.appends.closeAll()
	c.fused.closeAll()
	all := []*vk.Buffer{c.k, c.v, c.ord, c.carryState, c.carryScratch, c.appendParams}
	for _, s := range c.scratch {
		all = append(all, s[:]...)
	}
	for _, b := range all {
		if b != nil {
			b.Close()
		}
	}
	c.k, c.v, c.ord, c.scratch = nil, nil, nil, nil
	c.carryState, c.carryScratch, c.appendParams = nil, nil, nil
}
