package heatmap_test

import (
	"bytes"
	"context"
	"image/color"
	"image/png"
	"math/rand/v2"
	"testing"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/heatmap"
	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/stretchr/testify/require"
)

func open(t *testing.T) (*dma.Device, *heatmap.Renderer) {
	in := vktest.Instance(t)
	pd, err := in.Choose()
	require.NoError(t, err)
	d, err := dma.OpenOn(in, pd, dma.Config{})
	require.NoError(t, err)
	r, err := heatmap.New(d)
	require.NoError(t, err)
	t.Cleanup(func() { r.Close(); d.Close() })
	return d, r
}

func near(a, b color.RGBA, tol int) bool {
	d := func(x, y uint8) bool { return int(x)-int(y) <= tol && int(y)-int(x) <= tol }
	return d(a.R, b.R) && d(a.G, b.G) && d(a.B, b.B)
}

func dim(c color.RGBA) color.RGBA {
	f := func(x uint8) uint8 { return uint8(float32(x)*0.22 + 0.5) }
	return color.RGBA{f(c.R), f(c.G), f(c.B), 255}
}

// TestPixelsShowTheSelection draws one pixel per (row, key) and reads every pixel back
// as kept (the key's colour), dropped (22% of it) or not a candidate (near black),
// against Selection.Kept (itself checked against the spec in package dma).
func TestPixelsShowTheSelection(t *testing.T) {
	d, r := open(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(rand.Uint64(), 2))
	for _, mode := range []dma.Mode{dma.ModeRow, dma.ModeShared, dma.ModeNone} {
		const hb, h, lq, lk = 2, 4, 45, 61
		vals := make([]float32, hb*lk)
		for i := range vals {
			vals[i] = float32(rng.NormFloat64())
		}
		w, err := d.NewWeights(1, hb, lk)
		require.NoError(t, err)
		t.Cleanup(func() { w.Close() })
		require.NoError(t, w.Upload(ctx, vals))
		sel, err := d.Select(ctx, w, dma.SelectOptions{Lq: lq, H: h, Mode: mode, Window: 7, Causal: true})
		require.NoError(t, err)
		t.Cleanup(func() { sel.Close() })
		for head := range h {
			v := heatmap.View{Head: head, Width: lk + heatmap.StripRight + 2, Height: lq + heatmap.StripBottom + 2, Zoom: 1}
			img, err := r.Image(ctx, sel, v)
			require.NoError(t, err)
			kept, err := sel.Kept(ctx, 0, head)
			require.NoError(t, err)
			lo, hi := sel.WeightRange(0, head)
			bias := sel.BiasHead(head)
			for i := range lq {
				for j := range lk {
					px := img.RGBAAt(j, i)
					colour := heatmap.WeightColour(vals[bias*lk+j], lo, hi)
					switch {
					case j > i+lk-lq:
						require.Equalf(t, color.RGBA{5, 5, 10, 255}, px, "mode %v head %d row %d key %d: past the causal row", mode, head, i, j)
					case kept[i*lk+j]:
						require.Truef(t, near(px, colour, 1), "mode %v head %d row %d key %d: kept, pixel %v, want %v", mode, head, i, j, px, colour)
					default:
						require.Truef(t, near(px, dim(colour), 1), "mode %v head %d row %d key %d: dropped, pixel %v, want %v", mode, head, i, j, px, dim(colour))
					}
				}
			}
		}
	}
}

func TestGridAndPNG(t *testing.T) {
	d, r := open(t)
	ctx := context.Background()
	w, err := d.NewWeights(1, 3, 40)
	require.NoError(t, err)
	defer w.Close()
	vals := make([]float32, 120)
	for i := range vals {
		vals[i] = float32(i % 7)
	}
	require.NoError(t, w.Upload(ctx, vals))
	sel, err := d.Select(ctx, w, dma.SelectOptions{Mode: dma.ModeRow, Window: 5, Causal: true})
	require.NoError(t, err)
	defer sel.Close()
	v := heatmap.View{Width: 100, Height: 150, Zoom: 1}
	grid, err := r.Grid(ctx, sel, v, 2)
	require.NoError(t, err)
	require.Equal(t, 2*100+4, grid.Bounds().Dx())
	require.Equal(t, 2*150+4, grid.Bounds().Dy())
	one, err := r.Image(ctx, sel, heatmap.View{Head: 2, Width: 100, Height: 150, Zoom: 1})
	require.NoError(t, err)
	for y := range 150 { // head 2 is the first picture of the second row
		for x := range 100 {
			require.Equal(t, one.RGBAAt(x, y), grid.RGBAAt(x, 154+y))
		}
	}
	var buf bytes.Buffer
	require.NoError(t, heatmap.EncodePNG(&buf, one))
	back, err := png.Decode(&buf)
	require.NoError(t, err)
	require.Equal(t, one.Bounds(), back.Bounds())

	_, err = r.Image(ctx, sel, heatmap.View{Width: 10, Height: 10})
	require.ErrorContains(t, err, "at least")
	_, err = r.Image(ctx, sel, heatmap.View{Head: 3, Width: 100, Height: 150})
	require.ErrorContains(t, err, "head 3")
}
