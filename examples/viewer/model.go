package main

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/internal/npy"
)

// inputs is one sequence of tokens: the queries, keys and values of every position
// and the dynamic weights of every key (float32, [L][H][D], [L][Hkv][D], [Hb][L]).
type inputs struct {
	L, H, Hkv, Hb, D int
	q, k, v          []float32
	weights          []float32
}

// randomInputs makes a sequence of l tokens with normal q, k, v and the weights DMA
// computes from v (dma.DynamicWeights) with random parameters.
func randomInputs(ctx context.Context, d *dma.Device, l, h, hkv, dim int, seed uint64) (*inputs, error) {
	rng := rand.New(rand.NewPCG(seed, 7))
	in := &inputs{L: l, H: h, Hkv: hkv, Hb: hkv, D: dim}
	fill := func(n int, scale float64) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * scale)
		}
		return x
	}
	in.q, in.k, in.v = fill(l*h*dim, 1), fill(l*hkv*dim, 1), fill(l*hkv*dim, 1)
	wp := dma.WeightParams{Wdt: fill(hkv*dim*in.Hb, 0.15), A: fill(in.Hb, 0.5), Hb: in.Hb, Form: dma.FormExp}
	vt, err := d.NewTensor(dma.Float32, dma.Shape{B: 1, L: l, H: hkv, D: dim}, dma.BLHD)
	if err != nil {
		return nil, err
	}
	defer vt.Close()
	if err := vt.Upload(ctx, in.v); err != nil {
		return nil, err
	}
	w, err := d.DynamicWeights(ctx, vt, &wp)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	in.weights, err = w.Download(ctx)
	return in, err
}

// npyInputs reads a sequence from .npy files: q [1, L, H, D], k and v [1, L, Hkv, D]
// and the weights [1, Hb, L] (or all ones without a file: sliding-window attention).
func npyInputs(qPath, kPath, vPath, wPath string) (*inputs, error) {
	read := func(path string, rank int) (*npy.Array, error) {
		a, err := npy.Read(path)
		if err == nil && len(a.Shape) != rank {
			err = fmt.Errorf("%s: shape %v, want %d dimensions", path, a.Shape, rank)
		}
		if err == nil && a.Shape[0] != 1 {
			err = fmt.Errorf("%s: batch %d: the viewer shows one sequence (batch 1)", path, a.Shape[0])
		}
		return a, err
	}
	qa, err := read(qPath, 4)
	if err != nil {
		return nil, err
	}
	ka, err := read(kPath, 4)
	if err != nil {
		return nil, err
	}
	va, err := read(vPath, 4)
	if err != nil {
		return nil, err
	}
	in := &inputs{L: ka.Shape[1], H: qa.Shape[2], Hkv: ka.Shape[2], Hb: ka.Shape[2], D: ka.Shape[3], q: qa.Data, k: ka.Data, v: va.Data}
	if qa.Shape[1] != in.L || qa.Shape[3] != in.D || va.Shape[1] != in.L || va.Shape[2] != in.Hkv || va.Shape[3] != in.D {
		return nil, fmt.Errorf("q %v, k %v, v %v: want [1, L, H, D], [1, L, Hkv, D] twice", qa.Shape, ka.Shape, va.Shape)
	}
	if wPath == "" {
		in.weights = make([]float32, in.Hb*in.L)
		for i := range in.weights {
			in.weights[i] = 1
		}
		return in, nil
	}
	wa, err := read(wPath, 3)
	if err != nil {
		return nil, err
	}
	if wa.Shape[2] != in.L || (wa.Shape[1] != in.H && wa.Shape[1] != in.Hkv) {
		return nil, fmt.Errorf("weights %v: want [1, H=%d or Hkv=%d, L=%d]", wa.Shape, in.H, in.Hkv, in.L)
	}
	in.Hb, in.weights = wa.Shape[1], wa.Data
	return in, nil
}

// decoder runs the sequence through a KV cache one token per step, as a model decodes,
// and keeps the selection of every row so far for the picture.
type decoder struct {
	d      *dma.Device
	in     *inputs
	cache  *dma.KVCache
	n      int // tokens decoded
	k, v   *dma.Tensor
	w      *dma.Weights
	q      *dma.Tensor
	out    *dma.Result
	mode   dma.Mode
	window int
	sel    *dma.Selection
}

func newDecoder(d *dma.Device, in *inputs, mode dma.Mode, window int) (*decoder, error) {
	dec := &decoder{d: d, in: in, mode: mode, window: window}
	var err error
	dec.cache, err = d.NewKVCache(dma.KVCacheConfig{Sequences: 1, Capacity: in.L, KVHeads: in.Hkv, HeadDim: in.D, BiasHeads: in.Hb, DType: dma.Float32})
	if err == nil {
		dec.k, err = d.NewTensor(dma.Float32, dma.Shape{B: 1, L: 1, H: in.Hkv, D: in.D}, dma.BLHD)
	}
	if err == nil {
		dec.v, err = d.NewTensor(dma.Float32, dma.Shape{B: 1, L: 1, H: in.Hkv, D: in.D}, dma.BLHD)
	}
	if err == nil {
		dec.q, err = d.NewTensor(dma.Float32, dma.Shape{B: 1, L: 1, H: in.H, D: in.D}, dma.BLHD)
	}
	if err == nil {
		dec.w, err = d.NewWeights(1, in.Hb, 1)
	}
	if err == nil {
		dec.out, err = dec.cache.NewResult(dec.q)
	}
	if err != nil {
		dec.Close()
		return nil, err
	}
	return dec, nil
}

// Step decodes the next token: the KV cache appends its key and attends its query
// (one submission, AppendAttendInto), then the picture's selection is brought up to
// date. It does nothing once every token is decoded.
func (dec *decoder) Step(ctx context.Context) error {
	in := dec.in
	if dec.n == in.L {
		return nil
	}
	t := dec.n
	kv := in.Hkv * in.D
	w := make([]float32, in.Hb)
	for h := range w {
		w[h] = in.weights[h*in.L+t]
	}
	for _, up := range []error{
		dec.k.Upload(ctx, in.k[t*kv:(t+1)*kv]),
		dec.v.Upload(ctx, in.v[t*kv:(t+1)*kv]),
		dec.q.Upload(ctx, in.q[t*in.H*in.D:(t+1)*in.H*in.D]),
		dec.w.Upload(ctx, w),
	} {
		if up != nil {
			return up
		}
	}
	opt := dma.Options{Mode: dec.mode, Window: dec.window, Causal: true}
	if err := dec.cache.AppendAttendInto(ctx, 0, dec.k, dec.v, dec.w, dec.q, dec.out, opt); err != nil {
		return err
	}
	dec.n++
	return dec.Reselect(ctx)
}

// Reselect computes the selection of the tokens decoded so far (after a step, or a
// change of mode or window).
func (dec *decoder) Reselect(ctx context.Context) error {
	if dec.n == 0 {
		return nil
	}
	in := dec.in
	w, err := dec.d.NewWeights(1, in.Hb, dec.n)
	if err != nil {
		return err
	}
	defer w.Close()
	prefix := make([]float32, 0, in.Hb*dec.n)
	for h := range in.Hb {
		prefix = append(prefix, in.weights[h*in.L:h*in.L+dec.n]...)
	}
	if err := w.Upload(ctx, prefix); err != nil {
		return err
	}
	sel, err := dec.d.Select(ctx, w, dma.SelectOptions{H: in.H, Mode: dec.mode, Window: dec.window, Causal: true})
	if err != nil {
		return err
	}
	if dec.sel != nil {
		dec.sel.Close() // a frame still drawing from it keeps it alive
	}
	dec.sel = sel
	return nil
}

// Close frees the decoder.
func (dec *decoder) Close() {
	if dec.sel != nil {
		dec.sel.Close()
	}
	if dec.out != nil {
		dec.out.Close()
	}
	for _, t := range []*dma.Tensor{dec.k, dec.v, dec.q} {
		if t != nil {
			t.Close()
		}
	}
	if dec.w != nil {
		dec.w.Close()
	}
	if dec.cache != nil {
		dec.cache.Close()
	}
}
