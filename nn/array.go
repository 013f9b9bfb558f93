package nn

import (
	"fmt"

	"github.com/dmavk/dmavk/dma"
)

// Array is a host array of a checkpoint: dtype, shape and little-endian bytes in
// row-major order (safetensors' F32, F16 and BF16).
type Array struct {
	Name  string // for errors, e.g. "model.layers.0.self_attn.q_proj.weight"
	DType dma.DType
	Shape []int
	Data  []byte
}

// Elems is the product of the shape.
func (a *Array) Elems() int {
	n := 1
	for _, s := range a.Shape {
		n *= s
	}
	return n
}

// check reports whether a has the given shape and whole data.
func (a *Array) check(shape ...int) error {
	if a == nil {
		return fmt.Errorf("nn: missing tensor of shape %v", shape)
	}
	if a.DType != dma.Float32 && a.DType != dma.Float16 && a.DType != dma.BFloat16 {
		return fmt.Errorf("nn: tensor %s: unsupported dtype %v", a.Name, a.DType)
	}
	ok := len(a.Shape) == len(shape)
	for i := 0; ok && i < len(shape); i++ {
		ok = a.Shape[i] == shape[i]
	}
	if !ok {
		return fmt.Errorf("nn: tensor %s has shape %v, want %v", a.Name, a.Shape, shape)
	}
	if len(a.Data) != a.Elems()*a.DType.Size() {
		return fmt.Errorf("nn: tensor %s: %d bytes for %v %v", a.Name, len(a.Data), a.Shape, a.DType)
	}
	return nil
}

// Floats returns the values as float32 (16-bit dtypes widen exactly).
func (a *Array) Floats() []float32 { return Decode(a.DType, padWords(a.Data), a.Elems()) }

// ArrayOf makes an Array of float32 values rounded to dt (tests, random models).
func ArrayOf(name string, dt dma.DType, v []float32, shape ...int) *Array {
	raw := Encode(dt, v)
	return &Array{Name: name, DType: dt, Shape: shape, Data: raw[:len(v)*dt.Size()]}
}

// padWords returns b padded with zeros to whole 32-bit words.
func padWords(b []byte) []byte {
	if len(b)%4 == 0 {
		return b
	}
	return append(append([]byte(nil), b...), make([]byte, 4-len(b)%4)...)
}

// transpose returns the [rows, cols] array's data as [cols, rows] (element size es).
func transpose(data []byte, rows, cols, es int) []byte {
	out := make([]byte, len(data))
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			copy(out[(c*rows+r)*es:(c*rows+r+1)*es], data[(r*cols+c)*es:(r*cols+c+1)*es])
		}
	}
	return out
}
