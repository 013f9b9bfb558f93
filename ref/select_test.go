package ref_test

import (
	"math"
	"testing"

	"github.com/dmavk/dmavk/ref"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBetterAndTopW(t *testing.T) {
	assert.True(t, ref.Better(2, 0, 1, 5), "larger weight first")
	assert.True(t, ref.Better(1, 5, 1, 0), "equal weight: later key first")
	assert.False(t, ref.Better(1, 0, 1, 5))
	assert.True(t, ref.Better(math.Copysign(0, -1), 1, 0, 0), "-0 and +0 are equal weights")

	w := []float64{1, 3, 3, 2}
	all := []int{0, 1, 2, 3}
	// 3 at key 2 beats 3 at key 1 (later wins), then 2, then 1.
	assert.Equal(t, []int{2, 1}, ref.TopW(w, all, 2))
	assert.Equal(t, []int{2, 1, 3}, ref.TopW(w, all, 3))
	assert.Equal(t, []int{2, 1, 3, 0}, ref.TopW(w, all, 10))
	assert.Equal(t, []int{3}, ref.TopW(w, []int{0, 3}, 1))
	assert.Equal(t, []int{0, 1, 2, 3}, all, "cand is not modified")
}

func TestCandidates(t *testing.T) {
	s := ref.Shape{B: 1, Lq: 2, Lk: 4, H: 1, Hkv: 1}
	o := ref.Options{Causal: true, KeyPadding: [][]bool{{true, false, true, true}}}
	assert.Equal(t, []int{0, 2}, ref.Candidates(s, 0, 0, o)) // p_0 = 2
	assert.Equal(t, []int{0, 2, 3}, ref.Candidates(s, 0, 1, o))
	o.Causal = false
	assert.Equal(t, []int{0, 2, 3}, ref.Candidates(s, 0, 0, o))
	s.Lq = 6 // p_0 = -2: nothing
	assert.Empty(t, ref.Candidates(s, 0, 0, ref.Options{Causal: true}))
}

// keep1 runs Keep on one batch and head and returns the kept keys per row.
func keep1(t *testing.T, delta []float64, lq int, opts ref.Options) [][]int {
	t.Helper()
	s := ref.Shape{B: 1, Lq: lq, Lk: len(delta), H: 1, Hkv: 1}
	keep, err := ref.Keep(delta, 1, s, opts)
	require.NoError(t, err)
	return keptLists(keep, s, 0, 0)
}

func TestKeepEqualWeightsGiveSlidingWindow(t *testing.T) {
	ones := []float64{1, 1, 1, 1, 1}
	// The tie rule prefers later keys, so row i keeps {i-1, i}.
	assert.Equal(t, [][]int{{0}, {0, 1}, {1, 2}, {2, 3}, {3, 4}},
		keep1(t, ones, 5, ref.Options{Mode: ref.ModeRow, Window: 2, Causal: true}))
	// w = 1 keeps the diagonal only.
	assert.Equal(t, [][]int{{0}, {1}, {2}, {3}, {4}},
		keep1(t, ones, 5, ref.Options{Mode: ref.ModeRow, Window: 1, Causal: true}))
	// Without causality every row sees all keys and keeps the last w.
	assert.Equal(t, [][]int{{3, 4}, {3, 4}, {3, 4}, {3, 4}, {3, 4}},
		keep1(t, ones, 5, ref.Options{Mode: ref.ModeRow, Window: 2}))
	// Shared: one top-2 over all keys ({3, 4}), then each row's causal part.
	assert.Equal(t, [][]int{{}, {}, {}, {3}, {3, 4}},
		keep1(t, ones, 5, ref.Options{Mode: ref.ModeShared, Window: 2, Causal: true}))
}

func TestKeepRowVersusShared(t *testing.T) {
	row := ref.Options{Mode: ref.ModeRow, Window: 2, Causal: true}
	shared := ref.Options{Mode: ref.ModeShared, Window: 2, Causal: true}

	// Increasing weights: every prefix's best two are its last two, while the
	// global best two are keys 3 and 4.
	inc := []float64{1, 2, 3, 4, 5}
	assert.Equal(t, [][]int{{0}, {0, 1}, {1, 2}, {2, 3}, {3, 4}}, keep1(t, inc, 5, row))
	assert.Equal(t, [][]int{{}, {}, {}, {3}, {3, 4}}, keep1(t, inc, 5, shared))

	// Decreasing weights: keys 0 and 1 are best everywhere; the modes agree.
	dec := []float64{5, 4, 3, 2, 1}
	want := [][]int{{0}, {0, 1}, {0, 1}, {0, 1}, {0, 1}}
	assert.Equal(t, want, keep1(t, dec, 5, row))
	assert.Equal(t, want, keep1(t, dec, 5, shared))

	// Mixed, worked by hand:
	//   row 2: C = {0,1,2}, ranked 2 (4), 0 (3), 1 (1)            -> {0,2}
	//   row 3: C = {0..3}, ranked 2, 0, then 3 and 1 tie at 1     -> {0,2}
	//   row 4: ranked 4 (5), 2 (4)                                -> {2,4}
	//   shared: global best two are 4 and 2
	pi := []float64{3, 1, 4, 1, 5}
	assert.Equal(t, [][]int{{0}, {0, 1}, {0, 2}, {0, 2}, {2, 4}}, keep1(t, pi, 5, row))
	assert.Equal(t, [][]int{{}, {}, {2}, {2}, {2, 4}}, keep1(t, pi, 5, shared))
	// w = 3: in row 3 key 3 beats key 1 at equal weight 1.
	row.Window = 3
	assert.Equal(t, [][]int{{0}, {0, 1}, {0, 1, 2}, {0, 2, 3}, {0, 2, 4}}, keep1(t, pi, 5, row))
}

func TestKeepAlignment(t *testing.T) {
	none := ref.Options{Mode: ref.ModeNone, Causal: true}
	// Lq < Lk: p_i = i + 3.
	assert.Equal(t, [][]int{{0, 1, 2, 3}, {0, 1, 2, 3, 4}}, keep1(t, make([]float64, 5), 2, none))
	row := ref.Options{Mode: ref.ModeRow, Window: 2, Causal: true}
	assert.Equal(t, [][]int{{2, 3}, {3, 4}}, keep1(t, make([]float64, 5), 2, row))
	// Lq > Lk: p_i = i - 3, so rows 0..2 have no candidate at all.
	assert.Equal(t, [][]int{{}, {}, {}, {0}, {0, 1}}, keep1(t, make([]float64, 2), 5, none))
	assert.Equal(t, [][]int{{}, {}, {}, {0}, {1}}, keep1(t, make([]float64, 2), 5,
		ref.Options{Mode: ref.ModeRow, Window: 1, Causal: true}))
}

func TestKeepKeyPadding(t *testing.T) {
	s := ref.Shape{B: 2, Lq: 4, Lk: 4, H: 1, Hkv: 1}
	pad := [][]bool{{true, false, true, true}, {true, true, true, true}}
	delta := make([]float64, 8) // equal weights: the tie rule decides
	cases := []struct {
		opts   ref.Options
		b0, b1 [][]int
	}{
		// Batch 0: key 1 is padding. Row 3 has C = {0,2,3} and keeps the
		// later two; batch 1 is an ordinary sliding window.
		{ref.Options{Mode: ref.ModeRow, Window: 2},
			[][]int{{0}, {0}, {0, 2}, {2, 3}}, [][]int{{0}, {0, 1}, {1, 2}, {2, 3}}},
		// Shared top-2 over the valid keys {0,2,3} is {2,3}.
		{ref.Options{Mode: ref.ModeShared, Window: 2},
			[][]int{{}, {}, {2}, {2, 3}}, [][]int{{}, {}, {2}, {2, 3}}},
		{ref.Options{Mode: ref.ModeNone},
			[][]int{{0}, {0}, {0, 2}, {0, 2, 3}}, [][]int{{0}, {0, 1}, {0, 1, 2}, {0, 1, 2, 3}}},
		{ref.Options{Mode: ref.ModeExplicit},
			[][]int{{0}, {0}, {0, 2}, {0, 2, 3}}, [][]int{{0}, {0, 1}, {0, 1, 2}, {0, 1, 2, 3}}},
	}
	for _, c := range cases {
		c.opts.Causal, c.opts.KeyPadding = true, pad
		keep, err := ref.Keep(delta, 1, s, c.opts)
		require.NoError(t, err)
		assert.Equal(t, c.b0, keptLists(keep, s, 0, 0), "mode %v batch 0", c.opts.Mode)
		assert.Equal(t, c.b1, keptLists(keep, s, 1, 0), "mode %v batch 1", c.opts.Mode)
	}

	// A padded key never competes: with it the shared top-1 would be key 1.
	keep, err := ref.Keep([]float64{0, 9, 0, 0}, 1, ref.Shape{B: 1, Lq: 4, Lk: 4, H: 1, Hkv: 1},
		ref.Options{Mode: ref.ModeShared, Window: 1, KeyPadding: pad[:1]})
	require.NoError(t, err)
	assert.Equal(t, [][]int{{3}, {3}, {3}, {3}}, keptLists(keep, ref.Shape{B: 1, Lq: 4, Lk: 4, H: 1, Hkv: 1}, 0, 0))
}

func TestKeepBiasHeads(t *testing.T) {
	const lk = 5
	s := ref.Shape{B: 1, Lq: lk, Lk: lk, H: 4, Hkv: 2}
	opts := ref.Options{Mode: ref.ModeRow, Window: 2, Causal: true}
	// Hb = Hkv: kv/bias head 0 has increasing weights, head 1 decreasing.
	dkv := []float64{1, 2, 3, 4, 5, 5, 4, 3, 2, 1}
	keep, err := ref.Keep(dkv, 2, s, opts)
	require.NoError(t, err)
	inc := [][]int{{0}, {0, 1}, {1, 2}, {2, 3}, {3, 4}}
	dec := [][]int{{0}, {0, 1}, {0, 1}, {0, 1}, {0, 1}}
	assert.Equal(t, inc, keptLists(keep, s, 0, 0))
	assert.Equal(t, inc, keptLists(keep, s, 0, 1), "query head 1 uses bias head 1/g = 0")
	assert.Equal(t, dec, keptLists(keep, s, 0, 2))
	assert.Equal(t, dec, keptLists(keep, s, 0, 3))

	// The same weights spelled out per query head (Hb = H) select the same.
	keepH, err := ref.Keep(repeatDelta(dkv, 1, 2, 4, lk), 4, s, opts)
	require.NoError(t, err)
	assert.Equal(t, keep, keepH)

	// Hb = H lets heads of one group differ.
	dh := []float64{1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 1, 2, 3, 4, 5, 5, 4, 3, 2, 1}
	keepH, err = ref.Keep(dh, 4, s, opts)
	require.NoError(t, err)
	assert.Equal(t, inc, keptLists(keepH, s, 0, 0))
	assert.Equal(t, dec, keptLists(keepH, s, 0, 1))
}

func TestKeepExplicitMaskBroadcast(t *testing.T) {
	s := ref.Shape{B: 1, Lq: 3, Lk: 3, H: 4, Hkv: 2}
	// A [1, Hkv, 1, Lk] mask: kv head 0 allows keys {0,2}, kv head 1 {1,2};
	// it broadcasts over rows, and query head h reads mask head h/2.
	m := ref.NewBroadcast4Bool(1, 2, 1, 3)
	copy(m.Data, []bool{true, false, true, false, true, true})
	opts := ref.Options{Mode: ref.ModeExplicit, Mask: m}
	keep, err := ref.Keep(nil, 0, s, opts)
	require.NoError(t, err)
	for h, want := range [][]int{{0, 2}, {0, 2}, {1, 2}, {1, 2}} {
		assert.Equal(t, [][]int{want, want, want}, keptLists(keep, s, 0, h), "head %d", h)
	}
	// The mask is intersected with the causal candidates.
	opts.Causal = true
	keep, err = ref.Keep(nil, 0, s, opts)
	require.NoError(t, err)
	assert.Equal(t, [][]int{{0}, {0}, {0, 2}}, keptLists(keep, s, 0, 1))
	assert.Equal(t, [][]int{{}, {1}, {1, 2}}, keptLists(keep, s, 0, 2))

	// A [B, 1, Lq, 1] mask switches whole rows per batch.
	s.B = 2
	rows := ref.NewBroadcast4Bool(2, 1, 3, 1)
	copy(rows.Data, []bool{true, false, true, false, true, false})
	keep, err = ref.Keep(nil, 0, s, ref.Options{Mode: ref.ModeExplicit, Mask: rows})
	require.NoError(t, err)
	assert.Equal(t, [][]int{{0, 1, 2}, {}, {0, 1, 2}}, keptLists(keep, s, 0, 3))
	assert.Equal(t, [][]int{{}, {0, 1, 2}, {}}, keptLists(keep, s, 1, 0))

	// A [1, H, Lq, Lk] mask is read per query head.
	full := ref.NewBroadcast4Bool(1, 4, 3, 3)
	full.Set(0, 3, 1, 2, true)
	keep, err = ref.Keep(nil, 0, s, ref.Options{Mode: ref.ModeExplicit, Mask: full})
	require.NoError(t, err)
	assert.Equal(t, [][]int{{}, {2}, {}}, keptLists(keep, s, 1, 3))
	assert.Equal(t, [][]int{{}, {}, {}}, keptLists(keep, s, 1, 2))

	// No mask: explicit keeps the candidates, like mode none.
	s.B = 1
	k1, err := ref.Keep(nil, 0, s, ref.Options{Mode: ref.ModeExplicit, Causal: true})
	require.NoError(t, err)
	k2, err := ref.Keep(nil, 0, s, ref.Options{Mode: ref.ModeNone, Causal: true})
	require.NoError(t, err)
	assert.Equal(t, k2, k1)
}

func TestKeepLargeWindowIsModeNone(t *testing.T) {
	rng := newRNG(5)
	s := ref.Shape{B: 2, Lq: 6, Lk: 9, H: 4, Hkv: 2}
	delta := ref.RandSlice(rng, 2*2*9, 1)
	for _, causal := range []bool{false, true} {
		none, err := ref.Keep(delta, 2, s, ref.Options{Mode: ref.ModeNone, Causal: causal})
		require.NoError(t, err)
		for _, mode := range []ref.Mode{ref.ModeRow, ref.ModeShared} {
			for _, w := range []int{9, 10, 100} {
				k, err := ref.Keep(delta, 2, s, ref.Options{Mode: mode, Window: w, Causal: causal})
				require.NoError(t, err)
				assert.Equal(t, none, k, "mode %v w %d causal %v", mode, w, causal)
			}
		}
	}
}

func TestKeepErrors(t *testing.T) {
	s := ref.Shape{B: 1, Lq: 3, Lk: 3, H: 2, Hkv: 1}
	d := make([]float64, 3)
	bad := []struct {
		name  string
		delta []float64
		hb    int
		s     ref.Shape
		opts  ref.Options
	}{
		{"window 0", d, 1, s, ref.Options{Mode: ref.ModeRow}},
		{"shared window 0", d, 1, s, ref.Options{Mode: ref.ModeShared}},
		{"unknown mode", d, 1, s, ref.Options{Mode: 7, Window: 1}},
		{"nil delta in row", nil, 1, s, ref.Options{Mode: ref.ModeRow, Window: 1}},
		{"delta length", d[:2], 1, s, ref.Options{Mode: ref.ModeRow, Window: 1}},
		{"hb", make([]float64, 9), 3, s, ref.Options{Mode: ref.ModeRow, Window: 1}},
		{"H % Hkv", d, 1, ref.Shape{B: 1, Lq: 3, Lk: 3, H: 3, Hkv: 2}, ref.Options{Mode: ref.ModeNone}},
		{"empty shape", d, 1, ref.Shape{B: 1, Lq: 0, Lk: 3, H: 1, Hkv: 1}, ref.Options{Mode: ref.ModeNone}},
		{"mask outside explicit", d, 1, s, ref.Options{Mode: ref.ModeNone, Mask: ref.NewBroadcast4Bool(1, 1, 1, 1)}},
		{"bias outside explicit", d, 1, s, ref.Options{Mode: ref.ModeRow, Window: 1, Bias: ref.NewBroadcast4(1, 1, 1, 1)}},
		{"mask shape", d, 1, s, ref.Options{Mode: ref.ModeExplicit, Mask: ref.NewBroadcast4Bool(1, 1, 2, 3)}},
		{"mask head", d, 1, s, ref.Options{Mode: ref.ModeExplicit, Mask: ref.NewBroadcast4Bool(1, 3, 1, 1)}},
		{"mask data", d, 1, s, ref.Options{Mode: ref.ModeExplicit, Mask: &ref.Broadcast4Bool{B: 1, H: 1, Lq: 1, Lk: 3}}},
		{"padding batches", d, 1, s, ref.Options{Mode: ref.ModeNone, KeyPadding: [][]bool{}}},
		{"padding keys", d, 1, s, ref.Options{Mode: ref.ModeNone, KeyPadding: [][]bool{{true}}}},
		{"softcap", d, 1, s, ref.Options{Mode: ref.ModeNone, Softcap: -1}},
	}
	for _, c := range bad {
		_, err := ref.Keep(c.delta, c.hb, c.s, c.opts)
		assert.Error(t, err, c.name)
	}
}
