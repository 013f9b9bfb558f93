package nn

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/vk"
)

// Vector is a constant per-column vector of a layer (a norm's or a gate's weight),
// in its checkpoint dtype.
type Vector struct {
	t *Tensor
	N int
}

// NewVector uploads a [n] array.
func (n *Device) NewVector(ctx context.Context, a *Array) (*Vector, error) {
	if a == nil || len(a.Shape) != 1 {
		return nil, fmt.Errorf("nn: NewVector: want a vector")
	}
	if err := a.check(a.Shape[0]); err != nil {
		return nil, err
	}
	t, err := n.upload(ctx, a.DType, 1, a.Shape[0], padWords(a.Data))
	if err != nil {
		return nil, fmt.Errorf("nn: NewVector %s: %w", a.Name, err)
	}
	return &Vector{t: t, N: a.Shape[0]}, nil
}

// Close frees the vector.
func (v *Vector) Close() error { return v.t.Close() }

func checkF32(op string, ts ...*Tensor) error {
	for _, t := range ts {
		if t.DType != dma.Float32 {
			return fmt.Errorf("nn: %s: tensor [%d %d] is %v, want float32", op, t.Rows, t.Cols, t.DType)
		}
	}
	return nil
}

func sameShape(op string, a, b *Tensor) error {
	if a.Rows != b.Rows || a.Cols != b.Cols {
		return fmt.Errorf("nn: %s: shapes [%d %d] and [%d %d] differ", op, a.Rows, a.Cols, b.Rows, b.Cols)
	}
	return nil
}

// rowGrid spreads rows workgroups over x and y (each at most 65535).
func rowGrid(rows int) [3]uint32 {
	if rows <= 65535 {
		return [3]uint32{uint32(rows), 1, 1}
	}
	return [3]uint32{65535, groups(rows, 65535), 1}
}

// RecordRMSNorm records y = weight * x / sqrt(mean(x^2) + eps) over each row (float32).
func (n *Device) RecordRMSNorm(r *vk.Recorder, y, x *Tensor, weight *Vector, eps float32) error {
	if err := checkF32("RMSNorm", y, x); err != nil {
		return err
	}
	if err := sameShape("RMSNorm", y, x); err != nil {
		return err
	}
	if weight.N != x.Cols {
		return fmt.Errorf("nn: RMSNorm: weight of %d for rows of %d", weight.N, x.Cols)
	}
	p, err := n.pipeline("nn_rmsnorm", 3, 12, dtypeCode(weight.t.DType))
	if err != nil {
		return err
	}
	return dispatch(r, p, rowGrid(x.Rows), push(x.Rows, x.Cols, eps), x.binding(), weight.t.binding(), y.binding())
}

// Embedding is a lookup table [vocab, dim].
type Embedding struct {
	t          *Tensor
	Vocab, Dim int
}

// NewEmbedding uploads a [vocab, dim] table.
func (n *Device) NewEmbedding(ctx context.Context, a *Array) (*Embedding, error) {
	if a == nil || len(a.Shape) != 2 {
		return nil, fmt.Errorf("nn: NewEmbedding: want a [vocab, dim] table")
	}
	if err := a.check(a.Shape...); err != nil {
		return nil, err
	}
	t, err := n.upload(ctx, a.DType, a.Shape[0], a.Shape[1], padWords(a.Data))
	if err != nil {
		return nil, fmt.Errorf("nn: NewEmbedding %s: %w", a.Name, err)
	}
	return &Embedding{t: t, Vocab: a.Shape[0], Dim: a.Shape[1]}, nil
}

// Close frees the table.
func (e *Embedding) Close() error { return e.t.Close() }

// Table is the table as a tensor (for a tied output projection).
func (e *Embedding) Table() *Tensor { return e.t }

// Record records y[t] = table[ids[t]]: ids a uint32 [T, 1] tensor (float32 dtype slot,
// uint32 bits; see UploadIDs), y [T, dim] float32.
func (e *Embedding) Record(n *Device, r *vk.Recorder, y, ids *Tensor) error {
	if err := checkF32("Embedding", y); err != nil {
		return err
	}
	if y.Cols != e.Dim || ids.Rows != y.Rows || ids.Cols != 1 {
		return fmt.Errorf("nn: Embedding: %d ids into [%d %d] for a table of dim %d", ids.Rows, y.Rows, y.Cols, e.Dim)
	}
	p, err := n.pipeline("nn_embed", 3, 12, dtypeCode(e.t.DType))
	if err != nil {
		return err
	}
	if y.Rows > 65535 {
		return fmt.Errorf("nn: Embedding: %d rows at once (at most 65535)", y.Rows)
	}
	return dispatch(r, p, [3]uint32{groups(e.Dim, 256), uint32(y.Rows), 1}, push(y.Rows, e.Dim, e.Vocab), ids.binding(), e.t.binding(), y.binding())
}

// RoPETable is the cos/sin table of rows of positions: [T][D/2] pairs (a float32 [T, D]
// tensor).
func (n *Device) NewRoPETable(rows, headDim int) (*Tensor, error) {
	return n.NewTensor(dma.Float32, rows, headDim)
}

// RecordNormRoPE records, for each row t and head h of x [T, heads*D] (float32), the
// per-head RMSNorm with weight (nil: no norm) then the rotary embedding with cs (a
// table from RoPE.Table, [T, D]) into out [T, heads*D] of any dtype.
func (n *Device) RecordNormRoPE(r *vk.Recorder, out, x *Tensor, heads, headDim int, weight *Vector, eps float32, cs *Tensor) error {
	return barrierAfter(r)(n.normRoPEPass(out, x, heads, headDim, weight, eps, cs))
}

// barrierAfter runs a pass and records a barrier after it.
func barrierAfter(r *vk.Recorder) func(func(*vk.Recorder) error, error) error {
	return func(p func(*vk.Recorder) error, err error) error {
		if err != nil {
			return err
		}
		if err := p(r); err != nil {
			return err
		}
		r.Barrier()
		return nil
	}
}

// RecordPasses records independent passes side by side, then one barrier.
func RecordPasses(r *vk.Recorder, passes ...func(*vk.Recorder) error) error {
	for _, p := range passes {
		if err := p(r); err != nil {
			return err
		}
	}
	r.Barrier()
	return nil
}

// NormRoPEPass is RecordNormRoPE as a pass for RecordPasses (no barrier after it).
func (n *Device) NormRoPEPass(out, x *Tensor, heads, headDim int, weight *Vector, eps float32, cs *Tensor) (func(*vk.Recorder) error, error) {
	return n.normRoPEPass(out, x, heads, headDim, weight, eps, cs)
}

func (n *Device) normRoPEPass(out, x *Tensor, heads, headDim int, weight *Vector, eps float32, cs *Tensor) (func(*vk.Recorder) error, error) {
	if err := checkF32("NormRoPE", x, cs); err != nil {
		return nil, err
	}
	if err := sameShape("NormRoPE", out, x); err != nil {
		return nil, err
	}
	if headDim%2 != 0 || headDim > 256 || x.Cols != heads*headDim {
		return nil, fmt.Errorf("nn: NormRoPE: rows of %d for %d heads of %d (even, at most 256)", x.Cols, heads, headDim)
	}
	if cs.Rows < x.Rows || cs.Cols != headDim {
		return nil, fmt.Errorf("nn: NormRoPE: table [%d %d] for %d rows of head dim %d", cs.Rows, cs.Cols, x.Rows, headDim)
	}
	w, hasNorm := n.dummy, weight != nil
	wt := dma.Float32
	wb := vk.Bind(w)
	if hasNorm {
		if weight.N != headDim {
			return nil, fmt.Errorf("nn: NormRoPE: norm weight of %d for head dim %d", weight.N, headDim)
		}
		wb, wt = weight.t.binding(), weight.t.DType
	}
	if x.Rows > 65535 || heads > 65535 {
		return nil, fmt.Errorf("nn: NormRoPE: %d rows at once (at most 65535)", x.Rows)
	}
	p, err := n.pipeline("nn_rope", 4, 20, dtypeCode(wt), dtypeCode(out.DType))
	if err != nil {
		return nil, err
	}
	return func(r *vk.Recorder) error {
		return r.Dispatch(p, [3]uint32{uint32(x.Rows), uint32(heads), 1}, push(x.Rows, heads, headDim, hasNorm, eps),
			x.binding(), wb, cs.binding(), out.binding())
	}, nil
}

// RecordSiLUMul records y = silu(gate) * up (float32), the gated MLP's activation.
func (n *Device) RecordSiLUMul(r *vk.Recorder, y, gate, up *Tensor) error {
	if err := checkF32("SiLUMul", y, gate, up); err != nil {
		return err
	}
	if err := sameShape("SiLUMul", y, gate); err != nil {
		return err
	}
	if err := sameShape("SiLUMul", up, gate); err != nil {
		return err
	}
	return n.eltwise(r, "nn_eltwise_silu_mul", y, gate, up, vk.Bind(n.dummy), dma.Float32, gate.Cols)
}

// RecordResidual records y = g * residual + x (g per column, any dtype; float32
// tensors), Doge's gated residual; y may be x or residual.
func (n *Device) RecordResidual(r *vk.Recorder, y, x, residual *Tensor, g *Vector) error {
	if err := checkF32("Residual", y, x, residual); err != nil {
		return err
	}
	if err := sameShape("Residual", y, x); err != nil {
		return err
	}
	if err := sameShape("Residual", residual, x); err != nil {
		return err
	}
	if g.N != x.Cols {
		return fmt.Errorf("nn: Residual: gate of %d for rows of %d", g.N, x.Cols)
	}
	return n.eltwise(r, "nn_eltwise_residual", y, x, residual, g.t.binding(), g.t.DType, x.Cols)
}

// RecordResidualNorm records x = g * x + a (Doge's gated residual, in place) and then
// y = weight * x / sqrt(mean(x^2) + eps) over each row, in one pass: the bits of
// RecordResidual then RecordRMSNorm.
func (n *Device) RecordResidualNorm(r *vk.Recorder, x, a *Tensor, g *Vector, y *Tensor, weight *Vector, eps float32) error {
	if err := checkF32("ResidualNorm", x, a, y); err != nil {
		return err
	}
	if err := sameShape("ResidualNorm", x, a); err != nil {
		return err
	}
	if err := sameShape("ResidualNorm", x, y); err != nil {
		return err
	}
	return n.residualNorm(r, x, a, 1, g, y, weight, eps)
}

// residualNorm is RecordResidualNorm with a the sum of slices [rows, cols] arrays one
// after another.
func (n *Device) residualNorm(r *vk.Recorder, x, a *Tensor, slices int, g *Vector, y *Tensor, weight *Vector, eps float32) error {
	if g.N != x.Cols || weight.N != x.Cols {
		return fmt.Errorf("nn: ResidualNorm: gate of %d and weight of %d for rows of %d", g.N, weight.N, x.Cols)
	}
	p, err := n.pipeline("nn_residual_norm", 5, 16, dtypeCode(g.t.DType), dtypeCode(weight.t.DType))
	if err != nil {
		return err
	}
	ab := a.binding()
	ab.Size *= int64(slices)
	return dispatch(r, p, rowGrid(x.Rows), push(x.Rows, x.Cols, eps, slices), x.binding(), ab, g.t.binding(), weight.t.binding(), y.binding())
}

// RecordCast records y = x, x float32, y of any dtype (rounded to nearest even).
func (n *Device) RecordCast(r *vk.Recorder, y, x *Tensor) error {
	if err := checkF32("Cast", x); err != nil {
		return err
	}
	if y.Elems() != x.Elems() {
		return fmt.Errorf("nn: Cast: %d elements into %d", x.Elems(), y.Elems())
	}
	return n.eltwise(r, "nn_eltwise_cast", y, x, x, vk.Bind(n.dummy), dma.Float32, x.Cols)
}

func (n *Device) eltwise(r *vk.Recorder, name string, y, a, b *Tensor, g vk.Binding, gt dma.DType, cols int) error {
	pass, err := n.eltwisePass(name, y, a, b, g, gt, cols)
	if err != nil {
		return err
	}
	if err := pass(r); err != nil {
		return err
	}
	r.Barrier()
	return nil
}

// eltwisePass is eltwise's dispatch without the barrier after it.
func (n *Device) eltwisePass(name string, y, a, b *Tensor, g vk.Binding, gt dma.DType, cols int) (func(*vk.Recorder) error, error) {
	p, err := n.pipeline(name, 4, 8, dtypeCode(gt), dtypeCode(y.DType))
	if err != nil {
		return nil, err
	}
	elems := a.Elems()
	return func(r *vk.Recorder) error {
		return r.Dispatch(p, rowGrid(int(groups((elems+1)/2, 256))), push(elems, cols), a.binding(), b.binding(), g, y.binding())
	}, nil
}

// castPass is RecordCast's dispatch without the barrier after it.
func (n *Device) castPass(y, x *Tensor) (func(*vk.Recorder) error, error) {
	if err := checkF32("Cast", x); err != nil {
		return nil, err
	}
	if y.Elems() != x.Elems() {
		return nil, fmt.Errorf("nn: Cast: %d elements into %d", x.Elems(), y.Elems())
	}
	return n.eltwisePass("nn_eltwise_cast", y, x, x, vk.Bind(n.dummy), dma.Float32, x.Cols)
}

// RecordDynamicWeights records DMA's dynamic weights from dt ([T, Hb] float32, the
// value projection of each key's flattened values, bias included):
// w[0, h, off+t] = exp(A[h] * softplus(dt[t, h])), A float32 [Hb] (a [1, Hb] tensor).
func (n *Device) RecordDynamicWeights(r *vk.Recorder, w *dma.Weights, off int, dt, a *Tensor) error {
	return n.recordDynamicWeightsRows(r, w, off, dt, 0, dt.Rows, a)
}

// recordDynamicWeightsRows is RecordDynamicWeights of rows [r0, r0+rows) of dt.
func (n *Device) recordDynamicWeightsRows(r *vk.Recorder, w *dma.Weights, off int, dt *Tensor, r0, rows int, a *Tensor) error {
	return barrierAfter(r)(n.dynamicWeightsPass(w, off, dt, r0, rows, a))
}

func (n *Device) dynamicWeightsPass(w *dma.Weights, off int, dt *Tensor, r0, rows int, a *Tensor) (func(*vk.Recorder) error, error) {
	if err := checkF32("DynamicWeights", dt, a); err != nil {
		return nil, err
	}
	if w.B != 1 || w.Hb != dt.Cols || a.Elems() != dt.Cols || off < 0 || off+rows > w.Lk || r0 < 0 || r0+rows > dt.Rows {
		return nil, fmt.Errorf("nn: DynamicWeights: rows [%d, %d) of dt [%d %d], A of %d into weights [%d %d %d] at key %d", r0, r0+rows, dt.Rows, dt.Cols, a.Elems(), w.B, w.Hb, w.Lk, off)
	}
	p, err := n.pipeline("nn_dynweights", 3, 20)
	if err != nil {
		return nil, err
	}
	return func(r *vk.Recorder) error {
		return r.Dispatch(p, [3]uint32{groups(rows*dt.Cols, 256), 1, 1}, push(rows, dt.Cols, w.Lk, off, r0), dt.binding(), a.binding(), vk.Bind(w.Buffer()))
	}, nil
}

// NewIDs allocates a [n, 1] tensor of token ids (uint32 bits in a float32 tensor).
func (n *Device) NewIDs(rows int) (*Tensor, error) { return n.NewTensor(dma.Float32, rows, 1) }

// UploadIDs writes token ids into an ids tensor.
func (t *Tensor) UploadIDs(ctx context.Context, ids []int) error {
	if len(ids) != t.Elems() {
		return fmt.Errorf("nn: UploadIDs: %d ids for %d slots", len(ids), t.Elems())
	}
	raw := make([]byte, 4*len(ids))
	for i, id := range ids {
		if id < 0 || id > math.MaxUint32 {
			return fmt.Errorf("nn: UploadIDs: id %d at %d", id, i)
		}
		binary.LittleEndian.PutUint32(raw[4*i:], uint32(id))
	}
	return t.buf.Upload(ctx, t.off, raw)
}
