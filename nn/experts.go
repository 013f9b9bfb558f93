package nn

import (
	"context"
	"fmt"
	"math"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/vk"
)

// ProductKeyExperts are Doge's cross-domain mixture of experts (DogeCDMoE) without its
// shared MLP: a router scores sqrt(experts) x-keys and y-keys, expert a*K + b scores
// x[a] + y[b], each token takes the Top best experts, softmax-weighted, and each expert
// is a pair of vectors (down: a dot product with the token, through SiLU; up: added
// with that weight).
type ProductKeyExperts struct {
	Router        *Linear // [2K, hidden], no bias
	Down, Up      *Tensor // [experts, hidden]
	Experts, Keys int
	Top           int
	NormTopK      bool
}

// NewProductKeyExperts uploads the router [2K, hidden] and the expert tables
// [experts, hidden]; K = floor(sqrt(experts)).
func (n *Device) NewProductKeyExperts(ctx context.Context, router, down, up *Array, top int, normTopK bool) (*ProductKeyExperts, error) {
	if down == nil || len(down.Shape) != 2 {
		return nil, fmt.Errorf("nn: NewProductKeyExperts: down_embed must be [experts, hidden]")
	}
	experts, hidden := down.Shape[0], down.Shape[1]
	keys := int(math.Floor(math.Sqrt(float64(experts))))
	if err := down.check(experts, hidden); err != nil {
		return nil, err
	}
	if err := up.check(experts, hidden); err != nil {
		return nil, err
	}
	if err := router.check(2*keys, hidden); err != nil {
		return nil, err
	}
	if keys > 256 || top < 1 || top > 256 || top > keys*keys {
		return nil, fmt.Errorf("nn: NewProductKeyExperts: %d keys (at most 256) and top %d (1 to 256, at most keys^2)", keys, top)
	}
	if down.DType != up.DType {
		return nil, fmt.Errorf("nn: NewProductKeyExperts: down_embed is %v, up_embed %v", down.DType, up.DType)
	}
	e := &ProductKeyExperts{Experts: experts, Keys: keys, Top: top, NormTopK: normTopK}
	var err error
	if e.Router, err = n.NewLinear(ctx, router, nil); err != nil {
		return nil, err
	}
	if e.Down, err = n.upload(ctx, down.DType, experts, hidden, padWords(down.Data)); err != nil {
		e.Close()
		return nil, err
	}
	if e.Up, err = n.upload(ctx, up.DType, experts, hidden, padWords(up.Data)); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Close frees the experts.
func (e *ProductKeyExperts) Close() error {
	if e.Router != nil {
		e.Router.Close()
	}
	for _, t := range []*Tensor{e.Down, e.Up} {
		if t != nil {
			t.Close()
		}
	}
	return nil
}

// ExpertBuffers hold the routing of up to t tokens.
type ExpertBuffers struct {
	Router, Idx, W, Scratch *Tensor
}

// NewBuffers allocates the routing of up to t tokens.
func (e *ProductKeyExperts) NewBuffers(n *Device, t int) (*ExpertBuffers, error) {
	b := &ExpertBuffers{}
	var err error
	for _, x := range []struct {
		dst        **Tensor
		rows, cols int
	}{{&b.Router, t, 2 * e.Keys}, {&b.Idx, t, e.Top}, {&b.W, t, e.Top}, {&b.Scratch, 1, max(1, e.Router.ScratchElems(t))}} {
		if *x.dst, err = n.NewTensor(dma.Float32, x.rows, x.cols); err != nil {
			b.Close()
			return nil, err
		}
	}
	return b, nil
}

// Close frees the buffers.
func (b *ExpertBuffers) Close() error {
	for _, t := range []*Tensor{b.Router, b.Idx, b.W, b.Scratch} {
		if t != nil {
			t.Close()
		}
	}
	return nil
}

// RecordRouter records the router's scores of rows [r0, r0+x.Rows) of the pass (x
// float32 [rows, hidden]). A pass routes all its tokens together (RecordRoute), as
// transformers does: its reading of the scores depends on how many there are.
func (e *ProductKeyExperts) RecordRouter(r *vk.Recorder, b *ExpertBuffers, r0 int, x *Tensor) error {
	rows, err := b.Router.Slice(r0, r0+x.Rows)
	if err != nil {
		return err
	}
	return e.Router.Record(r, rows, x, b.Scratch)
}

// RecordRoute records the routing of the pass's first t tokens (all scored).
func (e *ProductKeyExperts) RecordRoute(n *Device, r *vk.Recorder, b *ExpertBuffers, t int) error {
	if t < 1 || t > b.Router.Rows {
		return fmt.Errorf("nn: ProductKeyExperts: route %d tokens (buffers of %d)", t, b.Router.Rows)
	}
	p, err := n.pipeline("nn_experts_route", 3, 16)
	if err != nil {
		return err
	}
	return dispatch(r, p, rowGrid(t), push(t, e.Keys, e.Top, e.NormTopK), b.Router.binding(), b.Idx.binding(), b.W.binding())
}

// RecordApply records y[i] += the experts' output for token r0+i of the pass, h its
// input (float32 [rows, hidden]).
func (e *ProductKeyExperts) RecordApply(n *Device, r *vk.Recorder, b *ExpertBuffers, r0 int, y, h *Tensor) error {
	if err := checkF32("ProductKeyExperts", y, h); err != nil {
		return err
	}
	if err := sameShape("ProductKeyExperts", y, h); err != nil {
		return err
	}
	if h.Cols != e.Down.Cols {
		return fmt.Errorf("nn: ProductKeyExperts: rows of %d for experts of %d", h.Cols, e.Down.Cols)
	}
	idx, err := b.Idx.Slice(r0, r0+h.Rows)
	if err != nil {
		return err
	}
	w, _ := b.W.Slice(r0, r0+h.Rows)
	p, err := n.pipeline("nn_experts_apply", 6, 16, dtypeCode(e.Down.DType))
	if err != nil {
		return err
	}
	return dispatch(r, p, rowGrid(h.Rows), push(h.Rows, h.Cols, e.Top, e.Experts),
		h.binding(), idx.binding(), w.binding(), e.Down.binding(), e.Up.binding(), y.binding())
}
