// Package heatmap draws what Dynamic Mask Attention keeps, on the GPU that ran it: for
// one head, the kept-key mask as a heat map (rows down, keys across, colour = the key's
// weight, kept keys bright, dropped candidates dim, keys past a causal row dark), each
// row's threshold in a strip on the right, and the weights along the sequence as bars
// below, bright where the cursor row keeps the key, with that row's threshold as a
// white line.
//
// The same compute shader draws a PNG (Image, Grid, WritePNG) and the frames of a
// window (Record, as examples/viewer does into its swapchain), so both show the same
// pixels for the same inputs.
package heatmap

import (
	"context"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"os"
	"sync"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/shaders"
	"github.com/dmavk/dmavk/vk"
)

// Layout of a picture, in pixels.
const (
	StripRight  = 24 // width of the thresholds' strip
	StripBottom = 64 // height of the weights' strip
	gap         = 2  // between the heat map and the strips (shaders/heatmap.comp)
)

// View is what one picture shows.
type View struct {
	Batch, Head   int
	Width, Height int // the whole picture, strips included (more than StripRight+2 x StripBottom+2)
	// Zoom magnifies the heat map (1 = every row and key in view, 2 = half of each).
	Zoom float64
	// Row0 and Key0 are the first row and key in view (the pan), clamped so that the
	// view stays inside the sequence.
	Row0, Key0 float64
	// Cursor is the row whose kept keys and threshold the bottom strip shows; negative
	// means the last row in view.
	Cursor int
}

// Renderer draws pictures of Selections on one device. It is safe for concurrent use.
type Renderer struct {
	d    *dma.Device
	mu   sync.Mutex
	pipe *vk.Pipeline
}

// New makes a renderer on d.
func New(d *dma.Device) (*Renderer, error) {
	code, err := shaders.Get("heatmap")
	if err != nil {
		return nil, err
	}
	p, err := d.VK().NewPipeline(vk.PipelineDesc{Name: "heatmap", SPIRV: code, Bindings: 3, PushSize: pushSize})
	if err != nil {
		return nil, fmt.Errorf("heatmap: %w", err)
	}
	return &Renderer{d: d, pipe: p}, nil
}

// Close frees the renderer's pipeline.
func (r *Renderer) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pipe != nil {
		r.pipe.Close()
		r.pipe = nil
	}
	return nil
}

const pushSize = 18 * 4 // shaders/heatmap.comp's Push: 12 words, 6 floats

// Frame is where a view's pixels fall: the view with its pan clamped and its scale.
type Frame struct {
	View
	MapW, MapH           int // the heat map's area
	RowsPerPx, KeysPerPx float64
}

// FrameOf clamps v to sel and works out its scale.
func FrameOf(sel *dma.Selection, v View) (Frame, error) {
	if v.Width <= StripRight+gap || v.Height <= StripBottom+gap || v.Width > 1<<14 || v.Height > 1<<14 {
		return Frame{}, fmt.Errorf("heatmap: %dx%d pixels: at least %dx%d, at most 16384 each way", v.Width, v.Height, StripRight+gap+1, StripBottom+gap+1)
	}
	if v.Batch < 0 || v.Batch >= sel.B || v.Head < 0 || v.Head >= sel.H {
		return Frame{}, fmt.Errorf("heatmap: batch %d head %d: the selection has %d batches, %d heads", v.Batch, v.Head, sel.B, sel.H)
	}
	if v.Zoom < 1 || math.IsNaN(v.Zoom) || math.IsInf(v.Zoom, 0) {
		v.Zoom = 1
	}
	f := Frame{View: v, MapW: v.Width - StripRight - gap, MapH: v.Height - StripBottom - gap}
	rows, keys := float64(sel.Lq)/v.Zoom, float64(sel.Lk)/v.Zoom
	f.Row0 = clamp(v.Row0, 0, float64(sel.Lq)-rows)
	f.Key0 = clamp(v.Key0, 0, float64(sel.Lk)-keys)
	f.RowsPerPx, f.KeysPerPx = rows/float64(f.MapH), keys/float64(f.MapW)
	if f.Cursor < 0 || f.Cursor >= sel.Lq {
		f.Cursor = min(sel.Lq-1, int(f.Row0+rows)-1)
	}
	return f, nil
}

func clamp(x, lo, hi float64) float64 {
	if math.IsNaN(x) || x < lo {
		return lo
	}
	return min(x, max(hi, lo))
}

// Record records the drawing of view v of sel into out (a buffer of at least
// Width*Height*4 bytes: 8-bit RGBA pixels, row-major, or BGRA when bgra is set, the
// byte order of a B8G8R8A8 swapchain image), for a caller that copies it to an image.
func (r *Renderer) Record(rec *vk.Recorder, sel *dma.Selection, v View, out *vk.Buffer, bgra bool) error {
	f, err := FrameOf(sel, v)
	if err != nil {
		return err
	}
	if need := int64(v.Width) * int64(v.Height) * 4; out.Size() < need {
		return fmt.Errorf("heatmap: Record: %d-byte buffer for %dx%d pixels (%d bytes)", out.Size(), v.Width, v.Height, need)
	}
	r.mu.Lock()
	pipe := r.pipe
	r.mu.Unlock()
	if pipe == nil {
		return fmt.Errorf("heatmap: %w", vk.ErrClosed)
	}
	lo, hi := sel.WeightRange(v.Batch, v.Head)
	mode := map[dma.Mode]uint32{dma.ModeRow: 0, dma.ModeShared: 1, dma.ModeNone: 2}[sel.Mode]
	push := make([]byte, 0, pushSize)
	for _, x := range []uint32{uint32(v.Width), uint32(v.Height), uint32(f.MapW), uint32(f.MapH),
		uint32(v.Batch*sel.Hb + sel.BiasHead(v.Head)), uint32(sel.Lq), uint32(sel.Lk), uint32(sel.Lk - sel.Lq),
		mode, b32(sel.Opt.Causal), b32(bgra), uint32(f.Cursor)} {
		push = binary.LittleEndian.AppendUint32(push, x)
	}
	for _, x := range []float32{float32(f.Row0), float32(f.Key0), float32(f.RowsPerPx), float32(f.KeysPerPx), lo, hi} {
		push = binary.LittleEndian.AppendUint32(push, math.Float32bits(x))
	}
	ord, tau := sel.Buffers()
	groups := [3]uint32{uint32(v.Width+15) / 16, uint32(v.Height+15) / 16, 1}
	return rec.Dispatch(pipe, groups, push, vk.Bind(ord), vk.Bind(tau), vk.Binding{Buf: out, Size: int64(v.Width) * int64(v.Height) * 4})
}

func b32(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// Image draws view v of sel.
func (r *Renderer) Image(ctx context.Context, sel *dma.Selection, v View) (*image.RGBA, error) {
	d := r.d.VK()
	out, err := d.NewBuffer(int64(v.Width) * int64(v.Height) * 4)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	if err := d.Run(ctx, func(rec *vk.Recorder) error { return r.Record(rec, sel, v, out, false) }); err != nil {
		return nil, err
	}
	img := image.NewRGBA(image.Rect(0, 0, v.Width, v.Height))
	if err := out.Download(ctx, 0, img.Pix); err != nil {
		return nil, err
	}
	return img, nil
}

// Grid draws view v of every query head of batch v.Batch, cols pictures to a row (0: a
// square-ish grid), 4 pixels apart.
func (r *Renderer) Grid(ctx context.Context, sel *dma.Selection, v View, cols int) (*image.RGBA, error) {
	n := sel.H
	if cols <= 0 {
		cols = int(math.Ceil(math.Sqrt(float64(n))))
	}
	rows := (n + cols - 1) / cols
	const pad = 4
	img := image.NewRGBA(image.Rect(0, 0, cols*(v.Width+pad)-pad, rows*(v.Height+pad)-pad))
	for i := range img.Pix {
		img.Pix[i] = 255 // white between the pictures
	}
	for h := range n {
		hv := v
		hv.Head = h
		tile, err := r.Image(ctx, sel, hv)
		if err != nil {
			return nil, err
		}
		x, y := h%cols*(v.Width+pad), h/cols*(v.Height+pad)
		for row := range v.Height {
			copy(img.Pix[img.PixOffset(x, y+row):], tile.Pix[tile.PixOffset(0, row):tile.PixOffset(v.Width, row)])
		}
	}
	return img, nil
}

// EncodePNG writes img as a PNG.
func EncodePNG(w io.Writer, img image.Image) error { return png.Encode(w, img) }

// WritePNG writes img to the file path as a PNG.
func WritePNG(path string, img image.Image) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WeightColour is the colour the heat map gives a kept key of weight w in the range [lo, hi]
// (for a legend); dropped candidates get 22% of it.
func WeightColour(w, lo, hi float32) color.RGBA {
	t := float32(1)
	if hi > lo {
		t = (w - lo) / (hi - lo)
	}
	t = min(max(t, 0), 1)
	c0 := [3]float32{0.05, 0.02, 0.20}
	c1 := [3]float32{0.55, 0.10, 0.45}
	c2 := [3]float32{0.93, 0.35, 0.15}
	c3 := [3]float32{0.99, 0.95, 0.55}
	a, b, s := c2, c3, t*3-2
	switch {
	case t < 1.0/3:
		a, b, s = c0, c1, t*3
	case t < 2.0/3:
		a, b, s = c1, c2, t*3-1
	}
	ch := func(i int) uint8 { return uint8(min(max(a[i]+(b[i]-a[i])*s, 0), 1)*255 + 0.5) }
	return color.RGBA{ch(0), ch(1), ch(2), 255}
}
