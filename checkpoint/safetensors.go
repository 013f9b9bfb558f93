package checkpoint

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"os"
	"slices"
	"sort"
	"sync"
)

// maxHeader bounds the JSON header (the format's own reader allows 100 MB).
const maxHeader = 100 << 20

// File is one safetensors file, memory-mapped read-only. Its methods are safe for
// concurrent use; Close unmaps it, after which its tensors' data may not be used.
type File struct {
	Path     string
	Metadata map[string]string // the header's __metadata__

	mu      sync.RWMutex
	data    []byte // the whole file while open
	unmap   func() error
	base    int // offset of the tensor data after the header
	tensors map[string]*Tensor
}

// Tensor is one tensor of a File: its header entry and, while the file is open, its bytes.
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	File  string // path of the file that holds it

	f          *File
	begin, end int // byte range in the file's data section
}

// Elems is the number of elements, the product of Shape (1 for a scalar).
func (t *Tensor) Elems() int {
	n := 1
	for _, s := range t.Shape {
		n *= s
	}
	return n
}

// Bytes returns the tensor's little-endian bytes: the mapped file itself, not a copy,
// valid until the file is closed and never to be written.
func (t *Tensor) Bytes() ([]byte, error) {
	t.f.mu.RLock()
	defer t.f.mu.RUnlock()
	if t.f.data == nil {
		return nil, errorf(t.File, t.Name, ErrClosed, "")
	}
	return t.f.data[t.f.base+t.begin : t.f.base+t.end : t.f.base+t.end], nil
}

// Float32s returns a new slice with the tensor's values widened to float32 (exactly):
// F32, F16 or BF16 only.
func (t *Tensor) Float32s() ([]float32, error) {
	if !t.DType.IsFloat() {
		return nil, errorf(t.File, t.Name, ErrDType, "%s cannot be read as float32 (F32, F16 or BF16)", t.DType)
	}
	out := make([]float32, t.Elems())
	return out, t.read(func(b []byte) { decodeFloats(out, t.DType, b) })
}

// Int64s returns a new slice with the values of an I64, I32, I16, I8 or U8 tensor.
func (t *Tensor) Int64s() ([]int64, error) {
	n := t.Elems()
	out := make([]int64, n)
	var dec func(b []byte, i int) int64
	switch t.DType {
	case I64:
		dec = func(b []byte, i int) int64 { return int64(binary.LittleEndian.Uint64(b[8*i:])) }
	case I32:
		dec = func(b []byte, i int) int64 { return int64(int32(binary.LittleEndian.Uint32(b[4*i:]))) }
	case I16:
		dec = func(b []byte, i int) int64 { return int64(int16(binary.LittleEndian.Uint16(b[2*i:]))) }
	case I8:
		dec = func(b []byte, i int) int64 { return int64(int8(b[i])) }
	case U8:
		dec = func(b []byte, i int) int64 { return int64(b[i]) }
	default:
		return nil, errorf(t.File, t.Name, ErrDType, "%s cannot be read as integers", t.DType)
	}
	return out, t.read(func(b []byte) {
		for i := range out {
			out[i] = dec(b, i)
		}
	})
}

// read runs fn on the tensor's bytes with the file held open.
func (t *Tensor) read(fn func([]byte)) error {
	t.f.mu.RLock()
	defer t.f.mu.RUnlock()
	if t.f.data == nil {
		return errorf(t.File, t.Name, ErrClosed, "")
	}
	fn(t.f.data[t.f.base+t.begin : t.f.base+t.end])
	return nil
}

// CheckShape reports whether the tensor has exactly this shape.
func (t *Tensor) CheckShape(shape ...int) error {
	if !slices.Equal(t.Shape, shape) {
		return errorf(t.File, t.Name, ErrShape, "%v, want %v", t.Shape, shape)
	}
	return nil
}

// OpenFile maps a safetensors file and checks its header: every tensor's dtype known, its
// byte range inside the file, sized for its shape and overlapping no other.
func OpenFile(path string) (*File, error) {
	osf, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer osf.Close()
	st, err := osf.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, errorf(path, "", ErrCorrupt, "is a directory")
	}
	size := st.Size()
	if size < 8 {
		return nil, errorf(path, "", ErrCorrupt, "%d bytes, shorter than the 8-byte header length", size)
	}
	if size > math.MaxInt {
		return nil, errorf(path, "", ErrCorrupt, "%d bytes do not fit in memory", size)
	}
	data, unmap, err := mapFile(osf, int(size))
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %s: map: %w", path, err)
	}
	f := &File{Path: path, data: data, unmap: unmap}
	if err := f.parse(); err != nil {
		unmap()
		return nil, err
	}
	return f, nil
}

type headerEntry struct {
	DType   DType   `json:"dtype"`
	Shape   []int64 `json:"shape"`
	Offsets []int64 `json:"data_offsets"`
}

func (f *File) parse() error {
	n := binary.LittleEndian.Uint64(f.data[:8])
	if n > uint64(len(f.data)-8) {
		return errorf(f.Path, "", ErrCorrupt, "header length %d exceeds the %d bytes after it", n, len(f.data)-8)
	}
	if n > maxHeader {
		return errorf(f.Path, "", ErrCorrupt, "header length %d exceeds %d", n, maxHeader)
	}
	f.base = 8 + int(n)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(f.data[8:f.base], &raw); err != nil {
		return errorf(f.Path, "", ErrCorrupt, "header: %v", err)
	}
	avail := int64(len(f.data) - f.base)
	f.tensors = make(map[string]*Tensor, len(raw))
	type span struct {
		name       string
		begin, end int64
	}
	var spans []span
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &f.Metadata); err != nil {
				return errorf(f.Path, "", ErrCorrupt, "__metadata__: %v", err)
			}
			continue
		}
		var e headerEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return errorf(f.Path, name, ErrCorrupt, "header entry: %v", err)
		}
		es := e.DType.Size()
		if es == 0 {
			return errorf(f.Path, name, ErrDType, "dtype %q is not a safetensors dtype this reader knows", e.DType)
		}
		elems := uint64(1)
		shape := make([]int, len(e.Shape))
		for i, d := range e.Shape {
			if d < 0 {
				return errorf(f.Path, name, ErrCorrupt, "shape %v has a negative dimension", e.Shape)
			}
			hi, lo := bits.Mul64(elems, uint64(d))
			if hi != 0 || lo > uint64(avail) {
				return errorf(f.Path, name, ErrCorrupt, "shape %v is larger than the file", e.Shape)
			}
			elems, shape[i] = lo, int(d)
		}
		if len(e.Offsets) != 2 {
			return errorf(f.Path, name, ErrCorrupt, "data_offsets %v is not [begin, end]", e.Offsets)
		}
		b, en := e.Offsets[0], e.Offsets[1]
		if b < 0 || en < b || en > avail {
			return errorf(f.Path, name, ErrCorrupt, "data_offsets [%d, %d] outside the %d data bytes", b, en, avail)
		}
		if uint64(en-b) != elems*uint64(es) {
			return errorf(f.Path, name, ErrCorrupt, "data_offsets [%d, %d] hold %d bytes, shape %v of %s needs %d", b, en, en-b, e.Shape, e.DType, elems*uint64(es))
		}
		f.tensors[name] = &Tensor{Name: name, DType: e.DType, Shape: shape, File: f.Path, f: f, begin: int(b), end: int(en)}
		spans = append(spans, span{name, b, en})
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].begin < spans[j].begin })
	for i := 1; i < len(spans); i++ {
		if p := spans[i-1]; spans[i].begin < p.end {
			return errorf(f.Path, spans[i].name, ErrCorrupt, "data_offsets overlap those of %q", p.name)
		}
	}
	return nil
}

// Names lists the file's tensors, sorted.
func (f *File) Names() []string {
	names := make([]string, 0, len(f.tensors))
	for n := range f.tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Tensor returns the named tensor, or an error wrapping ErrMissing that names the file.
func (f *File) Tensor(name string) (*Tensor, error) {
	t, ok := f.tensors[name]
	if !ok {
		return nil, errorf(f.Path, name, ErrMissing, "not in the file")
	}
	return t, nil
}

// Close unmaps the file. It may be called more than once.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.data == nil {
		return nil
	}
	f.data = nil
	return f.unmap()
}
