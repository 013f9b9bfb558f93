package main

import (
	"bytes"
	"context"
	"image"
	"image/draw"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/heatmap"
	"github.com/dmavk/dmavk/internal/npy"
)

// TestRunPNG: dmavk run --png draws the selection of the call it made: the same
// picture as package heatmap's for the same weights, per head and as a grid.
func TestRunPNG(t *testing.T) {
	instanceOrSkip(t)
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(rand.Uint64(), 5))
	fill := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		return x
	}
	const l, h, hkv, d = 50, 4, 2, 16
	files := map[string][]int{"q": {1, l, h, d}, "k": {1, l, hkv, d}, "v": {1, l, hkv, d}, "w": {1, hkv, l}}
	data := map[string][]float32{}
	for name, shape := range files {
		n := 1
		for _, s := range shape {
			n *= s
		}
		data[name] = fill(n)
		if err := npy.WriteFloat32(filepath.Join(dir, name+".npy"), shape, data[name]); err != nil {
			t.Fatal(err)
		}
	}
	run := func(extra ...string) (string, int) {
		var out, errOut bytes.Buffer
		args := []string{"run", "--q", dir + "/q.npy", "--k", dir + "/k.npy", "--v", dir + "/v.npy", "--weights", dir + "/w.npy",
			"--window", "7", "--o", dir + "/o.npy", "--lse", dir + "/lse.npy"}
		rc := dispatch(append(args, extra...), &out, &errOut)
		return out.String() + errOut.String(), rc
	}
	read := func(path string) *image.RGBA {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		img, err := png.Decode(f)
		if err != nil {
			t.Fatal(err)
		}
		rgba := image.NewRGBA(img.Bounds())
		draw.Draw(rgba, rgba.Bounds(), img, image.Point{}, draw.Src)
		return rgba
	}

	// The picture straight from package heatmap.
	ctx := context.Background()
	dev, err := dma.Open(dma.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	w, err := dev.NewWeights(1, hkv, l)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Upload(ctx, data["w"]); err != nil {
		t.Fatal(err)
	}
	sel, err := dev.Select(ctx, w, dma.SelectOptions{H: h, Mode: dma.ModeRow, Window: 7, Causal: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sel.Close()
	r, err := heatmap.New(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	v := heatmap.View{Head: 3, Width: 100, Height: 120, Zoom: 1, Cursor: -1}
	want, err := r.Image(ctx, sel, v)
	if err != nil {
		t.Fatal(err)
	}
	grid, err := r.Grid(ctx, sel, v, 0)
	if err != nil {
		t.Fatal(err)
	}

	if out, rc := run("--png", dir+"/h3.png", "--png-head", "3", "--png-width", "100", "--png-height", "120"); rc != 0 {
		t.Fatalf("exit %d: %s", rc, out)
	}
	if got := read(dir + "/h3.png"); !bytes.Equal(got.Pix, want.Pix) || got.Bounds() != want.Bounds() {
		t.Errorf("--png-head 3 differs from heatmap's picture")
	}
	if out, rc := run("--png", dir+"/grid.png", "--png-width", "100", "--png-height", "120"); rc != 0 {
		t.Fatalf("exit %d: %s", rc, out)
	}
	if got := read(dir + "/grid.png"); !bytes.Equal(got.Pix, grid.Pix) || got.Bounds() != grid.Bounds() {
		t.Errorf("the grid differs from heatmap's (%v, want %v)", got.Bounds(), grid.Bounds())
	}
	if out, rc := run("--png", dir+"/x.png", "--png-head", "4"); rc == 0 || !strings.Contains(out, "q has 4 heads") {
		t.Errorf("--png-head 4: exit %d, %q", rc, out)
	}
	if out, rc := run("--png", dir+"/x.png", "--png-width", "5"); rc == 0 || !strings.Contains(out, "at least") {
		t.Errorf("--png-width 5: exit %d, %q", rc, out)
	}
}
