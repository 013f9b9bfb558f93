package ref

import "fmt"

// Tensor4 is a dense float64 tensor with explicit shape [B, L, H, D] in that
// memory order (row-major): element (b, l, h, d) is
// Data[((b*L+l)*H+h)*D+d].
type Tensor4 struct {
	B, L, H, D int
	Data       []float64
}

// NewTensor4 returns a zeroed tensor of shape [b, l, h, d].
func NewTensor4(b, l, h, d int) *Tensor4 {
	if b < 0 || l < 0 || h < 0 || d < 0 {
		panic(fmt.Sprintf("ref: negative tensor shape [%d %d %d %d]", b, l, h, d))
	}
	return &Tensor4{B: b, L: l, H: h, D: d, Data: make([]float64, b*l*h*d)}
}

// Index returns the offset of element (b, l, h, d) in t.Data.
func (t *Tensor4) Index(b, l, h, d int) int {
	if b < 0 || b >= t.B || l < 0 || l >= t.L || h < 0 || h >= t.H || d < 0 || d >= t.D {
		panic(fmt.Sprintf("ref: index (%d %d %d %d) out of shape [%d %d %d %d]", b, l, h, d, t.B, t.L, t.H, t.D))
	}
	return ((b*t.L+l)*t.H+h)*t.D + d
}

// At returns element (b, l, h, d).
func (t *Tensor4) At(b, l, h, d int) float64 { return t.Data[t.Index(b, l, h, d)] }

// Set sets element (b, l, h, d) to v.
func (t *Tensor4) Set(b, l, h, d int, v float64) { t.Data[t.Index(b, l, h, d)] = v }

// Row returns the D values of position l, head h of batch b. The slice
// aliases t.Data, so writes to it change t; its capacity ends at the row
// so that appends cannot spill into the next one.
func (t *Tensor4) Row(b, l, h int) []float64 {
	i := t.Index(b, l, h, 0)
	return t.Data[i : i+t.D : i+t.D]
}

// Clone returns a deep copy of t.
func (t *Tensor4) Clone() *Tensor4 {
	c := *t
	c.Data = append([]float64(nil), t.Data...)
	return &c
}

// SameShape reports whether t and u have the same shape.
func (t *Tensor4) SameShape(u *Tensor4) bool {
	return t.B == u.B && t.L == u.L && t.H == u.H && t.D == u.D
}

func (t *Tensor4) shapeString() string {
	return fmt.Sprintf("[%d %d %d %d]", t.B, t.L, t.H, t.D)
}

// valid checks that Data matches the shape, so later indexing cannot
// silently read the wrong element.
func (t *Tensor4) valid(name string) error {
	if t == nil {
		return fmt.Errorf("ref: %s is nil", name)
	}
	if t.B < 1 || t.L < 1 || t.H < 1 || t.D < 1 {
		return fmt.Errorf("ref: %s has empty shape %s", name, t.shapeString())
	}
	if len(t.Data) != t.B*t.L*t.H*t.D {
		return fmt.Errorf("ref: %s has %d values for shape %s", name, len(t.Data), t.shapeString())
	}
	return nil
}
