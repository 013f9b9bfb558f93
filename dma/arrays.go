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
	d         *Device
	buf       *vk.Buffer
	B, Hb, Lk int
	life      lifetime
}

// NewWeights allocates weights for b batches, hb bias heads and lk keys.
func (d *Device) NewWeights(b, hb, lk int) (*Weights, error) {
	leave, err := d.enter("NewWeights")
	if err != nil {
		return nil, err
	}
	defer leave()
	return d.newWeights("NewWeights", b, hb, lk)
}

// newWeights is NewWeights for call op, inside it.
func (d *Device) newWeights(op string, b, hb, lk int) (*Weights, error) {
	if b < 1 || hb < 1 || lk < 1 {
		return nil, fmt.Errorf("dma: %s: weights [%d %d %d]: every dimension must be at least 1", op, b, hb, lk)
	}
	buf, err := d.vd.NewBuffer(int64(b) * int64(hb) * int64(lk) * 4)
	if err != nil {
		return nil, fmt.Errorf("dma: %s: weights [%d %d %d]: %w", op, b, hb, lk, err)
	}
	w := &Weights{d: d, buf: buf, B: b, Hb: hb, Lk: lk}
	if err := d.adopt(op, w); err != nil {
		return nil, err
	}
	return w, nil
}

// Upload writes the weights in [B, Hb, Lk] order.
func (w *Weights) Upload(ctx context.Context, data []float32) error {
	leave, err := w.d.enter("Weights.Upload", use{"the weights", w})
	if err != nil {
		return err
	}
	defer leave()
	if len(data) != w.B*w.Hb*w.Lk {
		return fmt.Errorf("dma: Weights.Upload: %d values for shape [%d %d %d]", len(data), w.B, w.Hb, w.Lk)
	}
	if err := w.buf.Upload(ctx, 0, f32bytes(data)); err != nil {
		return fmt.Errorf("dma: Weights.Upload: %w", err)
	}
	return nil
}

// Download reads the weights in [B, Hb, Lk] order.
func (w *Weights) Download(ctx context.Context) ([]float32, error) {
	leave, err := w.d.enter("Weights.Download", use{"the weights", w})
	if err != nil {
		return nil, err
	}
	defer leave()
	return downloadF32(ctx, "Weights.Download", w.buf, w.B*w.Hb*w.Lk)
}

// Close frees the weights (once no call in progress uses them). Closing again, or after
// the device's Close, does nothing and returns nil.
func (w *Weights) Close() error {
	if w != nil && w.d != nil {
		w.d.release(w)
	}
	return nil
}

func (w *Weights) owner() *Device {
	if w == nil {
		return nil
	}
	return w.d
}
func (w *Weights) state() *lifetime { return &w.life }
func (w *Weights) free()            { w.buf.Close() }

// LSE is the log-sum-exp of every query row's scores: float32 [B, H, Lq]; -Inf for rows
// that keep no key, NaN for rows whose kept scores hold a NaN or +Inf (spec section 7).
// The backward pass needs it.
type LSE struct {
	d        *Device
	buf      *vk.Buffer
	B, H, Lq int
	life     lifetime
}

// newLSE allocates the LSE of call op, inside it.
func (d *Device) newLSE(op string, b, h, lq int) (*LSE, error) {
	buf, err := d.vd.NewBuffer(int64(b) * int64(h) * int64(lq) * 4)
	if err != nil {
		return nil, fmt.Errorf("dma: %s: LSE [%d %d %d]: %w", op, b, h, lq, err)
	}
	l := &LSE{d: d, buf: buf, B: b, H: h, Lq: lq}
	if err := d.adopt(op, l); err != nil {
		return nil, err
	}
	return l, nil
}

// Download reads the values in [B, H, Lq] order.
func (l *LSE) Download(ctx context.Context) ([]float32, error) {
	leave, err := l.d.enter("LSE.Download", use{"the LSE", l})
	if err != nil {
		return nil, err
	}
	defer leave()
	return downloadF32(ctx, "LSE.Download", l.buf, l.B*l.H*l.Lq)
}

// Close frees the memory (once no call in progress uses it). Closing again, or after
// the device's Close, does nothing and returns nil.
func (l *LSE) Close() error {
	if l != nil && l.d != nil {
		l.d.release(l)
	}
	return nil
}

func (l *LSE) owner() *Device {
	if l == nil {
		return nil
	}
	return l.d
}
func (l *LSE) state() *lifetime { return &l.life }
func (l *LSE) free()            { l.buf.Close() }

// MaskShape is the shape of an explicit mask or bias, broadcastable over
// [B, heads, Lq, Lk]: each dimension is either the full size or 1, and heads is H, Hkv
// or 1 (with Hkv, query head h reads mask head h / (H/Hkv)).
type MaskShape struct{ B, H, Lq, Lk int }

func (s MaskShape) elems() int { return s.B * s.H * s.Lq * s.Lk }

// Mask is an explicit boolean mask (true = the key may be kept).
type Mask struct {
	d     *Device
	buf   *vk.Buffer
	Shape MaskShape
	life  lifetime
}

// NewMask uploads a mask given in [B, heads, Lq, Lk] order.
func (d *Device) NewMask(ctx context.Context, s MaskShape, keep []bool) (*Mask, error) {
	leave, err := d.enter("NewMask")
	if err != nil {
		return nil, err
	}
	defer leave()
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
	m := &Mask{d: d, buf: buf, Shape: s}
	if err := d.adopt("NewMask", m); err != nil {
		return nil, err
	}
	return m, nil
}

// Close frees the mask (once no call in progress uses it). Closing again, or after the
// device's Close, does nothing and returns nil.
func (m *Mask) Close() error {
	if m != nil && m.d != nil {
		m.d.release(m)
	}
	return nil
}

func (m *Mask) owner() *Device {
	if m == nil {
		return nil
	}
	return m.d
}
func (m *Mask) state() *lifetime { return &m.life }
func (m *Mask) free()            { m.buf.Close() }

// Bias is an explicit float bias added to the scores (explicit mode).
type Bias struct {
	d     *Device
	buf   *vk.Buffer
	Shape MaskShape
	life  lifetime
}

// NewBias uploads a bias given in [B, heads, Lq, Lk] order.
func (d *Device) NewBias(ctx context.Context, s MaskShape, v []float32) (*Bias, error) {
	leave, err := d.enter("NewBias")
	if err != nil {
		return nil, err
	}
	defer leave()
	if s.B < 1 || s.H < 1 || s.Lq < 1 || s.Lk < 1 || len(v) != s.elems() {
		return nil, fmt.Errorf("dma: NewBias: %d values for shape %+v", len(v), s)
	}
	buf, err := d.uploadBytes(ctx, f32bytes(v))
	if err != nil {
		return nil, fmt.Errorf("dma: NewBias: %w", err)
	}
	b := &Bias{d: d, buf: buf, Shape: s}
	if err := d.adopt("NewBias", b); err != nil {
		return nil, err
	}
	return b, nil
}

// Close frees the bias (once no call in progress uses it). Closing again, or after the
// device's Close, does nothing and returns nil.
func (b *Bias) Close() error {
	if b != nil && b.d != nil {
		b.d.release(b)
	}
	return nil
}

func (b *Bias) owner() *Device {
	if b == nil {
		return nil
	}
	return b.d
}
func (b *Bias) state() *lifetime { return &b.life }
func (b *Bias) free()            { b.buf.Close() }

// KeyPadding marks which keys exist: [B, Lk], true = a real key. Padded keys are never
// attended to and never selected.
type KeyPadding struct {
	d     *Device
	buf   *vk.Buffer
	B, Lk int
	life  lifetime
}

// NewKeyPadding uploads key validity in [B, Lk] order.
func (d *Device) NewKeyPadding(ctx context.Context, b, lk int, valid []bool) (*KeyPadding, error) {
	leave, err := d.enter("NewKeyPadding")
	if err != nil {
		return nil, err
	}
	defer leave()
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
	kp := &KeyPadding{d: d, buf: buf, B: b, Lk: lk}
	if err := d.adopt("NewKeyPadding", kp); err != nil {
		return nil, err
	}
	return kp, nil
}

// Close frees the padding (once no call in progress uses it). Closing again, or after
// the device's Close, does nothing and returns nil.
func (k *KeyPadding) Close() error {
	if k != nil && k.d != nil {
		k.d.release(k)
	}
	return nil
}

func (k *KeyPadding) owner() *Device {
	if k == nil {
		return nil
	}
	return k.d
}
func (k *KeyPadding) state() *lifetime { return &k.life }
func (k *KeyPadding) free()            { k.buf.Close() }

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

func downloadF32(ctx context.Context, op string, buf *vk.Buffer, n int) ([]float32, error) {
	raw := make([]byte, 4*n)
	if err := buf.Download(ctx, 0, raw); err != nil {
		return nil, fmt.Errorf("dma: %s: %w", op, err)
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out, nil
}
