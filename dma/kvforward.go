package dma

import (
	"context"
	"fmt"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/vk"
)

// cachedKeys is where a Forward over a KV cache's keys finds them: the K and V rows of
// one sequence (view, into the cache's buffers) and the ord of its weights.
type cachedKeys struct {
	c         *KVCache
	seq, keys int
	view      kern.View
}

// recordOrd copies the ord of the keys' weights ([BiasHeads][keys]) from the cache into
// a plan's ord buffer, as the plan's first pass would have computed it from the float
// weights (Append computed it with the same function), then stamps "ord".
func (ck *cachedKeys) recordOrd(r *vk.Recorder, ord *vk.Buffer, stamp func(string) error) error {
	cfg := ck.c.cfg
	for hb := 0; hb < cfg.BiasHeads; hb++ {
		src := (int64(ck.seq)*int64(cfg.BiasHeads) + int64(hb)) * int64(cfg.Capacity) * 4
		if err := r.Copy(ck.c.ord, src, ord, int64(hb)*int64(ck.keys)*4, int64(ck.keys)*4); err != nil {
			return err
		}
	}
	r.Barrier()
	return stamp("ord")
}

// Forward computes attention of q ([1, n, H, HeadDim], BLHD or BHLD, n up to keys) over
// the first keys keys of sequence seq, q's rows being the positions keys-n to keys-1:
// O and LSE exactly as Device.Forward gives them for q over those keys and their
// weights (bottom-right aligned, docs/dma-semantics.md), with the kernel Forward would
// choose (Result.Path). It serves a prompt in chunks, and a prompt that continues a
// cached sequence (a conversation's next turn): Append the new keys, then attend each
// chunk of the new queries over the keys up to the chunk's last. Options as in Attend:
// modes row, shared or none; the weights are the cache's (opt.Weights and
// WeightParams are ignored); Mask, Bias and KeyPadding must be unset.
func (c *KVCache) Forward(ctx context.Context, seq, keys int, q *Tensor, opt Options) (*Result, error) {
	return c.forward(ctx, "KVCache.Forward", seq, keys, q, nil, opt)
}

// ForwardInto is Forward writing into out's O and LSE (from Device.NewResult(q)), which
// a prompt's chunks can reuse: no allocation of outputs per call.
func (c *KVCache) ForwardInto(ctx context.Context, seq, keys int, q *Tensor, out *Result, opt Options) error {
	if out == nil {
		return fmt.Errorf("dma: KVCache.ForwardInto: out is nil")
	}
	_, err := c.forward(ctx, "KVCache.ForwardInto", seq, keys, q, out, opt)
	return err
}

func (c *KVCache) forward(ctx context.Context, op string, seq, keys int, q *Tensor, out *Result, opt Options) (*Result, error) {
	fail := func(format string, a ...any) (*Result, error) {
		return nil, fmt.Errorf("dma: "+op+": "+format, a...)
	}
	leave, err := c.enter(op, append([]use{{"q", q}}, resultUses(out)...)...)
	if err != nil {
		return nil, err
	}
	defer leave()
	if err := checkStepOptions(opt); err != nil {
		return fail("%v", err)
	}
	switch opt.Mode {
	case ModeRow, ModeShared, ModeNone:
	default:
		return fail("mode %v: row, shared or none", opt.Mode)
	}
	cfg := c.cfg
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
	c.mu.Lock()
	defer c.mu.Unlock() // held while the kernels read the cache: no Append or Reset meanwhile
	if c.k == nil {
		return fail("the cache is closed")
	}
	if seq < 0 || seq >= len(c.lens) {
		return fail("sequence %d of %d", seq, len(c.lens))
	}
	if keys < 1 || keys > c.lens[seq] {
		return fail("keys %d: sequence %d holds %d (1 to that many)", keys, seq, c.lens[seq])
	}
	if qs.L > keys {
		return fail("%d query rows over %d keys (the rows are the last positions of the keys)", qs.L, keys)
	}
	// Stand-ins with the shapes Forward checks; the kernels read the cache's rows
	// through cachedKeys' view, and the plan the ord Append stored.
	ks := Shape{B: 1, L: keys, H: cfg.KVHeads, D: cfg.HeadDim}
	k := &Tensor{d: c.d, buf: c.k, dtype: cfg.DType, shape: ks, layout: BLHD}
	v := &Tensor{d: c.d, buf: c.v, dtype: cfg.DType, shape: ks, layout: BLHD}
	opt.Weights, opt.WeightParams = &Weights{d: c.d, buf: c.ord, B: 1, Hb: cfg.BiasHeads, Lk: keys}, nil
	kvRow := uint32(cfg.KVHeads * cfg.HeadDim)
	ck := &cachedKeys{c: c, seq: seq, keys: keys,
		view: kern.View{Off: uint32(seq) * uint32(cfg.Capacity) * kvRow, SB: uint32(cfg.Capacity) * kvRow, SL: kvRow, SH: uint32(cfg.HeadDim)}}
	res, _, err := c.d.forwardWith(ctx, op, q, k, v, opt, false, out, c.d.vd.RunTimed, ck)
	return res, err
}
