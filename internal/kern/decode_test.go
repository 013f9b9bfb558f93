package kern_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/ref"
	"github.com/dmavk/dmavk/vk"
)

// TestDecodeAttention: decode_attn against the float64 reference on a few query rows
// over key sequences of one to several slices, every storage, GQA with both bias-head
// layouts, padding, w = 1 and w >= L, equal weights, softcap, BHLD, NaN in V.
func TestDecodeAttention(t *testing.T) {
	e := newAttnEnv(t)
	row, none := ref.ModeRow, ref.ModeNone
	var cs []attnCase
	for _, lq := range []int{1, 2, 4} {
		for _, lk := range []int{1, 37, 1100, 2500} {
			if lk < lq {
				continue
			}
			cs = append(cs,
				attnCase{name: fmt.Sprintf("row/Lq%d/Lk%d", lq, lk), Lq: lq, Lk: lk, mode: row, causal: true, w: 16},
				attnCase{name: fmt.Sprintf("none/Lq%d/Lk%d", lq, lk), Lq: lq, Lk: lk, mode: none, causal: true})
		}
	}
	cs = append(cs,
		attnCase{name: "none/noncausal", Lq: 3, Lk: 300, mode: none},
		attnCase{name: "row/w1", Lq: 2, Lk: 500, mode: row, causal: true, w: 1},
		attnCase{name: "row/w-ge-L", Lq: 2, Lk: 90, mode: row, causal: true, w: 200},
		attnCase{name: "row/equal", Lq: 4, Lk: 1500, mode: row, causal: true, w: 100, weights: "equal"},
		attnCase{name: "row/ties", Lq: 4, Lk: 700, mode: row, causal: true, w: 50, weights: "ties"},
		attnCase{name: "row/gqa-hbkv/pad", B: 2, H: 4, Hkv: 2, hbKV: true, Lq: 2, Lk: 1200, mode: row, causal: true, w: 40, pad: "rand"},
		attnCase{name: "row/mqa-hb-h/bhld", B: 1, H: 4, Hkv: 1, Lq: 1, Lk: 1300, mode: row, causal: true, w: 64, bhld: true},
		attnCase{name: "row/gqa8-hbkv/Lq2", B: 1, H: 16, Hkv: 2, hbKV: true, Lq: 2, Lk: 1100, mode: row, causal: true, w: 30},
		attnCase{name: "none/gqa8/Lq3", B: 1, H: 8, Hkv: 1, Lq: 3, Lk: 900, mode: none, causal: true},
		attnCase{name: "none/mqa4/Lq3/D32", B: 1, H: 4, Hkv: 1, Lq: 3, Lk: 700, D: 32, mode: none, causal: true},
		attnCase{name: "row/softcap/D128", Lq: 2, Lk: 600, D: 128, mode: row, causal: true, w: 32, softcap: 3},
		attnCase{name: "row/f16", Lq: 3, Lk: 1100, mode: row, causal: true, w: 30, f16: true},
		// Grids sized for longer caches (repeated steps reuse one recording as Lk grows).
		attnCase{name: "row/f16/grid200K", Lq: 1, Lk: 1700, mode: row, causal: true, w: 300, f16: true, maxLk: 200000},
		attnCase{name: "none/gqa/grid5K", H: 4, Hkv: 2, Lq: 2, Lk: 333, mode: none, causal: true, maxLk: 5000},
		attnCase{name: "none/bf16/D96", Lq: 1, Lk: 1025, D: 96, mode: none, causal: true, bf16: true},
		attnCase{name: "none/D256", Lq: 2, Lk: 700, D: 256, mode: none, causal: true},
		attnCase{name: "row/bf16/D256/gqa-hbkv", H: 4, Hkv: 1, hbKV: true, Lq: 3, Lk: 900, D: 256, mode: row, causal: true, w: 50, bf16: true},
		attnCase{name: "row/D32/softcap", Lq: 4, Lk: 800, D: 32, mode: row, causal: true, w: 60, softcap: 2},
		// Head dimensions whose quarter has few factors of two: narrower teams.
		attnCase{name: "none/D8", Lq: 2, Lk: 400, D: 8, mode: none, causal: true},
		attnCase{name: "row/f16/D24", Lq: 3, Lk: 700, D: 24, mode: row, causal: true, w: 70, f16: true},
		attnCase{name: "row/bf16/D136", Lq: 1, Lk: 500, D: 136, mode: row, causal: true, w: 40, bf16: true},
		attnCase{name: "none/D160", H: 4, Hkv: 1, hbKV: true, Lq: 2, Lk: 450, D: 160, mode: none, causal: true},
		attnCase{name: "err/D12", Lq: 1, Lk: 20, D: 12, mode: none, causal: true, wantErr: "multiple of 8"},
		attnCase{name: "row/nan-v", Lq: 2, Lk: 200, mode: row, causal: true, w: 8, nanKey: 196, weights: "equal"},
		attnCase{name: "err/explicit", Lq: 2, Lk: 20, mode: ref.ModeExplicit, causal: true, maskShape: []int{1, 1, 2, 20},
			wantErr: "row or shared with causality, or none"},
		attnCase{name: "err/rows", Lq: 5, Lk: 20, mode: none, causal: true, wantErr: "query rows"},
	)
	for _, rows := range []uint32{0, 16} {
		// 0: the device's choice (4 rows on lavapipe's narrow subgroups); 16: the GPU's,
		// so that up to 16 query heads share a workgroup here too.
		restore := kern.SetDecodeRows(rows)
		for _, c := range cs {
			c.decode = true
			if !strings.Contains(c.name, "nan") {
				c.nanKey = -1
			}
			t.Run(fmt.Sprintf("rows%d/%s", rows, c.name), func(t *testing.T) { runAttnCase(t, e, c) })
		}
		restore()
	}
}

// TestDecodeLongSlices: one slice per workgroup (DMAVK_DECODE_GROUPS=1), so a slice spans
// many compaction windows: sparse rows gather kept keys over several windows, dense ones
// fill the list and process it mid-slice.
func TestDecodeLongSlices(t *testing.T) {
	t.Setenv("DMAVK_DECODE_GROUPS", "1")
	e := newAttnEnv(t)
	row, none := ref.ModeRow, ref.ModeNone
	cs := []attnCase{
		{name: "none/Lq2/Lk5000", B: 1, Lq: 2, Lk: 5000, mode: none, causal: true},
		{name: "none/noncausal/f16/D96", B: 1, H: 2, Hkv: 1, hbKV: true, Lq: 1, Lk: 3100, D: 96, mode: none, f16: true},
		{name: "row/Lq4/Lk6000", B: 1, Lq: 4, Lk: 6000, mode: row, causal: true, w: 700},
		{name: "row/gqa-hb-h/Lq2", B: 1, H: 4, Hkv: 1, Lq: 2, Lk: 4500, mode: row, causal: true, w: 300, pad: "rand"},
		{name: "row/gqa-hbkv/Lq3/D128", B: 1, H: 8, Hkv: 2, hbKV: true, Lq: 3, Lk: 4200, D: 128, mode: row, causal: true, w: 90},
	}
	for _, rows := range []uint32{0, 16} {
		restore := kern.SetDecodeRows(rows)
		for _, c := range cs {
			c.decode, c.nanKey = true, -1
			t.Run(fmt.Sprintf("rows%d/%s", rows, c.name), func(t *testing.T) { runAttnCase(t, e, c) })
		}
		restore()
	}
}

// TestDecodeShared: D = 248 (teams of 2 lanes, 31 quads each) runs with 4 rows per
// workgroup; with 16 its shared memory passes lavapipe's 32 KB and DecodeTakes says so.
func TestDecodeShared(t *testing.T) {
	e := newAttnEnv(t)
	for _, rows := range []uint32{4, 16} {
		restore := kern.SetDecodeRows(rows)
		c := attnCase{name: "none/D248", H: 4, Hkv: 1, hbKV: true, Lq: 1, Lk: 300, D: 248, mode: ref.ModeNone, causal: true,
			decode: true, nanKey: -1}
		if rows == 16 && e.d.Caps().MaxSharedMemory <= 32<<10 {
			c.wantErr = "shared memory"
		}
		t.Run(fmt.Sprintf("rows%d", rows), func(t *testing.T) { runAttnCase(t, e, c) })
		restore()
	}
}

// runDecode records RecordDecode of p once and submits it runs times, returning O and
// LSE (their bytes, concatenated) after each submission.
func runDecode(t *testing.T, e *attnEnv, p *kern.Params, q, k, v []byte, ord []uint32, runs int) [][]byte {
	t.Helper()
	bufs := &kern.AttnBuffers{Q: e.buffer(t, q), K: e.buffer(t, k), V: e.buffer(t, v), Ord: e.buffer(t, attnU32Bytes(ord)),
		O: e.buffer(t, make([]byte, 4*p.B*p.Lq*p.H*p.D)), LSE: e.buffer(t, make([]byte, 4*p.B*p.H*p.Lq))}
	params := e.buffer(t, p.Bytes())
	part := e.buffer(t, make([]byte, e.k.DecodePartSize(p, 0)))
	prog, err := e.d.Record(func(r *vk.Recorder) error { return e.k.RecordDecode(r, p, params, bufs, part, 0) })
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	var out [][]byte
	for range runs {
		if err := prog.Submit(context.Background()); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, bufs.O.Size()+bufs.LSE.Size())
		if err := bufs.O.Download(context.Background(), 0, got[:bufs.O.Size()]); err != nil {
			t.Fatal(err)
		}
		if err := bufs.LSE.Download(context.Background(), 0, got[bufs.O.Size():]); err != nil {
			t.Fatal(err)
		}
		for x := bufs.O.Size(); x < int64(len(got)); x += 4 {
			if l := math.Float32frombits(binary.LittleEndian.Uint32(got[x:])); l == 0 || math.IsNaN(float64(l)) || math.IsInf(float64(l), 0) {
				t.Fatalf("LSE %v: every row keeps keys here", l)
			}
		}
		out = append(out, got)
	}
	return out
}

// decodeProblem is a mode-none problem [B, L, H, D] (contiguous) with random q, k, v and
// weights (Hb = Hkv).
func decodeProblem(st kern.Storage, lq, lk, h, hkv, d int) (p *kern.Params, q, k, v []float32, ord []uint32) {
	rng := rand.New(rand.NewPCG(uint64(lk), uint64(d)))
	floats := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(2*rng.Float64() - 1)
		}
		return x
	}
	ord = make([]uint32, hkv*lk)
	for i := range ord {
		ord[i] = kern.Ord(float32(4 * (2*rng.Float64() - 1)))
	}
	view := func(l, h int) kern.View { return kern.View{SB: uint32(l * h * d), SL: uint32(h * d), SH: uint32(d)} }
	p = &kern.Params{B: 1, Lq: uint32(lq), Lk: uint32(lk), H: uint32(h), Hkv: uint32(hkv), Hb: uint32(hkv), D: uint32(d),
		G: uint32(h / hkv), Mode: uint32(ref.ModeNone), Causal: 1, Storage: st, PosOffset: int32(lk - lq),
		Scale: 0.125, Q: view(lq, h), K: view(lk, hkv), V: view(lk, hkv), O: view(lq, h)}
	return p, floats(lq * h * d), floats(lk * hkv * d), floats(lk * hkv * d), ord
}

// TestDecodeOddOffsets: 16-bit K and V whose rows start mid-word (odd element offsets)
// give the same bits as the same values stored word-aligned.
func TestDecodeOddOffsets(t *testing.T) {
	e := newAttnEnv(t)
	for _, st := range []kern.Storage{kern.StorageF16, kern.StorageBF16} {
		p, q, k, v, ord := decodeProblem(st, 2, 900, 4, 2, 96)
		want := runDecode(t, e, p, attnEncodeFloats(q, st), attnEncodeFloats(k, st), attnEncodeFloats(v, st), ord, 1)[0]
		po := *p
		po.K.Off, po.V.Off = 1, 3
		shift := func(x []float32, n int) []float32 { return append(make([]float32, n), x...) }
		got := runDecode(t, e, &po, attnEncodeFloats(q, st), attnEncodeFloats(shift(k, 1), st), attnEncodeFloats(shift(v, 3), st), ord, 1)[0]
		if !bytes.Equal(got, want) {
			t.Errorf("%v: odd offsets give other bits than aligned ones", st)
		}
	}
}

// TestDecodeDeterministic: one recording submitted twice gives bit-identical O and LSE.
func TestDecodeDeterministic(t *testing.T) {
	e := newAttnEnv(t)
	p, q, k, v, ord := decodeProblem(kern.StorageF32, 2, 3000, 8, 2, 64)
	st := p.Storage
	out := runDecode(t, e, p, attnEncodeFloats(q, st), attnEncodeFloats(k, st), attnEncodeFloats(v, st), ord, 2)
	if !bytes.Equal(out[0], out[1]) {
		t.Fatal("a second submission gave different bits")
	}
}
