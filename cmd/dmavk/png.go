package main

import (
	"context"
	"flag"
	"fmt"
	"image"
	"io"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/heatmap"
)

// pngFlags are dmavk run's picture of the selection (package heatmap).
type pngFlags struct {
	path          *string
	head          *int
	width, height *int
	cols          *int
}

func addPNGFlags(fs *flag.FlagSet) *pngFlags {
	return &pngFlags{
		path:   fs.String("png", "", "also draw the kept-key heat map (rows down, keys across, colour = weight) as a PNG"),
		head:   fs.Int("png-head", -1, "query head to draw; -1 draws every head in a grid"),
		width:  fs.Int("png-width", 640, "width of one head's picture in pixels"),
		height: fs.Int("png-height", 480, "height of one head's picture in pixels"),
		cols:   fs.Int("png-cols", 0, "pictures per row of the grid (0: about square)"),
	}
}

// write draws the selection the call made (batch 0) when --png is set. weights are the
// weights the call used (nil: none, every weight 0).
func (f *pngFlags) write(ctx context.Context, dev *dma.Device, weights *dma.Weights, q, k dma.Shape, opt dma.Options, stdout io.Writer) error {
	if *f.path == "" {
		return nil
	}
	if opt.Mode == dma.ModeExplicit {
		return usagef("--png: mode explicit has no selection to draw")
	}
	if *f.head >= q.H {
		return usagef("--png-head %d: q has %d heads", *f.head, q.H)
	}
	if weights == nil {
		w, err := dev.NewWeights(q.B, k.H, k.L)
		if err != nil {
			return err
		}
		defer w.Close()
		if err := w.Upload(ctx, make([]float32, q.B*k.H*k.L)); err != nil {
			return err
		}
		weights = w
	}
	sel, err := dev.Select(ctx, weights, dma.SelectOptions{Lq: q.L, H: q.H, Mode: opt.Mode, Window: opt.Window, Causal: opt.Causal})
	if err != nil {
		return fmt.Errorf("--png: %w", err)
	}
	defer sel.Close()
	r, err := heatmap.New(dev)
	if err != nil {
		return err
	}
	defer r.Close()
	v := heatmap.View{Head: max(*f.head, 0), Width: *f.width, Height: *f.height, Zoom: 1, Cursor: -1}
	var img *image.RGBA
	if *f.head < 0 {
		img, err = r.Grid(ctx, sel, v, *f.cols)
	} else {
		img, err = r.Image(ctx, sel, v)
	}
	if err != nil {
		return fmt.Errorf("--png: %w", err)
	}
	if err := heatmap.WritePNG(*f.path, img); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "heat map %dx%d -> %s\n", img.Bounds().Dx(), img.Bounds().Dy(), *f.path)
	return nil
}
