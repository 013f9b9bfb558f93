package checkpoint

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

const fixtures = "../testdata/doge"

// entry is one tensor to write into a safetensors file.
type entry struct {
	name  string
	dtype DType
	shape []int
	data  []byte
}

// writeSafetensors writes entries as a well-formed safetensors file, in name order.
func writeSafetensors(t *testing.T, path string, entries []entry) {
	t.Helper()
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var body []byte
	for _, e := range entries {
		header[e.name] = map[string]any{"dtype": e.dtype, "shape": e.shape,
			"data_offsets": []int{len(body), len(body) + len(e.data)}}
		body = append(body, e.data...)
	}
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	writeRaw(t, path, h, body)
}

// writeRaw writes a header length, the header bytes and the body as they are.
func writeRaw(t *testing.T, path string, header, body []byte) {
	t.Helper()
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	out = append(append(out, header...), body...)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readEntries reads every tensor of a safetensors file.
func readEntries(t *testing.T, path string) []entry {
	t.Helper()
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []entry
	for _, n := range f.Names() {
		tn, _ := f.Tensor(n)
		b, err := tn.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{n, tn.DType, append([]int(nil), tn.Shape...), append([]byte(nil), b...)})
	}
	return out
}

// copyDir copies a fixture model directory into a temporary one.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// editJSON rewrites a JSON file through fn.
func editJSON(t *testing.T, path string, fn func(map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeFile(p string, b []byte) error { return os.WriteFile(p, b, 0o644) }

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
