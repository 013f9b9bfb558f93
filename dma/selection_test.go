package dma_test

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/dmavk/dmavk/dma"
	"github.com/stretchr/testify/require"
)

// keptOracle is the selection straight from the spec (docs/dma-semantics.md, section
// 2): rank each row's candidates by (weight, key) descending, keep the best w.
func keptOracle(w []float32, lq, lk, win int, mode dma.Mode, causal bool) []bool {
	rank := func(a, b int) int { // a before b: larger weight, then the later key
		wa, wb := float64(w[a]), float64(w[b])
		switch {
		case math.IsNaN(wa) && !math.IsNaN(wb):
			return -1
		case math.IsNaN(wb) && !math.IsNaN(wa):
			return 1
		case wa != wb && !math.IsNaN(wa):
			return cmp.Compare(wb, wa)
		}
		return cmp.Compare(b, a)
	}
	best := func(cands []int) map[int]bool {
		slices.SortFunc(cands, rank)
		if mode != dma.ModeNone && len(cands) > win {
			cands = cands[:win]
		}
		m := map[int]bool{}
		for _, j := range cands {
			m[j] = true
		}
		return m
	}
	var all []int
	for j := range lk {
		all = append(all, j)
	}
	shared := best(slices.Clone(all))
	out := make([]bool, lq*lk)
	for i := range lq {
		p := i + lk - lq
		var cands []int
		for j := range lk {
			if !causal || j <= p {
				cands = append(cands, j)
			}
		}
		keep := best(cands)
		if mode == dma.ModeShared || !causal {
			keep = shared
		}
		for j := range lk {
			out[i*lk+j] = keep[j] && (!causal || j <= p)
		}
	}
	return out
}

func TestSelectAgainstSpec(t *testing.T) {
	d := open(t)
	rng := seed(t)
	ctx := context.Background()
	for _, c := range []struct {
		hb, h, lq, lk, w int
		mode             dma.Mode
		causal           bool
		weights          string
	}{
		{2, 4, 37, 37, 5, dma.ModeRow, true, "random"},
		{1, 1, 13, 100, 17, dma.ModeRow, true, "random"}, // Lq != Lk
		{2, 2, 64, 64, 1, dma.ModeRow, true, "random"},   // w = 1
		{1, 2, 50, 50, 50, dma.ModeRow, true, "random"},  // w >= L: none
		{2, 2, 70, 70, 9, dma.ModeShared, true, "random"},
		{1, 1, 40, 40, 6, dma.ModeRow, false, "random"}, // row without causality is shared
		{1, 1, 33, 33, 8, dma.ModeRow, true, "equal"},   // ties: the later key first
		{1, 1, 33, 33, 8, dma.ModeNone, true, "random"},
		{1, 1, 29, 29, 4, dma.ModeRow, true, "nonfinite"},
	} {
		t.Run(fmt.Sprintf("%v_causal%v_hb%d_h%d_lq%d_lk%d_w%d_%s", c.mode, c.causal, c.hb, c.h, c.lq, c.lk, c.w, c.weights), func(t *testing.T) {
			vals := make([]float32, c.hb*c.lk)
			for i := range vals {
				switch c.weights {
				case "equal":
					vals[i] = 1
				default:
					vals[i] = float32(rng.NormFloat64())
				}
			}
			if c.weights == "nonfinite" {
				vals[3], vals[10], vals[11], vals[20] = float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 0
			}
			w, err := d.NewWeights(1, c.hb, c.lk)
			require.NoError(t, err)
			defer w.Close()
			require.NoError(t, w.Upload(ctx, vals))
			sel, err := d.Select(ctx, w, dma.SelectOptions{Lq: c.lq, H: c.h, Mode: c.mode, Window: c.w, Causal: c.causal})
			require.NoError(t, err)
			defer sel.Close()
			for h := range c.h {
				got, err := sel.Kept(ctx, 0, h)
				require.NoError(t, err)
				hb := sel.BiasHead(h)
				want := keptOracle(vals[hb*c.lk:(hb+1)*c.lk], c.lq, c.lk, c.w, c.mode, c.causal)
				for i := range c.lq {
					for j := range c.lk {
						if got[i*c.lk+j] != want[i*c.lk+j] {
							t.Fatalf("head %d row %d key %d: kept %v, spec says %v", h, i, j, got[i*c.lk+j], want[i*c.lk+j])
						}
					}
				}
			}
		})
	}
}

func TestSelectBadInput(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	w, err := d.NewWeights(1, 2, 10)
	require.NoError(t, err)
	defer w.Close()
	for _, c := range []struct {
		o    dma.SelectOptions
		want string
	}{
		{dma.SelectOptions{Lq: 11, Mode: dma.ModeRow, Window: 2}, "11 rows for 10 keys"},
		{dma.SelectOptions{H: 3, Mode: dma.ModeRow, Window: 2}, "3 query heads do not fit 2 bias heads"},
		{dma.SelectOptions{Mode: dma.ModeRow}, "window 0 must be at least 1"},
		{dma.SelectOptions{Mode: dma.ModeExplicit, Window: 2}, "row, shared or none"},
	} {
		_, err := d.Select(ctx, w, c.o)
		require.ErrorContains(t, err, c.want)
	}
	_, err = d.Select(ctx, nil, dma.SelectOptions{Mode: dma.ModeNone})
	require.ErrorContains(t, err, "weights are nil")
}
