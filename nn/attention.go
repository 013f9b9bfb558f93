package nn

import (
	"context"
	"fmt"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/vk"
)

// AttentionConfig is the shape of a DMA attention block.
type AttentionConfig struct {
	Hidden, Heads, KVHeads, HeadDim int
	Window                          int       // keep_window_size: keys each query keeps
	Eps                             float32   // of the q/k norms
	DType                           dma.DType // of the queries, keys and values DMA takes
}

// AttentionWeights are a block's checkpoint arrays (PyTorch layouts): projections
// [out, in], biases [out] or nil, the q/k norms' weights [HeadDim] (nil: no norm), A
// [KVHeads] and DtProj [KVHeads, KVHeads*HeadDim] of the dynamic weights.
type AttentionWeights struct {
	Q, K, V, O, DtProj         *Array
	QBias, KBias, VBias, OBias *Array
	DtBias                     *Array
	QNorm, KNorm               *Array
	A                          *Array
}

// Attention is DMA attention as Doge uses it: q, k, v projections; RMSNorm of each
// query and key head, then the rotary embedding; the dynamic weights
// exp(A * softplus(dt_proj(v))) over each key's values of all kv heads (one weight per
// kv head: dma.FormExp, Hb = KVHeads); DMA (mode row, causal, the Window best keys per
// query, the weights added to the scores) over the KV cache; the output projection.
type Attention struct {
	Cfg        AttentionConfig
	Q, K, V, O *Linear
	// Dt is dt_proj after v_proj as one product of the block's input (the weights
	// multiplied out in float64, kept in float32): dt = dt_proj(v) in one pass with q, k
	// and v instead of a pass after v.
	Dt           *Linear
	QNorm, KNorm *Vector
	A            *Tensor // float32 [1, KVHeads]
}

// NewAttention uploads a block.
func (n *Device) NewAttention(ctx context.Context, cfg AttentionConfig, w *AttentionWeights) (*Attention, error) {
	if cfg.Heads < 1 || cfg.KVHeads < 1 || cfg.Heads%cfg.KVHeads != 0 || cfg.HeadDim < 2 || cfg.Window < 1 {
		return nil, fmt.Errorf("nn: NewAttention: %d heads, %d kv heads, head dim %d, window %d", cfg.Heads, cfg.KVHeads, cfg.HeadDim, cfg.Window)
	}
	a := &Attention{Cfg: cfg}
	hd := cfg.HeadDim
	var err error
	fail := func(e error) (*Attention, error) { a.Close(); return nil, e }
	for _, l := range []struct {
		dst     **Linear
		w, b    *Array
		out, in int
	}{
		{&a.Q, w.Q, w.QBias, cfg.Heads * hd, cfg.Hidden},
		{&a.K, w.K, w.KBias, cfg.KVHeads * hd, cfg.Hidden},
		{&a.V, w.V, w.VBias, cfg.KVHeads * hd, cfg.Hidden},
		{&a.O, w.O, w.OBias, cfg.Hidden, cfg.Heads * hd},
	} {
		if err := l.w.check(l.out, l.in); err != nil {
			return fail(err)
		}
		if *l.dst, err = n.NewLinear(ctx, l.w, l.b); err != nil {
			return fail(err)
		}
	}
	if err := w.DtProj.check(cfg.KVHeads, cfg.KVHeads*hd); err != nil {
		return fail(err)
	}
	dtw, dtb, err := composeDt(w, cfg)
	if err != nil {
		return fail(err)
	}
	if a.Dt, err = n.NewLinear(ctx, dtw, dtb); err != nil {
		return fail(err)
	}
	for _, v := range []struct {
		dst **Vector
		a   *Array
	}{{&a.QNorm, w.QNorm}, {&a.KNorm, w.KNorm}} {
		if v.a == nil {
			continue
		}
		if err := v.a.check(hd); err != nil {
			return fail(err)
		}
		if *v.dst, err = n.NewVector(ctx, v.a); err != nil {
			return fail(err)
		}
	}
	if err := w.A.check(cfg.KVHeads); err != nil {
		return fail(err)
	}
	if a.A, err = n.upload(ctx, dma.Float32, 1, cfg.KVHeads, Encode(dma.Float32, w.A.Floats())); err != nil {
		return fail(err)
	}
	return a, nil
}

// Close frees the block.
func (a *Attention) Close() error {
	for _, l := range []*Linear{a.Q, a.K, a.V, a.O, a.Dt} {
		if l != nil {
			l.Close()
		}
	}
	for _, v := range []*Vector{a.QNorm, a.KNorm} {
		if v != nil {
			v.Close()
		}
	}
	if a.A != nil {
		a.A.Close()
	}
	return nil
}

// Options are the DMA options of the block.
func (a *Attention) Options() dma.Options {
	return dma.Options{Mode: dma.ModeRow, Window: a.Cfg.Window, Causal: true}
}

// KVCacheConfig is the cache of one layer for seqs sequences of up to capacity tokens.
func (a *Attention) KVCacheConfig(seqs, capacity int) dma.KVCacheConfig {
	c := a.Cfg
	return dma.KVCacheConfig{Sequences: seqs, Capacity: capacity, KVHeads: c.KVHeads, HeadDim: c.HeadDim, BiasHeads: c.KVHeads, DType: c.DType}
}

// ProjectBuffers are the float32 projections of rows of hidden states that Project
// writes: Q [T, Heads*HeadDim], K and V [T, KVHeads*HeadDim], Dt [T, KVHeads].
type ProjectBuffers struct {
	Q, K, V, Dt *Tensor
	Scratch     *Tensor // for the linears (Linear.ScratchElems of T rows)
}

// NewProjectBuffers allocates them for t rows.
func (a *Attention) NewProjectBuffers(n *Device, t int) (*ProjectBuffers, error) {
	c := a.Cfg
	b := &ProjectBuffers{}
	var err error
	for _, x := range []struct {
		dst  **Tensor
		cols int
	}{{&b.Q, c.Heads * c.HeadDim}, {&b.K, c.KVHeads * c.HeadDim}, {&b.V, c.KVHeads * c.HeadDim}, {&b.Dt, c.KVHeads}} {
		if *x.dst, err = n.NewTensor(dma.Float32, t, x.cols); err != nil {
			b.Close()
			return nil, err
		}
	}
	if b.Scratch, err = n.NewTensor(dma.Float32, 1, a.ScratchElems(t)); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// ScratchElems is the float32 scratch the block's linears need for up to t rows.
func (a *Attention) ScratchElems(t int) int {
	return max(LinearsScratchElems(t, a.Q, a.K, a.V, a.Dt), a.O.ScratchElems(t), 1)
}

// Close frees the buffers.
func (b *ProjectBuffers) Close() error {
	for _, t := range []*Tensor{b.Q, b.K, b.V, b.Dt, b.Scratch} {
		if t != nil {
			t.Close()
		}
	}
	return nil
}

// RecordProject records the projections of x (normed hidden states, [T, Hidden]
// float32) into b, side by side: q, k, v and dt = dt_proj(v) (as Dt).
func (a *Attention) RecordProject(r *vk.Recorder, b *ProjectBuffers, x *Tensor) error {
	t := x.Rows
	rows := func(y *Tensor) *Tensor { s, _ := y.Slice(0, t); return s }
	return RecordLinears(r, b.Scratch, LinearJob{a.Q, rows(b.Q), x}, LinearJob{a.K, rows(b.K), x},
		LinearJob{a.V, rows(b.V), x}, LinearJob{a.Dt, rows(b.Dt), x})
}

// composeDt multiplies dt_proj [Hkv, Hkv*D] by v_proj [Hkv*D, hidden] (and carries
// v_proj's bias through dt_proj), in float64: the float32 weight and bias of dt as a
// product of the block's input.
func composeDt(w *AttentionWeights, cfg AttentionConfig) (*Array, *Array, error) {
	kv, hidden := cfg.KVHeads*cfg.HeadDim, cfg.Hidden
	wdt, wv := w.DtProj.Floats(), w.V.Floats()
	out := make([]float32, cfg.KVHeads*hidden)
	acc := make([]float64, hidden)
	for h := 0; h < cfg.KVHeads; h++ {
		clear(acc)
		for j := 0; j < kv; j++ {
			c := float64(wdt[h*kv+j])
			row := wv[j*hidden : (j+1)*hidden]
			for i, x := range row {
				acc[i] += c * float64(x)
			}
		}
		for i, x := range acc {
			out[h*hidden+i] = float32(x)
		}
	}
	dtw := ArrayOf(w.DtProj.Name+" * "+w.V.Name, dma.Float32, out, cfg.KVHeads, hidden)
	if w.VBias == nil && w.DtBias == nil {
		return dtw, nil, nil
	}
	bias := make([]float32, cfg.KVHeads)
	var bv, bdt []float32
	if w.VBias != nil {
		if err := w.VBias.check(kv); err != nil {
			return nil, nil, err
		}
		bv = w.VBias.Floats()
	}
	if w.DtBias != nil {
		if err := w.DtBias.check(cfg.KVHeads); err != nil {
			return nil, nil, err
		}
		bdt = w.DtBias.Floats()
	}
	for h := range bias {
		s := 0.0
		for j := range bv {
			s += float64(wdt[h*kv+j]) * float64(bv[j])
		}
		if bdt != nil {
			s += float64(bdt[h])
		}
		bias[h] = float32(s)
	}
	return dtw, ArrayOf("dt bias", dma.Float32, bias, cfg.KVHeads), nil
}

// RecordQKV records, side by side, the per-head norms and rotary embedding of rows
// [r0, r0+n) of the projections into q ([n, Heads*HeadDim]) and k, the cast of v, and
// the dynamic weights of those keys into w at key off; cs is the rows' RoPE table
// ([n, HeadDim]).
func (a *Attention) RecordQKV(nd *Device, r *vk.Recorder, b *ProjectBuffers, r0, n int, q, k, v *Tensor, w *dma.Weights, off int, cs *Tensor) error {
	c := a.Cfg
	rows := func(x *Tensor) (*Tensor, error) { return x.Slice(r0, r0+n) }
	qf, err := rows(b.Q)
	if err != nil {
		return err
	}
	kf, _ := rows(b.K)
	vf, _ := rows(b.V)
	ropeQ, err := nd.normRoPEPass(q, qf, c.Heads, c.HeadDim, a.QNorm, c.Eps, cs)
	if err != nil {
		return err
	}
	ropeK, err := nd.normRoPEPass(k, kf, c.KVHeads, c.HeadDim, a.KNorm, c.Eps, cs)
	if err != nil {
		return err
	}
	cast, err := nd.castPass(v, vf)
	if err != nil {
		return err
	}
	weights, err := nd.dynamicWeightsPass(w, off, b.Dt, r0, n, a.A)
	if err != nil {
		return err
	}
	return RecordPasses(r, ropeQ, ropeK, cast, weights)
}
