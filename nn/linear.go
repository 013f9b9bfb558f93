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

// ScratchElems is the float32 scratch Record needs for m rows: the split-K partial sums
// (m <= 4) or the 16-bit copy of x the tensor-core product reads; 0 when it needs none.
func (l *Linear) ScratchElems(m int) int {
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
	m := x.Rows
	if x.Cols != l.In || y.Cols != l.Out || y.Rows != m || y.DType != dma.Float32 {
		return fmt.Errorf("nn: Linear.Record: x [%d %d] %v, y [%d %d] %v for a %dx%d layer (y float32)", x.Rows, x.Cols, x.DType, y.Rows, y.Cols, y.DType, l.In, l.Out)
	}
	need := l.ScratchElems(m)
	if need > 0 && (scratch == nil || scratch.Elems()*scratch.DType.Size() < need*4) {
		return fmt.Errorf("nn: Linear.Record: %d rows need %d float32 elements of scratch", m, need)
	}
	bias, hasBias := vk.Bind(l.n.dummy), false
	if l.bias != nil {
		bias, hasBias = l.bias.binding(), true
	}
	xt, wt := dtypeCode(x.DType), dtypeCode(l.DType)
	switch {
	case m <= gemvRows:
		slices := int(groups(l.In, gemvSlice))
		p, err := l.n.pipeline("nn_gemv", 3, 16, xt, wt)
		if err != nil {
			return err
		}
		part := vk.Binding{Buf: scratch.buf, Offset: scratch.off, Size: int64(slices*m*l.Out) * 4}
		if err := dispatch(r, p, [3]uint32{groups(l.Out, 128), uint32(slices), 1}, push(m, l.Out, l.In, gemvSlice), x.binding(), l.wt.binding(), part); err != nil {
			return err
		}
		red, err := l.n.pipeline("nn_gemv_reduce", 3, 16)
		if err != nil {
			return err
		}
		return dispatch(r, red, [3]uint32{groups(m*l.Out, 256), 1, 1}, push(m, l.Out, slices, hasBias), part, bias, y.binding())
	case l.tensorCores() && (x.DType == dma.Float32 || x.DType == dma.Float16):
		x16 := x
		if x.DType != dma.Float16 {
			x16 = &Tensor{buf: scratch.buf, off: scratch.off, DType: dma.Float16, Rows: m, Cols: l.In}
			if err := l.n.RecordCast(r, x16, x); err != nil {
				return err
			}
		}
		if err := l.n.mm.RecordBound(r, l.mmPath(), true, x16.binding(), l.wt.binding(), y.binding(), m, l.Out, l.In); err != nil {
			return fmt.Errorf("nn: Linear.Record: %w", err)
		}
		r.Barrier()
		return nil
	}
	p, err := l.n.pipeline("nn_linear", 4, 16, xt, wt)
	if err != nil {
		return err
	}
	return dispatch(r, p, [3]uint32{groups(l.Out, 64), groups(m, 64), 1}, push(m, l.Out, l.In, hasBias), x.binding(), l.wt.binding(), bias, y.binding())
}
