package kern_test

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/ref"
)

// Non-finite inputs (spec section 7) on every attention path: runAttnCase with
// attnCase.inject puts NaN and infinities at fresh random places of the inputs, and
// checkNonFinite asks for exactly the reference's NaNs and infinities (rows that keep a
// non-finite key or read a non-finite query: NaN O and LSE, or NaN O elements for a
// NaN in V) and the reference's values, within the dtype's tolerance, everywhere else.

// freshSeed is DMAVK_SEED when set, else the clock; it is logged for a rerun.
func freshSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("DMAVK_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatalf("DMAVK_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with DMAVK_SEED=%d)", seed, seed)
	return seed
}

var nonFiniteValues = []float64{math.NaN(), math.Inf(1), math.Inf(-1)}

// injectNonFinite sets a few elements of the inputs that what names ("q", "k", "v", "w"
// for the weights, "all"; several may be joined by "+") to NaN, +inf or -inf, at random
// places that matter (the first one a NaN): query rows that keep some key, keys that some row keeps (by the
// selection of the finite weights), and first of all a NaN or +inf weight (ranked
// first; -inf ones may follow); all in the first B - 1 batches.
func injectNonFinite(t *testing.T, rng *rand.Rand, what string, q, k, v *ref.Tensor4, delta []float64, hb int, opts ref.Options) {
	t.Helper()
	has := func(x string) bool { return what == "all" || strings.Contains("+"+what+"+", "+"+x+"+") }
	pick := func() float64 { return nonFiniteValues[rng.IntN(len(nonFiniteValues))] }
	s := ref.ShapeOf(q, k)
	keep, err := ref.Keep(delta, hb, s, opts)
	if err != nil {
		t.Fatal(err)
	}
	var rows, keys [][3]int // (b, i, h) rows that keep a key; (b, j, kvh) keys some row keeps
	seen := map[[3]int]bool{}
	// Not the last batch (when there are several), so that some rows always stay finite.
	for b := range min(s.B, max(s.B-1, 1)) {
		for h := range s.H {
			for i := range s.Lq {
				any := false
				for j := range s.Lk {
					if keep[((b*s.H+h)*s.Lq+i)*s.Lk+j] {
						any = true
						if key := [3]int{b, j, s.KVHead(h)}; !seen[key] {
							seen[key] = true
							keys = append(keys, key)
						}
					}
				}
				if any {
					rows = append(rows, [3]int{b, i, h})
				}
			}
		}
	}
	if len(rows) == 0 {
		t.Fatal("no row keeps a key")
	}
	for _, x := range []struct {
		name string
		t    *ref.Tensor4
		at   [][3]int
	}{{"q", q, rows}, {"k", k, keys}, {"v", v, keys}} {
		if !has(x.name) {
			continue
		}
		for n := range 1 + rng.IntN(3) {
			at := x.at[rng.IntN(len(x.at))]
			val := pick()
			if n == 0 {
				val = math.NaN() // visible whatever the signs: the case tests something
			}
			if d := rng.IntN(x.t.D); isFinite(x.t.At(at[0], at[1], at[2], d)) { // never undo an earlier one
				x.t.Set(at[0], at[1], at[2], d, val)
			}
		}
	}
	if has("w") {
		for n := range 1 + rng.IntN(3) {
			x := pick()
			if n == 0 {
				x = nonFiniteValues[rng.IntN(2)] // NaN or +inf
			}
			// A key some row keeps, or any key (-inf weights drop out of the ranking).
			key := keys[rng.IntN(len(keys))]
			c := s.BiasHead(key[2]*s.Group(), hb)
			if hb == s.H {
				c = key[2]*s.Group() + rng.IntN(s.Group())
			}
			if at := (key[0]*hb+c)*s.Lk + key[1]; isFinite(delta[at]) {
				delta[at] = x
			}
		}
	}
}

// sameClass reports whether got and want are both NaN, both the same infinity, or both
// finite.
func sameClass(got, want float64) bool {
	switch {
	case math.IsNaN(want):
		return math.IsNaN(got)
	case math.IsInf(want, 0):
		return got == want
	}
	return !math.IsNaN(got) && !math.IsInf(got, 0)
}

// checkNonFinite compares the GPU's O and LSE with the reference's element by element:
// the same non-finite class everywhere (a NaN nowhere else), the dtype tolerance on the
// finite values. It fails a case that shows no NaN at all, or nothing finite, since
// that would test nothing.
func checkNonFinite(t *testing.T, c *attnCase, p *kern.Params, oRef *ref.Tensor4, lseRef []float64, oRaw, lseRaw []byte) {
	t.Helper()
	got := make([]float64, len(oRef.Data))
	want := make([]float64, len(oRef.Data))
	nanRows, finiteRows, bad := 0, 0, 0
	for b := range c.B {
		for h := range c.H {
			for i := range c.Lq {
				li := (b*c.H+h)*c.Lq + i
				gl := float64(math.Float32frombits(binary.LittleEndian.Uint32(lseRaw[4*li:])))
				wl := lseRef[li]
				switch {
				case !sameClass(gl, wl):
					t.Errorf("LSE[b=%d h=%d i=%d] = %v, want %v", b, h, i, gl, wl)
					bad++
				case !math.IsNaN(wl) && !math.IsInf(wl, 0) && math.Abs(gl-wl) > c.lseAbs+c.lseRel*math.Abs(wl):
					t.Errorf("LSE[b=%d h=%d i=%d] = %v, want %v", b, h, i, gl, wl)
					bad++
				}
				rowNaN := math.IsNaN(wl)
				for d := range c.D {
					x := oRef.Index(b, i, h, d)
					g := attnDecode(oRaw, attnViewIndex(p.O, b, i, h, d), p.Storage)
					w := oRef.Data[x]
					rowNaN = rowNaN || math.IsNaN(w)
					if !sameClass(g, w) {
						if bad < 20 {
							t.Errorf("O[b=%d i=%d h=%d d=%d] = %v, want %v (LSE %v, want %v)", b, i, h, d, g, w, gl, wl)
						}
						bad++
						continue
					}
					if !math.IsNaN(w) && !math.IsInf(w, 0) {
						got[x], want[x] = g, w
					}
				}
				if rowNaN {
					nanRows++
				} else if !math.IsInf(wl, -1) {
					finiteRows++
				}
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d values of the wrong class (inject %q)", bad, c.inject)
	}
	if nanRows == 0 || finiteRows == 0 {
		t.Fatalf("%d rows with NaN, %d finite rows that keep a key: the case tests nothing (inject %q)", nanRows, finiteRows, c.inject)
	}
	if rel := ref.RelErr(got, want); rel > c.relTol {
		t.Errorf("O relative error %.3g > %.3g on the finite values", rel, c.relTol)
	}
	t.Logf("%d rows with NaN, %d finite rows", nanRows, finiteRows)
}

// nonFiniteCases are the forward cases every path runs with non-finite inputs: every
// mode, causal and not, Lq != Lk, GQA, padding, softcap, several chunks per tile.
func nonFiniteCases() []attnCase {
	row, shared, none, expl := ref.ModeRow, ref.ModeShared, ref.ModeNone, ref.ModeExplicit
	var cs []attnCase
	for _, what := range []string{"q", "k", "v", "w", "all"} {
		cs = append(cs,
			attnCase{name: "row/causal/L130/" + what, Lq: 130, mode: row, causal: true, w: 16, inject: what},
			attnCase{name: "row/noncausal/L65/" + what, Lq: 65, mode: row, w: 8, inject: what},
			attnCase{name: "shared/causal/Lq100-Lk33/" + what, Lq: 100, Lk: 33, mode: shared, causal: true, w: 5, inject: what},
			attnCase{name: "none/causal/L70/bhld/" + what, Lq: 70, mode: none, causal: true, hbKV: true, bhld: true, inject: what},
			attnCase{name: "row/multiblock/pad/" + what, B: 2, H: 2, Hkv: 1, Lq: 300, mode: row, causal: true, w: 40, pad: "rand", inject: what},
		)
	}
	cs = append(cs,
		attnCase{name: "row/softcap/all", Lq: 65, mode: row, causal: true, w: 16, softcap: 2, inject: "all"},
		attnCase{name: "row/MQA/Lq7-Lk130/all", Lq: 7, Lk: 130, H: 4, Hkv: 1, mode: row, causal: true, w: 16, inject: "all"},
		attnCase{name: "explicit/causal/q+v", Lq: 65, mode: expl, causal: true, maskShape: []int{2, 1, 65, 65}, biasShape: []int{1, 4, 1, 65}, inject: "q+v"},
		attnCase{name: "explicit/noncausal/k", Lq: 40, mode: expl, maskShape: []int{1, 2, 40, 40}, inject: "k"},
	)
	return cs
}

func TestAttentionNonFinite(t *testing.T) {
	e := newAttnEnv(t)
	e.k.SetPortableOnly(true) // the coopmat tests take fp16 (and bf16) there
	defer e.k.SetPortableOnly(false)
	for _, c := range nonFiniteCases() {
		for _, st := range []string{"f32", "f16", "bf16"} {
			c := c
			c.name += "/" + st
			c.f16, c.bf16 = st == "f16", st == "bf16"
			c.wantPath = kern.PathPortable
			t.Run(c.name, func(t *testing.T) { runAttnCase(t, e, c) })
		}
	}
}

func TestAttentionCoopMatNonFinite(t *testing.T) {
	e := attnCMEnv(t)
	e.k.SetNoCoopMat2(true)
	defer e.k.SetNoCoopMat2(false)
	for _, c := range nonFiniteCases() {
		c.f16 = true
		c.wantPath = kern.PathCoopMat
		t.Run(c.name, func(t *testing.T) { runAttnCase(t, e, c) })
	}
}

func TestAttentionCoopMat2NonFinite(t *testing.T) {
	e := attnCM2Env(t)
	caps := e.d.Caps()
	tile, _ := kern.AttnCM2Tiling(&caps, 64)
	for _, c := range nonFiniteCases() {
		if c.mode == ref.ModeExplicit {
			continue // the KHR kernel's
		}
		for _, bf := range []bool{false, true} {
			c := c
			c.f16, c.bf16 = !bf, bf
			if bf {
				c.name += "/bf16"
			}
			lk := c.Lk
			if lk == 0 {
				lk = c.Lq
			}
			if c.mode != ref.ModeNone || (c.off%8 == 0 && lk >= tile.BC) {
				c.wantPath = kern.PathCoopMat2
			}
			t.Run(c.name, func(t *testing.T) {
				if bf && e.k.AttentionPath(&kern.Params{Storage: kern.StorageBF16, D: 64, Mode: kern.ModeRow}) != kern.PathCoopMat2 {
					t.Skip("no bf16 cooperative matrices")
				}
				runAttnCase(t, e, c)
			})
		}
	}
}

func TestDecodeNonFinite(t *testing.T) {
	e := newAttnEnv(t)
	row, none := ref.ModeRow, ref.ModeNone
	var cs []attnCase
	for _, what := range []string{"q", "k", "v", "w", "all"} {
		cs = append(cs,
			attnCase{name: "row/Lq1/Lk1100/" + what, Lq: 1, Lk: 1100, mode: row, causal: true, w: 16, H: 8, Hkv: 2, inject: what},
			attnCase{name: "row/Lq4/Lk700/f16/" + what, Lq: 4, Lk: 700, mode: row, causal: true, w: 50, f16: true, inject: what},
			attnCase{name: "row/Lq2/Lk900/pad/" + what, Lq: 2, Lk: 900, mode: row, causal: true, w: 30, pad: "rand", H: 8, Hkv: 1, hbKV: true, inject: what},
			attnCase{name: "none/Lq3/Lk400/bf16/" + what, Lq: 3, Lk: 400, mode: none, causal: true, bf16: true, H: 8, Hkv: 2, inject: what},
		)
	}
	cs = append(cs, attnCase{name: "row/softcap/all", Lq: 2, Lk: 600, mode: row, causal: true, w: 32, softcap: 3, H: 8, Hkv: 2, inject: "all"})
	for _, c := range cs {
		c.decode = true
		t.Run(c.name, func(t *testing.T) { runAttnCase(t, e, c) })
	}
}

// TestBackwardNonFinite: both modes of RecordBackward against ref.Backward with NaN and
// infinities in q, k, v and the weights (the plan built on the device): NaN exactly
// where the reference has one (rows whose forward is NaN, and the keys they keep), the
// reference's values elsewhere.
func TestBackwardNonFinite(t *testing.T) {
	e := newAttnEnv(t)
	row, shared, none, expl := ref.ModeRow, ref.ModeShared, ref.ModeNone, ref.ModeExplicit
	var cs []attnCase
	for _, what := range []string{"q", "k", "v", "w", "all"} {
		cs = append(cs,
			attnCase{name: "row/causal/L130/" + what, Lq: 130, mode: row, causal: true, w: 16, inject: what},
			attnCase{name: "shared/causal/Lq100-Lk33/" + what, Lq: 100, Lk: 33, mode: shared, causal: true, w: 5, inject: what},
			attnCase{name: "none/noncausal/L65/f16/" + what, Lq: 65, mode: none, hbKV: true, f16: true, inject: what},
			attnCase{name: "row/multiblock/pad/bf16/" + what, B: 2, H: 2, Hkv: 1, Lq: 300, mode: row, causal: true, w: 40, pad: "rand", bf16: true, inject: what},
		)
	}
	cs = append(cs,
		attnCase{name: "row/softcap/all", Lq: 65, mode: row, causal: true, w: 16, softcap: 2, inject: "all"},
		attnCase{name: "explicit/causal/q+v", Lq: 65, mode: expl, causal: true, maskShape: []int{2, 1, 65, 65}, biasShape: []int{1, 4, 1, 65}, inject: "q+v"},
	)
	for _, c := range cs {
		t.Run(c.name, func(t *testing.T) {
			pr := newBwdProblem(t, e, c)
			for _, det := range []bool{false, true} {
				g := pr.run(t, e, det)
				t.Logf("deterministic=%v", det)
				pr.check(t, g, bwdTol(&pr.c))
			}
		})
	}
}

func isFinite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
