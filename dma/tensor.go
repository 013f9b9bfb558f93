package dma

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/dmavk/dmavk/internal/bf16"
	"github.com/dmavk/dmavk/internal/f16"
	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/vk"
)

// DType is the storage type of a tensor's elements. Arithmetic is float32 whatever
// the storage.
type DType int

const (
	Float32  DType = iota // IEEE binary32
	Float16               // IEEE binary16
	BFloat16              // bfloat16: float32's sign and 8-bit exponent, 7 stored mantissa bits
)

// String names the dtype.
func (t DType) String() string {
	switch t {
	case Float32:
		return "float32"
	case Float16:
		return "float16"
	case BFloat16:
		return "bfloat16"
	}
	return fmt.Sprintf("DType(%d)", int(t))
}

// Size is the byte size of one element.
func (t DType) Size() int {
	if t == Float16 || t == BFloat16 {
		return 2
	}
	return 4
}

// storage is the kernels' code for the dtype.
func (t DType) storage() kern.Storage {
	switch t {
	case Float16:
		return kern.StorageF16
	case BFloat16:
		return kern.StorageBF16
	}
	return kern.StorageF32
}

// Layout is the memory order of a tensor's dimensions; D is always contiguous.
type Layout int

const (
	BLHD Layout = iota // [batch, sequence, head, dim], as most model code stores Q/K/V
	BHLD               // [batch, head, sequence, dim]
)

// String names the layout.
func (l Layout) String() string {
	if l == BHLD {
		return "BHLD"
	}
	return "BLHD"
}

// Shape is the logical shape of an attention tensor: batch, sequence length, heads
// and head dimension. For K and V (and their gradients) H is the number of kv heads,
// Hkv; for Q, O and dO it is the number of query heads.
type Shape struct{ B, L, H, D int }

// String formats the shape.
func (s Shape) String() string { return fmt.Sprintf("[B=%d L=%d H=%d D=%d]", s.B, s.L, s.H, s.D) }

// Elems is the number of elements.
func (s Shape) Elems() int { return s.B * s.L * s.H * s.D }

// MaxHeadDim is the largest head dimension D the kernels take; D must also be a
// multiple of 8.
const MaxHeadDim = 256

// checkHeadDim says why no kernel takes head dimension dim, or returns nil.
func checkHeadDim(dim int) error {
	if dim%8 != 0 || dim > MaxHeadDim {
		return fmt.Errorf("head dim D=%d unsupported: every kernel takes a multiple of 8 up to %d "+
			"(rows move 8 values at a time, and a workgroup holds rows of at most %d in shared memory)", dim, MaxHeadDim, MaxHeadDim)
	}
	return nil
}

// Tensor is a [B, L, H, D] tensor in device memory.
type Tensor struct {
	d      *Device
	buf    *vk.Buffer
	dtype  DType
	shape  Shape
	layout Layout
	life   lifetime
}

// NewTensor allocates a tensor. Its contents are undefined until uploaded. Every
// dimension is at least 1, and D a multiple of 8 up to MaxHeadDim, the head
// dimensions the kernels take (checked here, not at the first call).
func (d *Device) NewTensor(dt DType, s Shape, l Layout) (*Tensor, error) {
	leave, err := d.enter("NewTensor")
	if err != nil {
		return nil, err
	}
	defer leave()
	return d.newTensor("NewTensor", dt, s, l)
}

// TensorFrom makes a tensor and uploads data into it (Upload's logical [B, L, H, D]
// order, rounded to dt), in one call.
func (d *Device) TensorFrom(ctx context.Context, dt DType, s Shape, l Layout, data []float32) (*Tensor, error) {
	leave, err := d.enter("TensorFrom")
	if err != nil {
		return nil, err
	}
	defer leave()
	if len(data) != s.Elems() {
		return nil, fmt.Errorf("dma: TensorFrom: %d values for shape %v (%d elements)", len(data), s, s.Elems())
	}
	t, err := d.newTensor("TensorFrom", dt, s, l)
	if err != nil {
		return nil, err
	}
	if err := t.upload(ctx, data); err != nil {
		t.Close()
		return nil, fmt.Errorf("dma: TensorFrom: %w", err)
	}
	return t, nil
}

// newTensor is NewTensor for call op, inside it.
func (d *Device) newTensor(op string, dt DType, s Shape, l Layout) (*Tensor, error) {
	if dt != Float32 && dt != Float16 && dt != BFloat16 {
		return nil, fmt.Errorf("dma: %s: unsupported dtype %v", op, dt)
	}
	if l != BLHD && l != BHLD {
		return nil, fmt.Errorf("dma: %s: unknown layout %v", op, l)
	}
	if s.B < 1 || s.L < 1 || s.H < 1 || s.D < 1 {
		return nil, fmt.Errorf("dma: %s: shape %v: every dimension must be at least 1", op, s)
	}
	if err := checkHeadDim(s.D); err != nil {
		return nil, fmt.Errorf("dma: %s: shape %v: %w", op, s, err)
	}
	n := int64(s.B) * int64(s.L) * int64(s.H) * int64(s.D)
	if n > math.MaxUint32 {
		return nil, fmt.Errorf("dma: %s: shape %v has %d elements, more than 2^32", op, s, n)
	}
	// 16-bit data is read as 32-bit words: round up to whole words.
	buf, err := d.vd.NewBuffer((n*int64(dt.Size()) + 3) &^ 3)
	if err != nil {
		return nil, fmt.Errorf("dma: %s: %v tensor %v: %w", op, dt, s, err)
	}
	t := &Tensor{d: d, buf: buf, dtype: dt, shape: s, layout: l}
	if err := d.adopt(op, t); err != nil {
		return nil, err
	}
	return t, nil
}

// DType is the tensor's storage type.
func (t *Tensor) DType() DType { return t.dtype }

// Shape is the tensor's logical [B, L, H, D] shape.
func (t *Tensor) Shape() Shape { return t.shape }

// Layout is the tensor's memory order.
func (t *Tensor) Layout() Layout { return t.layout }

// Close frees the tensor's memory (once no call in progress uses it). Closing again, or
// after the device's Close (which freed it), does nothing and returns nil.
func (t *Tensor) Close() error {
	if t != nil && t.d != nil {
		t.d.release(t)
	}
	return nil
}

func (t *Tensor) owner() *Device {
	if t == nil {
		return nil
	}
	return t.d
}
func (t *Tensor) state() *lifetime { return &t.life }
func (t *Tensor) free()            { t.buf.Close() }

// enter starts call op on the tensor itself.
func (t *Tensor) enter(op string) (func(), error) {
	return t.d.enter(op, use{"the tensor", t})
}

// strides returns the batch, sequence and head strides in elements.
func (t *Tensor) strides() (sb, sl, sh int) {
	s := t.shape
	if t.layout == BHLD {
		return s.H * s.L * s.D, s.D, s.L * s.D
	}
	return s.L * s.H * s.D, s.H * s.D, s.D
}

// storageIndex maps the logical index of element (b, l, h, d) to its place in memory.
func (t *Tensor) storageIndex(b, l, h, dd int) int {
	sb, sl, sh := t.strides()
	return b*sb + l*sl + h*sh + dd
}

// permute calls f(logical, storage) for every element, in logical [B,L,H,D] order.
func (t *Tensor) permute(f func(logical, storage int)) {
	s := t.shape
	i := 0
	for b := 0; b < s.B; b++ {
		for l := 0; l < s.L; l++ {
			for h := 0; h < s.H; h++ {
				base := t.storageIndex(b, l, h, 0)
				for dd := 0; dd < s.D; dd++ {
					f(i, base+dd)
					i++
				}
			}
		}
	}
}

// Upload writes data, given in logical [B, L, H, D] order whatever the layout; float16
// and bfloat16 tensors round each value to the nearest representable one (ties to
// even; NaN stays NaN).
func (t *Tensor) Upload(ctx context.Context, data []float32) error {
	leave, err := t.enter("Tensor.Upload")
	if err != nil {
		return err
	}
	defer leave()
	if len(data) != t.shape.Elems() {
		return fmt.Errorf("dma: Tensor.Upload: %d values for a tensor of shape %v (%d elements)", len(data), t.shape, t.shape.Elems())
	}
	if err := t.upload(ctx, data); err != nil {
		return fmt.Errorf("dma: Tensor.Upload: %w", err)
	}
	return nil
}

// upload is Upload inside a call; len(data) is right.
func (t *Tensor) upload(ctx context.Context, data []float32) error {
	raw := make([]byte, (len(data)*t.dtype.Size()+3)&^3)
	t.permute(func(li, si int) {
		switch t.dtype {
		case Float16:
			binary.LittleEndian.PutUint16(raw[2*si:], f16.FromFloat32(data[li]))
		case BFloat16:
			binary.LittleEndian.PutUint16(raw[2*si:], bf16.FromFloat32(data[li]))
		default:
			binary.LittleEndian.PutUint32(raw[4*si:], math.Float32bits(data[li]))
		}
	})
	return t.buf.Upload(ctx, 0, raw)
}

// UploadHalf writes IEEE half-precision bits in logical order into a Float16 tensor.
func (t *Tensor) UploadHalf(ctx context.Context, bits []uint16) error {
	return t.upload16(ctx, "Tensor.UploadHalf", Float16, bits)
}

// UploadBF16 writes bfloat16 bits (the high halves of float32s) in logical order into a
// BFloat16 tensor.
func (t *Tensor) UploadBF16(ctx context.Context, bits []uint16) error {
	return t.upload16(ctx, "Tensor.UploadBF16", BFloat16, bits)
}

func (t *Tensor) upload16(ctx context.Context, name string, dt DType, bits []uint16) error {
	leave, err := t.enter(name)
	if err != nil {
		return err
	}
	defer leave()
	if t.dtype != dt {
		return fmt.Errorf("dma: %s on a %v tensor", name, t.dtype)
	}
	if len(bits) != t.shape.Elems() {
		return fmt.Errorf("dma: %s: %d values for a tensor of shape %v", name, len(bits), t.shape)
	}
	raw := make([]byte, (len(bits)*2+3)&^3)
	t.permute(func(li, si int) { binary.LittleEndian.PutUint16(raw[2*si:], bits[li]) })
	if err := t.buf.Upload(ctx, 0, raw); err != nil {
		return fmt.Errorf("dma: %s: %w", name, err)
	}
	return nil
}

// Download reads the tensor as float32 values in logical [B, L, H, D] order (16-bit
// dtypes widen exactly).
func (t *Tensor) Download(ctx context.Context) ([]float32, error) {
	leave, err := t.enter("Tensor.Download")
	if err != nil {
		return nil, err
	}
	defer leave()
	raw := make([]byte, (t.shape.Elems()*t.dtype.Size()+3)&^3)
	if err := t.buf.Download(ctx, 0, raw); err != nil {
		return nil, fmt.Errorf("dma: Tensor.Download: %w", err)
	}
	out := make([]float32, t.shape.Elems())
	t.permute(func(li, si int) {
		switch t.dtype {
		case Float16:
			out[li] = f16.ToFloat32(binary.LittleEndian.Uint16(raw[2*si:]))
		case BFloat16:
			out[li] = bf16.ToFloat32(binary.LittleEndian.Uint16(raw[2*si:]))
		default:
			out[li] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*si:]))
		}
	})
	return out, nil
}

// DownloadHalf reads a Float16 tensor's bits in logical order.
func (t *Tensor) DownloadHalf(ctx context.Context) ([]uint16, error) {
	return t.download16(ctx, "Tensor.DownloadHalf", Float16)
}

// DownloadBF16 reads a BFloat16 tensor's bits in logical order.
func (t *Tensor) DownloadBF16(ctx context.Context) ([]uint16, error) {
	return t.download16(ctx, "Tensor.DownloadBF16", BFloat16)
}

func (t *Tensor) download16(ctx context.Context, name string, dt DType) ([]uint16, error) {
	leave, err := t.enter(name)
	if err != nil {
		return nil, err
	}
	defer leave()
	if t.dtype != dt {
		return nil, fmt.Errorf("dma: %s on a %v tensor", name, t.dtype)
	}
	raw := make([]byte, (t.shape.Elems()*2+3)&^3)
	if err := t.buf.Download(ctx, 0, raw); err != nil {
		return nil, fmt.Errorf("dma: %s: %w", name, err)
	}
	out := make([]uint16, t.shape.Elems())
	t.permute(func(li, si int) { out[li] = binary.LittleEndian.Uint16(raw[2*si:]) })
	return out, nil
}
