package dma_test

import (
	"context"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/internal/check"
	"github.com/stretchr/testify/require"
)

// TestNonFinite runs the selftest's non-finite cases (spec section 7: NaN and
// infinities in q, k, v and the weights) through Forward on every path the device has,
// the decode kernels, a KV cache (Attend, and AppendAttendInto for one row) and
// Backward: the reference's NaNs and infinities exactly, its values elsewhere.
func TestNonFinite(t *testing.T) {
	d := open(t)
	rng := seed(t)
	paths := map[string]bool{}
	for _, c := range check.Suite(false) {
		if !c.NonFinite {
			continue
		}
		t.Run(strings.ReplaceAll(c.Name(), " ", "_"), func(t *testing.T) {
			o := check.Run(context.Background(), d, c, rng)
			require.NoError(t, o.Err)
			require.Truef(t, o.Pass, "rel err %.3g (tol %.3g), lse err %.3g", o.Rel, o.Tol, o.LSEAbs)
			paths[o.Path] = true
			if c.KVCache {
				paths["kvcache"] = true
			}
		})
	}
	want := []string{"portable", "decode", "kvcache", "portable+bwd-portable"}
	if os.Getenv("DMAVK_REQUIRE_COOPMAT") == "1" && d.VK().Caps().CoopMat2 {
		want = append(want, "coopmat2+bwd-coopmat2")
	}
	for _, p := range want {
		require.Truef(t, paths[p], "no non-finite case took path %s (took %v)", p, paths)
	}
}

// TestNaNQueryRow: a NaN in one query row gives that row NaN O and LSE (not LSE = -inf,
// which means "kept no key"), and leaves every other row as it was.
func TestNaNQueryRow(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	const L, bad = 40, 17
	s := dma.Shape{B: 1, L: L, H: 2, D: 32}
	qv := make([]float32, s.Elems())
	for i := range qv {
		qv[i] = float32(math.Sin(float64(3 * i)))
	}
	k := tensor(t, d, dma.Float32, s, nil)
	v := tensor(t, d, dma.Float32, s, nil)
	run := func(q []float32) ([]float32, []float32) {
		res, err := d.Forward(ctx, tensor(t, d, dma.Float32, s, q), k, v, dma.Options{Mode: dma.ModeNone, Causal: true})
		require.NoError(t, err)
		defer res.Close()
		o, err := res.O.Download(ctx)
		require.NoError(t, err)
		lse, err := res.LSE.Download(ctx)
		require.NoError(t, err)
		return o, lse
	}
	cleanO, cleanLSE := run(qv)
	qv[(bad*2+1)*32+5] = float32(math.NaN()) // row 17, head 1
	o, lse := run(qv)
	for h := range 2 {
		for i := range L {
			l := lse[h*L+i]
			if h == 1 && i == bad {
				require.True(t, math.IsNaN(float64(l)), "LSE of the NaN row is %v, want NaN", l)
			} else {
				require.Equal(t, cleanLSE[h*L+i], l, "head %d row %d", h, i)
			}
			for dd := range 32 {
				at := (i*2+h)*32 + dd
				if h == 1 && i == bad {
					require.True(t, math.IsNaN(float64(o[at])), "O of the NaN row is %v", o[at])
				} else {
					require.Equal(t, cleanO[at], o[at], "head %d row %d", h, i)
				}
			}
		}
	}
}
