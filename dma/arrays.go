package dma

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/dmavk/dmavk/vk"
)

// Weights are the dynamic weights (delta) of every key: float32 [B, Hb, Lk], where Hb
// is the number of query heads H or of kv heads Hkv.
type Weights struct {
	buf       *vk.Buffer
	B, Hb, Lk int
}

// NewWeights allocates weights for b batches, hb bias heads and lk keys.
func (d *Device) NewWeights(b, hb, lk int) (*Weights, error) {
	if b < 1 || hb < 1 || lk < 1 {
		return nil, fmt.Errorf("dma: NewWeights: shape [%d %d %d]: every dimension must be at least 1", b, hb, lk)
	}
	buf, err := d.vd.NewBuffer(int64(b) * int64(hb) * int64(lk) * 4)
	if err != nil {
		return nil, fmt.Errorf("dma: NewWeights: %w", err)
	}
	return &Weights{buf: buf, B: b, Hb: hb, Lk: lk}, nil
}

// Upload writes the weights in [B, Hb, Lk] order.
func (w *Weights) Upload(ctx context.Context, data []float32) error {
	if len(data) != w.B*w.Hb*w.Lk {
		return fmt.Errorf("dma: Weights.Upload: %d values for shape [%d %d %d]", len(data), w.B, w.Hb, w.Lk)
	}
	return w.buf.Upload(ctx, 0, f32bytes(data))
}

// Download reads the weights in [B, Hb, Lk] order.
func (w *Weights) Download(ctx context.Context) ([]float32, error) {
	return downloadF32(ctx, w.buf, w.B*w.Hb*w.Lk)
}

// Close frees the weights.
func (w *Weights) Close() error { return w.buf.Close() }

// LSE is the log-sum-exp of every query row's scores: float32 [B, H, Lq]; -Inf for rows
// that keep no key, NaN for rows whose kept scores hold a NaN or +Inf (spec section 7).
// The backward pass needs it.
type LSE struct {
	buf      *vk.Buffer
	B, H, Lq int
}

// Download reads the values in [B, H, Lq] order.
func (l *LSE) Download(ctx context.Context) ([]float32, error) {
	return downloadF32(ctx, l.buf, l.B*l.H*l.Lq)
}

// Close frees the memory.
func (l *LSE) Close() error { return l.buf.Close() }

// MaskShape is the shape of an explicit mask or bias, broadcastable over
// [B, heads, Lq, Lk]: each dimension is either the full size or 1, and heads is H, Hkv
// or 1 (with Hkv, query head h reads mask head h / (H/Hkv)).
type MaskShape struct{ B, H, Lq, Lk int }

func (s MaskShape) elems() int { return s.B * s.H * s.Lq * s.Lk }

// Mask is an explicit boolean mask (true = the key may be kept).
type Mask struct {
	buf   *vk.Buffer
	Shape MaskShape
}

// NewMask uploads a mask given in [B, heads, Lq, Lk] order.
func (d *Device) NewMask(ctx context.Context, s MaskShape, keep []bool) (*Mask, error) {
	if s.B < 1 || s.H < 1 || s.Lq < 1 || s.Lk < 1 || len(keep) != s.elems() {
		return nil, fmt.Errorf("dma: NewMask: %d values for shape %+v", len(keep), s)
	}
	raw := make([]byte, (len(keep)+3)&^3)
	for i, k := range keep {
		if k {
			raw[i] = 1
		}
	}
	buf, err := d.uploadBytes(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("dma: NewMask: %w", err)
	}
	return &Mask{buf: buf, Shape: s}, nil
}

// Close frees the mask.
func (m *Mask) Close() error { return m.buf.Close() }

// Bias is an explicit float bias added to the scores (explicit mode).
type Bias struct {
	buf   *vk.Buffer
	Shape MaskShape
}

// NewBias uploads a bias given in [B, heads, Lq, Lk] order.
func (d *Device) NewBias(ctx context.Context, s MaskShape, v []float32) (*Bias, error) {
	if s.B < 1 || s.H < 1 || s.Lq < 1 || s.Lk < 1 || len(v) != s.elems() {
		return nil, fmt.Errorf("dma: NewBias: %d values for shape %+v", len(v), s)
	}
	buf, err := d.uploadBytes(ctx, f32bytes(v))
	if err != nil {
		return nil, fmt.Errorf("dma: NewBias: %w", err)
	}
	return &Bias{buf: buf, Shape: s}, nil
}

// Close frees the bias.
func (b *Bias) Close() error { return b.buf.Close() }

// KeyPadding marks which keys exist: [B, Lk], true = a real key. Padded keys are never
// attended to and never selected.
type KeyPadding struct {
	buf   *vk.Buffer
	B, Lk int
}

// NewKeyPadding uploads key validity in [B, Lk] order.
func (d *Device) NewKeyPadding(ctx context.Context, b, lk int, valid []bool) (*KeyPadding, error) {
	if b < 1 || lk < 1 || len(valid) != b*lk {
		return nil, fmt.Errorf("dma: NewKeyPadding: %d values for shape [%d %d]", len(valid), b, lk)
	}
	raw := make([]byte, (len(valid)+3)&^3)
	for i, v := range valid {
		if v {
			raw[i] = 1
		}
	}
	buf, err := d.uploadBytes(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("dma: NewKeyPadding: %w", err)
	}
	return &KeyPadding{buf: buf, B: b, Lk: lk}, nil
}

// Close frees the padding.
func (k *KeyPadding) Close() error { return k.buf.Close() }

func (d *Device) uploadBytes(ctx context.Context, raw []byte) (*vk.Buffer, error) {
	buf, err := d.vd.NewBuffer(int64(max(len(raw), 4)))
	if err != nil {
		return nil, err
	}
	if err := buf.Upload(ctx, 0, raw); err != nil {
		buf.Close()
		return nil, err
	}
	return buf, nil
}

func f32bytes(v []float32) []byte {
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
	}
	return raw
}

func downloadF32(ctx context.Context, buf *vk.Buffer, n int) ([]float32, error) {
	raw := make([]byte, 4*n)
	if err := buf.Download(ctx, 0, raw); err != nil {
		return nil, err
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out, nil
}
