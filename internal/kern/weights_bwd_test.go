package kern_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/ref"
	"github.com/dmavk/dmavk/vk"
)

type weightsBwdCase struct {
	B, Lk, Hkv, D, Hb int
	st                kern.Storage
	bdt, bhld         bool
	form              ref.WeightForm
	accumulate        bool // dV already holds values: the term must be added to them
	// nonFinite: a NaN and an infinity in V at keys whose dDelta is 0 in every bias
	// head (a padded key): they reach no gradient; "kept": the same keys with nonzero
	// dDelta, whose NaN reaches dA, dWdt, dbdt and the keys' own dV.
	nonFinite string
}

func (c weightsBwdCase) String() string {
	return fmt.Sprintf("B%d/Lk%d/Hkv%d/D%d/Hb%d/%v/bdt=%v/bhld=%v/%v/acc=%v/%s", c.B, c.Lk, c.Hkv, c.D, c.Hb, c.st, c.bdt, c.bhld, c.form, c.accumulate, c.nonFinite)
}

// TestWeightsBackward checks RecordWeightsBackward against ref.WeightsBackward at the
// very inputs the device reads (V rounded to its storage, float32 parameters and dDelta).
func TestWeightsBackward(t *testing.T) {
	e := newAttnEnv(t)
	var cases []weightsBwdCase
	for _, form := range []ref.WeightForm{ref.FormExp, ref.FormLinear} {
		cases = append(cases,
			weightsBwdCase{B: 2, Lk: 37, Hkv: 2, D: 16, Hb: 2, st: kern.StorageF32, bdt: true, form: form},
			weightsBwdCase{B: 1, Lk: 70, Hkv: 2, D: 32, Hb: 8, st: kern.StorageF32, form: form, bhld: true, accumulate: true},
			weightsBwdCase{B: 2, Lk: 5, Hkv: 1, D: 8, Hb: 1, st: kern.StorageF16, bdt: true, form: form},
			weightsBwdCase{B: 2, Lk: 65, Hkv: 4, D: 8, Hb: 4, st: kern.StorageBF16, bdt: true, form: form, accumulate: true},
			// B*Lk = 600: three segments of partial sums.
			weightsBwdCase{B: 2, Lk: 300, Hkv: 2, D: 8, Hb: 2, st: kern.StorageF32, bdt: true, form: form},
			// Non-finite V (spec section 7).
			weightsBwdCase{B: 2, Lk: 300, Hkv: 2, D: 8, Hb: 4, st: kern.StorageF32, bdt: true, form: form, nonFinite: "padded"},
			weightsBwdCase{B: 2, Lk: 37, Hkv: 2, D: 16, Hb: 2, st: kern.StorageF16, bdt: true, form: form, nonFinite: "padded", accumulate: true},
			weightsBwdCase{B: 2, Lk: 37, Hkv: 2, D: 16, Hb: 2, st: kern.StorageBF16, bdt: true, form: form, nonFinite: "kept"},
		)
	}
	for _, c := range cases {
		t.Run(c.String(), func(t *testing.T) { runWeightsBwd(t, e, c) })
	}
}

func runWeightsBwd(t *testing.T, e *attnEnv, c weightsBwdCase) {
	seed := uint64(c.B*1000003 + c.Lk*1009 + c.Hb*31 + c.D + int(c.form)*7 + int(c.st)*13)
	rng := rand.New(rand.NewPCG(seed, 3))
	K := c.Hkv * c.D
	v := ref.RandTensor4(rng, c.B, c.Lk, c.Hkv, c.D, 1)
	attnRound(v.Data, c.st)
	wp := ref.WeightParams{Wdt: ref.Round32(ref.RandSlice(rng, K*c.Hb, 0.2)), A: ref.Round32(ref.RandSlice(rng, c.Hb, 1)),
		Hb: c.Hb, Form: c.form}
	if c.bdt {
		wp.Bdt = ref.Round32(ref.RandSlice(rng, c.Hb, 1))
	}
	dDelta := ref.Round32(ref.RandSlice(rng, c.B*c.Hb*c.Lk, 1))
	if c.nonFinite != "" {
		for b, j := range []int{rng.IntN(c.Lk), rng.IntN(c.Lk)}[:c.B] {
			v.Set(b, j, rng.IntN(c.Hkv), rng.IntN(c.D), math.NaN())
			v.Set(b, j, rng.IntN(c.Hkv), rng.IntN(c.D), math.Inf(1-2*rng.IntN(2)))
			for hb := range c.Hb {
				if c.nonFinite == "padded" {
					dDelta[(b*c.Hb+hb)*c.Lk+j] = 0
				}
			}
		}
	}
	dA, dW, dB, dV := ref.WeightsBackward(v, wp, dDelta)
	if c.nonFinite == "padded" {
		for _, x := range [][]float64{dA, dW, dB, dV.Data} {
			for i, y := range x {
				if math.IsNaN(y) || math.IsInf(y, 0) {
					t.Fatalf("reference gradient [%d] = %v: a key with dDelta 0 reached it", i, y)
				}
			}
		}
	} else if c.nonFinite == "kept" && !math.IsNaN(dA[0]) {
		t.Fatalf("reference dA = %v: the kept NaN did not reach it", dA)
	}

	ac := attnCase{D: c.D, bhld: c.bhld}
	vView := attnViewOf(&ac, c.Lk, c.Hkv)
	p := &kern.Params{B: uint32(c.B), Lk: uint32(c.Lk), Hkv: uint32(c.Hkv), Hb: uint32(c.Hb), D: uint32(c.D),
		Storage: c.st, V: vView, Form: uint32(c.form), HasBdt: c.bdt}
	f32 := func(x []float64) []byte { return attnEncodeFloats(ref.ToFloat32Slice(x), kern.StorageF32) }
	// dV starts as NaN outside the view and as base inside it.
	base := make([]float64, len(dV.Data))
	dvView := attnViewOf(&ac, c.Lk, c.Hkv)
	dvVals := make([]float32, attnViewIndex(dvView, c.B-1, c.Lk-1, c.Hkv-1, c.D-1)+1)
	for i := range dvVals {
		dvVals[i] = float32(math.NaN())
	}
	for b := range c.B {
		for j := range c.Lk {
			for h := range c.Hkv {
				for d := range c.D {
					x := 0.0
					if c.accumulate {
						x = float64(rng.IntN(9)-4) / 4 // exact in float32
					}
					base[dV.Index(b, j, h, d)] = x
					dvVals[attnViewIndex(dvView, b, j, h, d)] = float32(x)
				}
			}
		}
	}
	b := &kern.WeightsBwdBuffers{
		V: e.buffer(t, attnEncodeTensor(v, vView, c.st)), Wdt: e.buffer(t, f32(wp.Wdt)), A: e.buffer(t, f32(wp.A)),
		DDelta: e.buffer(t, f32(dDelta)),
		DA:     e.buffer(t, make([]byte, 4*c.Hb)), DWdt: e.buffer(t, make([]byte, 4*K*c.Hb)),
		DV: e.buffer(t, attnEncodeFloats(dvVals, kern.StorageF32)), DVView: dvView,
	}
	if c.bdt {
		b.Bdt = e.buffer(t, f32(wp.Bdt))
		b.DBdt = e.buffer(t, make([]byte, 4*c.Hb))
	}
	b.Scratch = e.buffer(t, make([]byte, kern.WeightsBwdScratchSize(p)))
	params := e.buffer(t, make([]byte, kern.ParamsSize))
	run := func() [][]byte {
		err := e.d.Run(context.Background(), func(r *vk.Recorder) error {
			if err := r.Update(params, 0, p.Bytes()); err != nil {
				return err
			}
			r.Barrier()
			return e.k.RecordWeightsBackward(r, p, params, b)
		})
		if err != nil {
			t.Fatal(err)
		}
		var out [][]byte
		for _, buf := range []*vk.Buffer{b.DA, b.DWdt, b.DBdt, b.DV} {
			if buf == nil {
				out = append(out, nil)
				continue
			}
			raw := make([]byte, buf.Size())
			if err := buf.Download(context.Background(), 0, raw); err != nil {
				t.Fatal(err)
			}
			out = append(out, raw)
		}
		return out
	}
	raw := run()
	dec := func(raw []byte) []float64 {
		out := make([]float64, len(raw)/4)
		for i := range out {
			out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
		}
		return out
	}
	gotDV := make([]float64, len(dV.Data))
	dvAll := dec(raw[3])
	for bb := range c.B {
		for j := range c.Lk {
			for h := range c.Hkv {
				for d := range c.D {
					at := dV.Index(bb, j, h, d)
					gotDV[at] = dvAll[attnViewIndex(dvView, bb, j, h, d)] - base[at]
				}
			}
		}
	}
	// float32 throughout against float64: dt to a few ulp of the sum of |Vf| |Wdt|, the
	// exp and sigmoid to a few ulp, sums of at most a few hundred terms; adding the term
	// to base rounds to an ulp of base (<= 1), at most 6e-8 absolute.
	const tol = 2e-5
	for _, x := range []struct {
		name      string
		got, want []float64
	}{{"dA", dec(raw[0]), dA}, {"dWdt", dec(raw[1]), dW}, {"dBdt", nil, dB}, {"dV", gotDV, dV.Data}} {
		if x.name == "dBdt" {
			if !c.bdt {
				continue
			}
			x.got = dec(raw[2])
		}
		x.got = x.got[:len(x.want)]
		if rel := ref.RelErr(x.got, x.want); !(rel <= tol) {
			t.Errorf("%s relative error %.3g > %.3g (got %v, want %v)", x.name, rel, tol, x.got[:min(4, len(x.got))], x.want[:min(4, len(x.want))])
		} else {
			t.Logf("%s rel err %.2e", x.name, rel)
		}
	}
	// The outputs are bit-identical from run to run (dV's adds aside: run it on a fresh
	// base, so compare the parameter gradients only).
	again := run()
	for i := range 3 {
		if string(again[i]) != string(raw[i]) {
			t.Errorf("output %d (dA, dWdt, dBdt) differs between two runs", i)
		}
	}
}
