package checkpoint

import (
	"encoding/binary"
	"errors"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func open(t *testing.T, dir string) *Model {
	t.Helper()
	m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func meanStd(v []float32) (float64, float64) {
	var s, s2 float64
	for _, x := range v {
		s += float64(x)
		s2 += float64(x) * float64(x)
	}
	n := float64(len(v))
	mean := s / n
	return mean, math.Sqrt(s2/n - mean*mean)
}

func floats(t *testing.T, tn *Tensor) []float32 {
	t.Helper()
	v, err := tn.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestOpenFixtures(t *testing.T) {
	for _, tc := range []struct {
		dir    string
		dtype  DType
		layers int
		tied   bool
		moe    bool
		rope   string
		maxPos int
		files  int
	}{
		{"tiny", F32, 2, true, false, "default", 2048, 1},
		{"moe", BF16, 2, false, true, "default", 2048, 5},
		{"rope", F16, 1, false, false, "dynamic", 256, 1},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			m := open(t, filepath.Join(fixtures, tc.dir))
			c := m.Config
			if c.HiddenSize != 128 || c.IntermediateSize != 256 || c.NumAttentionHeads != 4 || c.NumKeyValueHeads != 2 ||
				c.HeadDim != 64 || c.KeepWindowSize != 64 || c.VocabSize != 1002 || c.NumHiddenLayers != tc.layers ||
				c.TieWordEmbeddings != tc.tied || c.IsMoE != tc.moe || c.RoPE.Type != tc.rope ||
				c.MaxPositionEmbeddings != tc.maxPos || c.RoPE.Theta != 10000 || c.RMSNormEps != 1e-6 {
				t.Fatalf("config %+v", c)
			}
			if tc.rope == "dynamic" && c.RoPE.Factor != 4 {
				t.Fatalf("rope %+v", c.RoPE)
			}
			if len(m.files) != tc.files {
				t.Fatalf("%d files, want %d", len(m.files), tc.files)
			}
			g := m.Generation
			if !slices.Equal(g.EOSTokenIDs, []int{1, 4}) || g.BOSTokenID != 0 || g.PadTokenID != 2 || g.DoSample || g.MaxNewTokens != 16 || g.TopK != 50 {
				t.Fatalf("generation %+v", g)
			}
			if m.Tokenizer != filepath.Join(fixtures, tc.dir, "tokenizer.json") {
				t.Fatalf("tokenizer %q", m.Tokenizer)
			}
			d, err := m.Doge()
			if err != nil {
				t.Fatal(err)
			}
			if (d.LMHead == d.Embed) != tc.tied || m.Has("lm_head.weight") == tc.tied {
				t.Fatalf("tied %v: lm_head %v, stored %v", tc.tied, d.LMHead.Name, m.Has("lm_head.weight"))
			}
			if len(d.Layers) != tc.layers || (d.Layers[0].RouterGate != nil) != tc.moe {
				t.Fatalf("layers %d, router %v", len(d.Layers), d.Layers[0].RouterGate)
			}
			for _, n := range m.Names() {
				if tn, _ := m.Tensor(n); tn.DType != tc.dtype {
					t.Fatalf("%s is %s, want %s", n, tn.DType, tc.dtype)
				}
			}
			// The script drew norms and gates as 1 + 0.2 N, embeddings as 0.25 N and
			// |A| >= 0.5: a wrong widening of F16 or BF16 would not keep these.
			for _, tn := range []*Tensor{d.Norm, d.Layers[0].InputNorm, d.Layers[0].PostResidual, d.Layers[tc.layers-1].KNorm} {
				if mean, std := meanStd(floats(t, tn)); math.Abs(mean-1) > 0.1 || std < 0.12 || std > 0.28 {
					t.Errorf("%s: mean %v std %v, want about 1 and 0.2", tn.Name, mean, std)
				}
			}
			if mean, std := meanStd(floats(t, d.Embed)); math.Abs(mean) > 0.01 || math.Abs(std-0.25) > 0.01 {
				t.Errorf("embeddings: mean %v std %v, want 0 and 0.25", mean, std)
			}
			for _, l := range d.Layers {
				for _, a := range floats(t, l.A) {
					if math.Abs(float64(a)) < 0.49 {
						t.Errorf("%s has %v, drawn with |A| >= 0.5", l.A.Name, a)
					}
				}
			}
		})
	}
}

func TestReferenceFile(t *testing.T) {
	f, err := OpenFile(filepath.Join(fixtures, "tiny", "reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ids, err := f.Tensor("prompt_ids")
	if err != nil {
		t.Fatal(err)
	}
	v, err := ids.Int64s()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for _, id := range v {
		seen[id] = true
	}
	if len(v) != 300 || v[0] != 0 || len(seen) != 300 {
		t.Fatalf("prompt_ids: %d ids, first %d, %d distinct", len(v), v[0], len(seen))
	}
	lg, _ := f.Tensor("step_logits")
	if err := lg.CheckShape(16, 1002); err != nil {
		t.Fatal(err)
	}
	for _, x := range floats(t, lg) {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			t.Fatal("non-finite logit")
		}
	}
	if _, err := lg.Int64s(); !errors.Is(err, ErrDType) {
		t.Fatalf("F32 as integers: %v", err)
	}
	if _, err := ids.Float32s(); !errors.Is(err, ErrDType) || !strings.Contains(err.Error(), "prompt_ids") {
		t.Fatalf("I32 as floats: %v", err)
	}
}

// halfRef decodes binary16 by its definition, in float64.
func halfRef(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	e, m := int(h>>10)&0x1f, float64(h&0x3ff)
	switch {
	case e == 0x1f && m == 0:
		return sign * math.Inf(1)
	case e == 0x1f:
		return math.NaN()
	case e == 0:
		return sign * math.Ldexp(m, -24)
	}
	return sign * math.Ldexp(1+m/1024, e-15)
}

func TestHalfToFloat32(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		got, want := float64(HalfToFloat32(uint16(h))), halfRef(uint16(h))
		if math.IsNaN(want) {
			if !math.IsNaN(got) {
				t.Fatalf("%#04x: %v, want NaN", h, got)
			}
			continue
		}
		if got != want || math.Signbit(got) != math.Signbit(want) {
			t.Fatalf("%#04x: %v, want %v", h, got, want)
		}
	}
}

func TestBFloat16ToFloat32(t *testing.T) {
	for _, tc := range []struct {
		b    uint16
		want float32
	}{{0x3f80, 1}, {0xc000, -2}, {0x0000, 0}, {0x3e80, 0.25}, {0x4049, 3.140625}, {0x0001, math.Float32frombits(0x10000)}} {
		if got := BFloat16ToFloat32(tc.b); got != tc.want {
			t.Errorf("%#04x: %v, want %v", tc.b, got, tc.want)
		}
	}
	if !math.IsInf(float64(BFloat16ToFloat32(0xff80)), -1) || !math.IsNaN(float64(BFloat16ToFloat32(0x7fc0))) {
		t.Error("bf16 -inf or nan")
	}
}

func f32bytes(v ...float32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func TestFileCorrupt(t *testing.T) {
	dir := t.TempDir()
	good := func(name string) string {
		p := filepath.Join(dir, name)
		writeSafetensors(t, p, []entry{{"w", F32, []int{2, 2}, f32bytes(1, 2, 3, 4)}, {"b", F16, []int{2}, []byte{0, 0x3c, 0, 0xc0}}})
		return p
	}
	p := good("good.safetensors")
	f, err := OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := f.Tensor("w")
	b, _ := f.Tensor("b")
	if v := floats(t, w); !slices.Equal(v, []float32{1, 2, 3, 4}) {
		t.Fatalf("w = %v", v)
	}
	if v := floats(t, b); !slices.Equal(v, []float32{1, -2}) {
		t.Fatalf("b = %v", v)
	}
	f.Close()

	hdr := func(s string) []byte { return []byte(s) }
	for _, tc := range []struct {
		name   string
		header []byte
		body   []byte
		raw    []byte // the whole file instead of header and body
		kind   error
		want   string
	}{
		{name: "empty", raw: []byte{}, kind: ErrCorrupt, want: "shorter than the 8-byte header length"},
		{name: "short", raw: []byte{1, 2, 3, 4}, kind: ErrCorrupt, want: "shorter than the 8-byte header length"},
		{name: "header past end", raw: binary.LittleEndian.AppendUint64(nil, 1000), kind: ErrCorrupt, want: "header length 1000 exceeds"},
		{name: "header huge", raw: binary.LittleEndian.AppendUint64(nil, math.MaxUint64), kind: ErrCorrupt, want: "exceeds"},
		{name: "truncated header", header: hdr(`{"w":{"dtype":"F32","shape":[1],"data_off`), kind: ErrCorrupt, want: "header"},
		{name: "not an object", header: hdr(`[1,2]`), kind: ErrCorrupt, want: "header"},
		{name: "entry not an object", header: hdr(`{"w":5}`), kind: ErrCorrupt, want: `tensor "w"`},
		{name: "end past data", header: hdr(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`), body: make([]byte, 4), kind: ErrCorrupt, want: `tensor "w": corrupt safetensors data: data_offsets [0, 8] outside the 4 data bytes`},
		{name: "begin after end", header: hdr(`{"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`), body: make([]byte, 4), kind: ErrCorrupt, want: "outside"},
		{name: "negative offset", header: hdr(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`), body: make([]byte, 4), kind: ErrCorrupt, want: "outside"},
		{name: "size mismatch", header: hdr(`{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}`), body: make([]byte, 16), kind: ErrCorrupt, want: "hold 12 bytes, shape [2 2] of F32 needs 16"},
		{name: "overlap", header: hdr(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`), body: make([]byte, 12), kind: ErrCorrupt, want: `overlap those of "a"`},
		{name: "negative dim", header: hdr(`{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}`), kind: ErrCorrupt, want: "negative dimension"},
		{name: "overflowing shape", header: hdr(`{"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,0]}}`), kind: ErrCorrupt, want: "larger than the file"},
		{name: "one offset", header: hdr(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}}`), body: make([]byte, 4), kind: ErrCorrupt, want: "not [begin, end]"},
		{name: "unknown dtype", header: hdr(`{"w":{"dtype":"F4","shape":[1],"data_offsets":[0,1]}}`), body: make([]byte, 1), kind: ErrDType, want: `dtype "F4"`},
		{name: "bad metadata", header: hdr(`{"__metadata__":{"a":1}}`), kind: ErrCorrupt, want: "__metadata__"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".safetensors")
			if tc.raw != nil {
				writeRaw(t, p, nil, nil)
				if err := writeFile(p, tc.raw); err != nil {
					t.Fatal(err)
				}
			} else {
				writeRaw(t, p, tc.header, tc.body)
			}
			f, err := OpenFile(p)
			if err == nil {
				f.Close()
				t.Fatal("opened")
			}
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want %v naming %s and saying %q", err, tc.kind, p, tc.want)
			}
		})
	}

	// A good file cut short: the last tensor's range runs past the end.
	full := readFile(t, p)
	cut := filepath.Join(dir, "cut.safetensors")
	if err := writeFile(cut, full[:len(full)-3]); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFile(cut); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("truncated file: %v", err)
	}
}

func TestCloseAndConcurrency(t *testing.T) {
	m, err := Open(filepath.Join(fixtures, "moe"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := m.Doge()
	if err != nil {
		t.Fatal(err)
	}
	want := floats(t, d.Layers[1].UpEmbed)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				v, err := d.Layers[1].UpEmbed.Float32s()
				if err != nil || !slices.Equal(v, want) {
					t.Error("concurrent read differs", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := d.Embed.Bytes(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Bytes after Close: %v", err)
	}
	if _, err := d.Embed.Float32s(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Float32s after Close: %v", err)
	}
}
