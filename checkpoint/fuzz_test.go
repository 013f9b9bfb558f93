package checkpoint

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpenFile: any bytes open as a checked file or fail with this package's error;
// nothing panics, and every tensor of a file that opens reads within it.
func FuzzOpenFile(f *testing.F) {
	good, err := os.ReadFile(filepath.Join(fixtures, "rope", "reference.safetensors"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:100])
	f.Add([]byte{})
	hdr := []byte(`{"w":{"dtype":"BF16","shape":[2,1],"data_offsets":[0,4]},"__metadata__":{"k":"v"}}`)
	f.Add(append(append(binary.LittleEndian.AppendUint64(nil, uint64(len(hdr))), hdr...), 1, 2, 3, 4))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "f.safetensors")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		file, err := OpenFile(p)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not a *checkpoint.Error", err)
			}
			return
		}
		defer file.Close()
		for _, n := range file.Names() {
			tn, _ := file.Tensor(n)
			b, err := tn.Bytes()
			if err != nil || len(b) != tn.Elems()*tn.DType.Size() {
				t.Fatalf("%s: %d bytes for %v %s, %v", n, len(b), tn.Shape, tn.DType, err)
			}
			if tn.DType.IsFloat() {
				if _, err := tn.Float32s(); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}
