// Package npy reads and writes NumPy .npy files (format versions 1 to 3, C order) of
// the element types dmavk exchanges: float32, float16, float64 (read, converted to
// float32) and bool.
package npy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/dmavk/dmavk/internal/f16"
)

// Array is a loaded array: its shape, its NumPy dtype ("<f4", "<f2", "<f8", "|b1") and
// its values as float32 (bools are 0 and 1). Half holds the raw bits of a "<f2" file.
type Array struct {
	Shape []int
	DType string
	Data  []float32
	Half  []uint16
}

// Len is the number of elements the shape holds.
func (a *Array) Len() int {
	n := 1
	for _, d := range a.Shape {
		n *= d
	}
	return n
}

var (
	descrRe   = regexp.MustCompile(`'descr'\s*:\s*'([^']*)'`)
	fortranRe = regexp.MustCompile(`'fortran_order'\s*:\s*(True|False)`)
	shapeRe   = regexp.MustCompile(`'shape'\s*:\s*\(([^)]*)\)`)
)

// Read loads a .npy file.
func Read(path string) (*Array, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	a, err := decode(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("npy: %s: %w", path, err)
	}
	return a, nil
}

func decode(r io.Reader) (*Array, error) {
	var magic [8]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil {
		return nil, errors.New("not an .npy file (too short)")
	}
	if string(magic[:6]) != "\x93NUMPY" {
		return nil, errors.New("not an .npy file (bad magic)")
	}
	var hlen int
	switch magic[6] {
	case 1:
		var n uint16
		if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
			return nil, err
		}
		hlen = int(n)
	case 2, 3:
		var n uint32
		if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
			return nil, err
		}
		hlen = int(n)
	default:
		return nil, fmt.Errorf("unsupported .npy version %d", magic[6])
	}
	if hlen > 1<<20 {
		return nil, fmt.Errorf("header of %d bytes is implausible", hlen)
	}
	header := make([]byte, hlen)
	if _, err := io.ReadFull(r, header); err != nil {
		return nil, fmt.Errorf("truncated header: %w", err)
	}
	h := string(header)
	m := descrRe.FindStringSubmatch(h)
	if m == nil {
		return nil, errors.New("header has no descr")
	}
	a := &Array{DType: m[1]}
	if fm := fortranRe.FindStringSubmatch(h); fm != nil && fm[1] == "True" {
		return nil, errors.New("Fortran-order arrays are not supported (save with np.ascontiguousarray)")
	}
	sm := shapeRe.FindStringSubmatch(h)
	if sm == nil {
		return nil, errors.New("header has no shape")
	}
	for _, part := range strings.Split(sm[1], ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bad shape %q", sm[1])
		}
		a.Shape = append(a.Shape, n)
	}
	n := a.Len()
	if n > 1<<31 {
		return nil, fmt.Errorf("shape %v is too large", a.Shape)
	}
	size := map[string]int{"<f4": 4, "<f2": 2, "<f8": 8, "|b1": 1, "<b1": 1}[a.DType]
	if size == 0 {
		return nil, fmt.Errorf("dtype %q not supported (float32, float16, float64, bool; little-endian)", a.DType)
	}
	raw := make([]byte, n*size)
	if _, err := io.ReadFull(r, raw); err != nil {
		return nil, fmt.Errorf("data shorter than shape %v: %w", a.Shape, err)
	}
	a.Data = make([]float32, n)
	for i := range n {
		switch size {
		case 4:
			a.Data[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		case 2:
			hb := binary.LittleEndian.Uint16(raw[2*i:])
			a.Half = append(a.Half, hb)
			a.Data[i] = f16.ToFloat32(hb)
		case 8:
			a.Data[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:])))
		case 1:
			if raw[i] != 0 {
				a.Data[i] = 1
			}
		}
	}
	return a, nil
}

func header(descr string, shape []int) []byte {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.Itoa(d)
	}
	s := strings.Join(dims, ", ")
	if len(shape) == 1 {
		s += ","
	}
	h := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, s)
	// Pad so that the data starts at a multiple of 64 bytes, ending with a newline.
	total := 10 + len(h) + 1
	h += strings.Repeat(" ", (64-total%64)%64) + "\n"
	var b bytes.Buffer
	b.WriteString("\x93NUMPY\x01\x00")
	binary.Write(&b, binary.LittleEndian, uint16(len(h)))
	b.WriteString(h)
	return b.Bytes()
}

// WriteFloat32 writes data with the given shape as a "<f4" array.
func WriteFloat32(path string, shape []int, data []float32) error {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return write(path, "<f4", shape, len(data), raw)
}

// WriteFloat16 writes half-precision bits with the given shape as a "<f2" array.
func WriteFloat16(path string, shape []int, bits []uint16) error {
	raw := make([]byte, 2*len(bits))
	for i, v := range bits {
		binary.LittleEndian.PutUint16(raw[2*i:], v)
	}
	return write(path, "<f2", shape, len(bits), raw)
}

func write(path, descr string, shape []int, n int, raw []byte) error {
	want := 1
	for _, d := range shape {
		want *= d
	}
	if want != n {
		return fmt.Errorf("npy: %s: shape %v holds %d values, got %d", path, shape, want, n)
	}
	return os.WriteFile(path, append(header(descr, shape), raw...), 0o644)
}

// WriteBool writes bools with the given shape as a "|b1" array.
func WriteBool(path string, shape []int, data []bool) error {
	raw := make([]byte, len(data))
	for i, v := range data {
		if v {
			raw[i] = 1
		}
	}
	return write(path, "|b1", shape, len(data), raw)
}

// WriteFloat64 writes data with the given shape as a "<f8" array.
func WriteFloat64(path string, shape []int, data []float64) error {
	raw := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(raw[8*i:], math.Float64bits(v))
	}
	return write(path, "<f8", shape, len(data), raw)
}
