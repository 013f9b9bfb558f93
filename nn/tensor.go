package nn

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/internal/bf16"
	"github.com/dmavk/dmavk/internal/f16"
	"github.com/dmavk/dmavk/vk"
)

// Tensor is a row-major [Rows, Cols] array on the device, or a view of part of one
// (Rows rows from row Row0 of a larger tensor, or of a dma.Tensor seen as rows of
// H*D elements). 16-bit dtypes hold two elements to a 32-bit word.
type Tensor struct {
	buf        *vk.Buffer
	DType      dma.DType
	Rows, Cols int
	off        int64 // bytes from the buffer's start
	owned      bool
}

// NewTensor allocates a tensor (contents undefined).
func (n *Device) NewTensor(dt dma.DType, rows, cols int) (*Tensor, error) {
	if dt != dma.Float32 && dt != dma.Float16 && dt != dma.BFloat16 {
		return nil, fmt.Errorf("nn: NewTensor: unsupported dtype %v", dt)
	}
	if rows < 1 || cols < 1 {
		return nil, fmt.Errorf("nn: NewTensor: shape [%d %d]: both dimensions must be at least 1", rows, cols)
	}
	elems := int64(rows) * int64(cols)
	if elems >= math.MaxUint32 {
		return nil, fmt.Errorf("nn: NewTensor: shape [%d %d] has %d elements, over 32-bit indices", rows, cols, elems)
	}
	buf, err := n.vd.NewBuffer(max((elems*int64(dt.Size())+3)&^3, 4))
	if err != nil {
		return nil, fmt.Errorf("nn: NewTensor [%d %d] %v: %w", rows, cols, dt, err)
	}
	return &Tensor{buf: buf, DType: dt, Rows: rows, Cols: cols, owned: true}, nil
}

// ViewOf is the dma tensor t ([B, L, H, D] BLHD) seen as B*L rows of H*D elements,
// sharing its memory (closing the view does nothing).
func ViewOf(t *dma.Tensor) (*Tensor, error) {
	if t.Layout() != dma.BLHD {
		return nil, fmt.Errorf("nn: ViewOf: a %v tensor (rows need BLHD)", t.Layout())
	}
	s := t.Shape()
	return &Tensor{buf: t.Buffer(), DType: t.DType(), Rows: s.B * s.L, Cols: s.H * s.D}, nil
}

// Slice is a view of rows [a, b). For 16-bit dtypes a*Cols must be even and the offset
// a multiple of the device's storage-buffer alignment when a kernel binds it.
func (t *Tensor) Slice(a, b int) (*Tensor, error) {
	if a < 0 || b > t.Rows || a >= b {
		return nil, fmt.Errorf("nn: Slice [%d, %d) of %d rows", a, b, t.Rows)
	}
	off := int64(a) * int64(t.Cols) * int64(t.DType.Size())
	if off%4 != 0 {
		return nil, fmt.Errorf("nn: Slice: row %d of a %v tensor of %d columns starts mid-word", a, t.DType, t.Cols)
	}
	return &Tensor{buf: t.buf, DType: t.DType, Rows: b - a, Cols: t.Cols, off: t.off + off}, nil
}

// Elems is Rows*Cols.
func (t *Tensor) Elems() int { return t.Rows * t.Cols }

// bytes is the tensor's size in whole 32-bit words, in bytes.
func (t *Tensor) bytes() int64 { return (int64(t.Elems())*int64(t.DType.Size()) + 3) &^ 3 }

// binding binds the tensor's bytes.
func (t *Tensor) binding() vk.Binding { return vk.Binding{Buf: t.buf, Offset: t.off, Size: t.bytes()} }

// Buffer is the device buffer underneath (the tensor starts Offset bytes into it).
func (t *Tensor) Buffer() *vk.Buffer { return t.buf }

// Offset is where the tensor starts in Buffer, in bytes.
func (t *Tensor) Offset() int64 { return t.off }

// Close frees a tensor made by NewTensor; on a view it does nothing.
func (t *Tensor) Close() error {
	if t.owned {
		return t.buf.Close()
	}
	return nil
}

// Upload writes values in row-major order, rounding to the dtype (nearest, ties to even).
func (t *Tensor) Upload(ctx context.Context, v []float32) error {
	if len(v) != t.Elems() {
		return fmt.Errorf("nn: Upload: %d values for a [%d %d] tensor", len(v), t.Rows, t.Cols)
	}
	return t.buf.Upload(ctx, t.off, Encode(t.DType, v))
}

// Download reads the values in row-major order (16-bit dtypes widen exactly).
func (t *Tensor) Download(ctx context.Context) ([]float32, error) {
	out := make([]float32, t.Elems())
	if err := t.DownloadInto(ctx, out); err != nil {
		return nil, err
	}
	return out, nil
}

// littleEndian is whether the host stores a float32 as the device's buffers do.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// DownloadInto is Download into out (of Elems values). A float32 tensor's bytes go
// straight into out on a little-endian host (a decode step's logits: no other copy).
func (t *Tensor) DownloadInto(ctx context.Context, out []float32) error {
	if len(out) != t.Elems() {
		return fmt.Errorf("nn: DownloadInto: %d values for a [%d %d] tensor", len(out), t.Rows, t.Cols)
	}
	if len(out) == 0 {
		return nil
	}
	if t.DType == dma.Float32 && littleEndian {
		return t.buf.Download(ctx, t.off, unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), 4*len(out)))
	}
	raw := make([]byte, t.bytes())
	if err := t.buf.Download(ctx, t.off, raw); err != nil {
		return err
	}
	copy(out, Decode(t.DType, raw, len(out)))
	return nil
}

// Encode stores values as dt's bytes (whole 32-bit words), rounding to nearest even.
func Encode(dt dma.DType, v []float32) []byte {
	raw := make([]byte, (len(v)*dt.Size()+3)&^3)
	for i, x := range v {
		switch dt {
		case dma.Float16:
			binary.LittleEndian.PutUint16(raw[2*i:], f16.FromFloat32(x))
		case dma.BFloat16:
			binary.LittleEndian.PutUint16(raw[2*i:], bf16.FromFloat32(x))
		default:
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
		}
	}
	return raw
}

// Decode reads n values of dtype dt from raw.
func Decode(dt dma.DType, raw []byte, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		switch dt {
		case dma.Float16:
			out[i] = f16.ToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
		case dma.BFloat16:
			out[i] = bf16.ToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
		default:
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	}
	return out
}

// Round returns v rounded to dt, as Encode then Decode would.
func Round(dt dma.DType, v []float32) []float32 { return Decode(dt, Encode(dt, v), len(v)) }

// upload makes a tensor with raw bytes (whole words) of dtype dt.
func (n *Device) upload(ctx context.Context, dt dma.DType, rows, cols int, raw []byte) (*Tensor, error) {
	t, err := n.NewTensor(dt, rows, cols)
	if err != nil {
		return nil, err
	}
	if err := t.buf.Upload(ctx, 0, raw); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// dtypeCode is the kernels' dtype code (nn_common.glsl).
func dtypeCode(dt dma.DType) uint32 { return uint32(dt) }

// NewMappedTensor allocates a tensor in host-visible memory, so that Upload and
// Download are plain copies (per-step inputs and outputs of a recorded program).
func (n *Device) NewMappedTensor(dt dma.DType, rows, cols int) (*Tensor, error) {
	if rows < 1 || cols < 1 {
		return nil, fmt.Errorf("nn: NewMappedTensor: shape [%d %d]", rows, cols)
	}
	buf, err := n.vd.NewMappedBuffer(max((int64(rows)*int64(cols)*int64(dt.Size())+3)&^3, 4))
	if err != nil {
		return nil, fmt.Errorf("nn: NewMappedTensor: %w", err)
	}
	return &Tensor{buf: buf, DType: dt, Rows: rows, Cols: cols, owned: true}, nil
}

// NewReadbackTensor allocates a tensor in host memory that only copies can write
// (RecordCopy) and Download reads as a plain copy: a recorded program's outputs.
func (n *Device) NewReadbackTensor(dt dma.DType, rows, cols int) (*Tensor, error) {
	if rows < 1 || cols < 1 {
		return nil, fmt.Errorf("nn: NewReadbackTensor: shape [%d %d]", rows, cols)
	}
	buf, err := n.vd.NewReadbackBuffer(max((int64(rows)*int64(cols)*int64(dt.Size())+3)&^3, 4))
	if err != nil {
		return nil, fmt.Errorf("nn: NewReadbackTensor: %w", err)
	}
	return &Tensor{buf: buf, DType: dt, Rows: rows, Cols: cols, owned: true}, nil
}

// RecordCopy records a copy of src into dst (the same number of bytes).
func RecordCopy(r *vk.Recorder, dst, src *Tensor) error {
	if dst.bytes() != src.bytes() {
		return fmt.Errorf("nn: Copy: %d bytes into %d", src.bytes(), dst.bytes())
	}
	if err := r.Copy(src.buf, src.off, dst.buf, dst.off, src.bytes()); err != nil {
		return err
	}
	r.Barrier()
	return nil
}
