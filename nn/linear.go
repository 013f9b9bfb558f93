package nn

import (
	"context"
	"fmt"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/internal/matmul"
	"github.com/dmavk/dmavk/vk"
)

// Linear is y = x W^T + b, W [Out, In] as in PyTorch's nn.Linear, kept on the device
// transposed ([In, Out]) in its checkpoint dtype; the bias, if any, in float32.
type Linear struct {
	n       *Device
	wt      *Tensor
	bias    *Tensor
	In, Out int
	DType   dma.DType
	// HalfInputs lets products of many rows run on tensor cores (fp16 weights, no
	// bias, a device with cooperative matrices): x is rounded to fp16 first. Off, every
	// product is float32 arithmetic on x as given.
	HalfInputs bool
}

// gemvRows is the most rows the split-K product takes (decode); more go to the tiled one.
const gemvRows = 4

// gemvSlice is the K rows of each split-K workgroup.
const gemvSlice = 128

// NewLinear uploads a linear layer: weight [out, in], bias [out] or nil.
func (n *Device) NewLinear(ctx context.Context, weight, bias *Array) (*Linear, error) {
	if weight == nil || len(weight.Shape) != 2 {
		return nil, fmt.Errorf("nn: NewLinear: weight must be [out, in]")
	}
	out, in := weight.Shape[0], weight.Shape[1]
	if err := weight.check(out, in); err != nil {
		return nil, err
	}
	l := &Linear{n: n, In: in, Out: out, DType: weight.DType}
	var err error
	if l.wt, err = n.upload(ctx, weight.DType, in, out, padWords(transpose(weight.Data, out, in, weight.DType.Size()))); err != nil {
		return nil, fmt.Errorf("nn: NewLinear %s: %w", weight.Name, err)
	}
	if bias != nil {
		if err := bias.check(out); err != nil {
			l.Close()
			return nil, err
		}
		if l.bias, err = n.upload(ctx, dma.Float32, 1, out, Encode(dma.Float32, bias.Floats())); err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// Close frees the layer.
func (l *Linear) Close() error {
	if l.wt != nil {
		l.wt.Close()
	}
	if l.bias != nil {
		l.bias.Close()
	}
	return nil
}

// ScratchElems is the float32 scratch Record needs for any number of rows up to m: the
// split-K partial sums (4 rows or fewer) or the 16-bit copy of x the tensor-core product
// reads; 0 when it needs none. (Up to m, not m: a long input's last chunk may be a few
// rows, whose product needs scratch that m rows' does not.)
func (l *Linear) ScratchElems(m int) int {
	return max(l.scratchElems(min(m, gemvRows)), l.scratchElems(m))
}

func (l *Linear) scratchElems(m int) int {
	switch {
	case m <= gemvRows:
		return int(groups(l.In, gemvSlice)) * m * l.Out
	case l.tensorCores():
		return (m*l.In + 1) / 2
	}
	return 0
}

// TensorCores reports whether products of more than 4 rows run on the device's tensor
// cores (HalfInputs, fp16 weights, no bias, a device with cooperative matrices).
func (l *Linear) TensorCores() bool { return l.tensorCores() }

func (l *Linear) tensorCores() bool {
	return l.HalfInputs && l.n.mm != nil && l.DType == dma.Float16 && l.bias == nil
}

func (l *Linear) mmPath() matmul.Path {
	if l.n.mm.Has(matmul.CoopMat2) {
		return matmul.CoopMat2
	}
	return matmul.CoopMat
}

// Record records y = x W^T + b: x [m, In] of any dtype, y [m, Out] float32, scratch of
// ScratchElems(m) float32 elements (nil when that is 0). y must not overlap x.
func (l *Linear) Record(r *vk.Recorder, y, x, scratch *Tensor) error {
	return RecordLinears(r, scratch, LinearJob{l, y, x})
}

// LinearJob is one product of RecordLinears: Y = X W^T + b.
type LinearJob struct {
	L    *Linear
	Y, X *Tensor
}

// scratchAlign is the float32 elements each job's scratch is rounded up to, so that
// every job's part starts on a storage-buffer offset the devices allow (256 bytes).
const scratchAlign = 64

// LinearsScratchElems is the float32 scratch RecordLinears needs for m rows of each of
// the layers.
func LinearsScratchElems(m int, ls ...*Linear) int {
	n := 0
	for _, l := range ls {
		n += (l.ScratchElems(m) + scratchAlign - 1) / scratchAlign * scratchAlign
	}
	return n
}

// RecordLinears records products that do not depend on one another side by side: their
// passes share barriers (one after each pass of all of them, instead of one after each
// pass of each), which matters when each is small (decode). Each gets its own part of
// scratch (LinearsScratchElems); no Y may overlap any X.
func RecordLinears(r *vk.Recorder, scratch *Tensor, jobs ...LinearJob) error {
	var phases [][]func(*vk.Recorder) error
	off := int64(0)
	for _, j := range jobs {
		need := j.L.ScratchElems(j.X.Rows)
		var part *Tensor
		if need > 0 {
			if scratch == nil || scratch.off%4 != 0 || (off+int64(need))*4 > scratch.bytes() {
				return fmt.Errorf("nn: Linear.Record: %d rows of %d layers need %d float32 elements of scratch", j.X.Rows, len(jobs), LinearsScratchElems(j.X.Rows, linearsOf(jobs)...))
			}
			part = &Tensor{buf: scratch.buf, off: scratch.off + off*4, DType: dma.Float32, Rows: 1, Cols: need}
			off += int64((need + scratchAlign - 1) / scratchAlign * scratchAlign)
		}
		ps, err := j.L.passes(j.Y, j.X, part)
		if err != nil {
			return err
		}
		for i, p := range ps {
			if i == len(phases) {
				phases = append(phases, nil)
			}
			phases[i] = append(phases[i], p)
		}
	}
	for _, ph := range phases {
		for _, p := range ph {
			if err := p(r); err != nil {
				return err
			}
		}
		r.Barrier()
	}
	return nil
}

func linearsOf(jobs []LinearJob) []*Linear {
	ls := make([]*Linear, len(jobs))
	for i, j := range jobs {
		ls[i] = j.L
	}
	return ls
}

// passes are the dispatches of y = x W^T + b, in order; each needs the ones before it
// done (a barrier between).
func (l *Linear) passes(y, x, scratch *Tensor) ([]func(*vk.Recorder) error, error) {
	m := x.Rows
	if x.Cols != l.In || y.Cols != l.Out || y.Rows != m || y.DType != dma.Float32 {
		return nil, fmt.Errorf("nn: Linear.Record: x [%d %d] %v, y [%d %d] %v for a %dx%d layer (y float32)", x.Rows, x.Cols, x.DType, y.Rows, y.Cols, y.DType, l.In, l.Out)
	}
	bias, hasBias := vk.Bind(l.n.dummy), false
	if l.bias != nil {
		bias, hasBias = l.bias.binding(), true
	}
	xt, wt := dtypeCode(x.DType), dtypeCode(l.DType)
	switch {
	case m <= gemvRows:
		slices := int(groups(l.In, gemvSlice))
		partial, part, err := l.partialPass(x, nil, scratch)
		if err != nil {
			return nil, err
		}
		red, err := l.n.pipeline("nn_gemv_reduce", 3, 16)
		if err != nil {
			return nil, err
		}
		return []func(*vk.Recorder) error{
			partial,
			func(r *vk.Recorder) error {
				return r.Dispatch(red, [3]uint32{groups(m*l.Out, 256), 1, 1}, push(m, l.Out, slices, hasBias), part, bias, y.binding())
			},
		}, nil
	case l.tensorCores() && (x.DType == dma.Float32 || x.DType == dma.Float16):
		var out []func(*vk.Recorder) error
		x16 := x
		if x.DType != dma.Float16 {
			x16 = &Tensor{buf: scratch.buf, off: scratch.off, DType: dma.Float16, Rows: m, Cols: l.In}
			cast, err := l.n.castPass(x16, x)
			if err != nil {
				return nil, err
			}
			out = append(out, cast)
		}
		return append(out, func(r *vk.Recorder) error {
			if err := l.n.mm.RecordBound(r, l.mmPath(), true, x16.binding(), l.wt.binding(), y.binding(), m, l.Out, l.In); err != nil {
				return fmt.Errorf("nn: Linear.Record: %w", err)
			}
			return nil
		}), nil
	}
	p, err := l.n.pipeline("nn_linear", 4, 16, xt, wt)
	if err != nil {
		return nil, err
	}
	return []func(*vk.Recorder) error{func(r *vk.Recorder) error {
		return r.Dispatch(p, [3]uint32{groups(l.Out, 64), groups(m, 64), 1}, push(m, l.Out, l.In, hasBias), x.binding(), l.wt.binding(), bias, y.binding())
	}}, nil
}

// partialPass is the split-K pass of x W^T (x at most gemvRows rows) into scratch:
// the slices' partial sums [slices][m][Out]. With u, x is the gated MLP's gate (float32)
// and the product's input is silu(x) * u.
func (l *Linear) partialPass(x, u, scratch *Tensor) (func(*vk.Recorder) error, vk.Binding, error) {
	m := x.Rows
	slices := int(groups(l.In, gemvSlice))
	var none vk.Binding
	if m > gemvRows || x.Cols != l.In {
		return nil, none, fmt.Errorf("nn: Linear: split-K product of [%d %d] for a %dx%d layer (at most %d rows)", x.Rows, x.Cols, l.In, l.Out, gemvRows)
	}
	if scratch == nil || scratch.bytes() < int64(slices*m*l.Out)*4 {
		return nil, none, fmt.Errorf("nn: Linear: %d rows need %d float32 elements of scratch", m, slices*m*l.Out)
	}
	part := vk.Binding{Buf: scratch.buf, Offset: scratch.off, Size: int64(slices*m*l.Out) * 4}
	name, bindings := "nn_gemv_plain", []vk.Binding{x.binding(), l.wt.binding(), part}
	if u != nil {
		if err := checkF32("gated product", x, u); err != nil {
			return nil, none, err
		}
		if err := sameShape("gated product", x, u); err != nil {
			return nil, none, err
		}
		name, bindings = "nn_gemv_gated", append(bindings, u.binding())
	}
	p, err := l.n.pipeline(name, len(bindings), 16, dtypeCode(x.DType), dtypeCode(l.DType))
	if err != nil {
		return nil, none, err
	}
	return func(r *vk.Recorder) error {
		return r.Dispatch(p, [3]uint32{groups(l.Out, 128), uint32(slices), 1}, push(m, l.Out, l.In, gemvSlice), bindings...)
	}, part, nil
}

// FusesResidual reports whether RecordResidualNorm of m rows takes one pass fewer than
// Record then Device.RecordResidualNorm: at most 4 rows, no bias.
func (l *Linear) FusesResidual(m int) bool { return m <= gemvRows && l.bias == nil }

// RecordResidualNorm records x = g * x + in W^T (Doge's gated residual over the
// layer's output) and then y = weight * x / sqrt(mean(x^2) + eps), the product's
// partial sums added by the residual pass itself (FusesResidual must hold; scratch of
// ScratchElems(rows)): the bits of Record, then Device.RecordResidualNorm.
func (l *Linear) RecordResidualNorm(r *vk.Recorder, x, in *Tensor, g *Vector, y *Tensor, weight *Vector, eps float32, scratch *Tensor) error {
	return l.recordResidualNorm(r, x, in, nil, g, y, weight, eps, scratch)
}

func (l *Linear) recordResidualNorm(r *vk.Recorder, x, in, u *Tensor, g *Vector, y *Tensor, weight *Vector, eps float32, scratch *Tensor) error {
	if !l.FusesResidual(in.Rows) {
		return fmt.Errorf("nn: Linear.RecordResidualNorm: %d rows (at most %d), bias %v", in.Rows, gemvRows, l.bias != nil)
	}
	if x.Rows != in.Rows || x.Cols != l.Out {
		return fmt.Errorf("nn: Linear.RecordResidualNorm: x [%d %d] for %d rows of a %dx%d layer", x.Rows, x.Cols, in.Rows, l.In, l.Out)
	}
	partial, part, err := l.partialPass(in, u, scratch)
	if err != nil {
		return err
	}
	if err := partial(r); err != nil {
		return err
	}
	r.Barrier()
	a := &Tensor{buf: part.Buf, off: part.Offset, DType: dma.Float32, Rows: x.Rows, Cols: x.Cols}
	return l.n.residualNorm(r, x, a, int(groups(l.In, gemvSlice)), g, y, weight, eps)
}
