// Command viewer shows what Dynamic Mask Attention keeps, live, in a window: it
// decodes a sequence through a KV cache one token per frame and draws, on the same
// Vulkan device, the kept-key mask of one head as a heat map (rows down, keys across,
// colour = the key's weight, kept keys bright), each row's threshold on the right and
// the weights along the sequence below (package heatmap).
//
// It is also a small Vulkan application of its own: it creates the instance, device
// and swapchain with vulkan-go and GLFW, and dmavk runs inside its device (dma.Adopt),
// drawing into the frame's command buffer (Device.RecordInto).
//
//	go run ./examples/viewer [--tokens 512 --heads 4 --window 32 --mode row]
//	go run ./examples/viewer --q q.npy --k k.npy --v v.npy [--weights w.npy]
//
// Keys: left/right head, up/down window x2 / /2, M mode (row, shared, none), +/- zoom,
// W A S D pan, 0 whole sequence, space pause/resume decoding, P save the picture as
// viewer.png (G: every head), Q or Esc quit.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"image"
	"os"
	"runtime"
	"time"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/heatmap"
	"github.com/dmavk/dmavk/internal/vkapp"
	"github.com/dmavk/dmavk/vk"
	"github.com/go-gl/glfw/v3.3/glfw"
	vulkan "github.com/vulkan-go/vulkan"
)

// GLFW must run on the main thread.
func init() { runtime.LockOSThread() }

type config struct {
	tokens, heads, kvHeads, dim int
	seed                        uint64
	qPath, kPath, vPath, wPath  string
	mode                        dma.Mode
	window                      int
	width, height               int
	start                       int // tokens decoded before the first frame
	frames                      int // stop after this many frames (0: run until closed)
	screenshot                  string
	png                         string
	validate                    bool
}

func main() {
	var cfg config
	mode := flag.String("mode", "row", "selection mode: row, shared or none")
	flag.IntVar(&cfg.tokens, "tokens", 384, "tokens of the random sequence")
	flag.IntVar(&cfg.heads, "heads", 4, "query heads of the random sequence")
	flag.IntVar(&cfg.kvHeads, "kv-heads", 2, "kv heads of the random sequence")
	flag.IntVar(&cfg.dim, "dim", 64, "head dimension of the random sequence")
	flag.Uint64Var(&cfg.seed, "seed", 1, "seed of the random sequence")
	flag.StringVar(&cfg.qPath, "q", "", "queries [1, L, H, D] .npy (with --k, --v: the sequence instead of a random one)")
	flag.StringVar(&cfg.kPath, "k", "", "keys [1, L, Hkv, D] .npy")
	flag.StringVar(&cfg.vPath, "v", "", "values [1, L, Hkv, D] .npy")
	flag.StringVar(&cfg.wPath, "weights", "", "dynamic weights [1, Hb, L] .npy (default: all equal, a sliding window)")
	flag.IntVar(&cfg.window, "window", 32, "keys kept per row")
	flag.IntVar(&cfg.width, "width", 960, "window width")
	flag.IntVar(&cfg.height, "height", 720, "window height")
	flag.IntVar(&cfg.start, "start", 8, "tokens decoded before the first frame")
	flag.IntVar(&cfg.frames, "frames", 0, "quit after this many frames (0: when the window closes)")
	flag.StringVar(&cfg.screenshot, "screenshot", "", "write the last frame, read back from the swapchain image, as a PNG")
	flag.StringVar(&cfg.png, "png", "", "write the last frame's picture through the PNG path (package heatmap)")
	flag.BoolVar(&cfg.validate, "validate", vk.ValidationRequested(), "Vulkan validation layer (also DMAVK_VALIDATE=1)")
	flag.Parse()
	m, err := dma.ParseMode(*mode)
	if err == nil && m == dma.ModeExplicit {
		err = fmt.Errorf("mode explicit has no selection to show")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "viewer:", err)
		os.Exit(2)
	}
	cfg.mode = m
	if err := run(cfg, nil); err != nil {
		fmt.Fprintln(os.Stderr, "viewer:", err)
		os.Exit(1)
	}
}

// viewer is the window, the application's Vulkan objects and dmavk inside them.
type viewer struct {
	cfg     config
	win     *glfw.Window
	app     *vkapp.App
	surface vulkan.Surface
	sc      *swapchain
	d       *dma.Device
	render  *heatmap.Renderer
	dec     *decoder
	view    heatmap.View
	paused  bool
	stale   bool // the swapchain must be recreated

	pixels    *vkapp.Buffer // the frame's pixels, written by dmavk's shader
	pixelsVK  *vk.Buffer    // the same, as dmavk binds it
	shot      *vkapp.Buffer // the last frame read back from the swapchain image
	shotW     int
	shotH     int
	acquired  vulkan.Semaphore
	cmd       vulkan.CommandBuffer
	frames    int
	wantShot  bool
	lastFrame heatmap.View
	messages  []vk.Message // the validation layer's, collected at close
}

// hook, in tests, runs after every frame; it may change the view or the window, and
// returns false to close it.
type hook func(v *viewer) bool

func run(cfg config, after hook) (err error) {
	if err := glfw.Init(); err != nil {
		return err
	}
	defer glfw.Terminate()
	if !glfw.VulkanSupported() {
		return errors.New("GLFW finds no Vulkan loader")
	}
	glfw.WindowHint(glfw.ClientAPI, glfw.NoAPI)
	glfw.WindowHint(glfw.Resizable, glfw.True)
	v := &viewer{cfg: cfg}
	v.win, err = glfw.CreateWindow(cfg.width, cfg.height, "dmavk", nil, nil)
	if err != nil {
		return err
	}
	defer v.win.Destroy()
	err = v.loop(after)
	v.close()
	if err == nil && len(v.messages) > 0 {
		err = fmt.Errorf("%d validation messages, the first: %s", len(v.messages), v.messages[0].Text)
	}
	return err
}

// loop opens everything and draws frames until the window closes.
func (v *viewer) loop(after hook) error {
	cfg := v.cfg
	if err := v.open(); err != nil {
		return err
	}
	v.win.SetKeyCallback(v.key)
	v.win.SetFramebufferSizeCallback(func(*glfw.Window, int, int) { v.stale = true })
	ctx := context.Background()
	for !v.win.ShouldClose() {
		glfw.PollEvents()
		fw, fh := v.win.GetFramebufferSize()
		if fw == 0 || fh == 0 { // minimised: nothing to draw until it comes back
			glfw.WaitEventsTimeout(0.1)
			continue
		}
		if !v.paused && v.dec.n < v.dec.in.L {
			if err := v.dec.Step(ctx); err != nil {
				return err
			}
		}
		v.title()
		v.wantShot = cfg.screenshot != "" || after != nil
		if err := v.frame(fw, fh); err != nil {
			return err
		}
		v.frames++
		if after != nil && !after(v) {
			v.win.SetShouldClose(true)
		}
		if cfg.frames > 0 && v.frames >= cfg.frames {
			v.win.SetShouldClose(true)
		}
	}
	if cfg.screenshot != "" {
		if err := heatmap.WritePNG(cfg.screenshot, v.screenshot()); err != nil {
			return err
		}
	}
	if cfg.png != "" {
		img, err := v.render.Image(ctx, v.dec.sel, v.lastFrame)
		if err != nil {
			return err
		}
		if err := heatmap.WritePNG(cfg.png, img); err != nil {
			return err
		}
	}
	return nil
}

// open creates the application's Vulkan objects, adopts dmavk into them and decodes
// the first tokens.
func (v *viewer) open() error {
	cfg := vkapp.Config{Validate: v.cfg.validate, SyncValidation: v.cfg.validate, InstanceExtensions: surfaceExtensions,
		DeviceExtensions: []string{"VK_KHR_swapchain"}, Request: dma.Recommend, Graphics: true}
	app, err := vkapp.NewInstance(cfg)
	if err != nil {
		return err
	}
	v.app = app
	if v.surface, err = createSurface(app.Instance, v.win); err != nil {
		return err
	}
	err = app.CreateDevice(cfg, func(family uint32) bool {
		var ok vulkan.Bool32
		vulkan.GetPhysicalDeviceSurfaceSupport(app.PhysicalDevice, family, v.surface, &ok)
		return ok == vulkan.True
	})
	if err != nil {
		return err
	}
	if v.d, err = app.Adopt(); err != nil {
		return err
	}
	if v.render, err = heatmap.New(v.d); err != nil {
		return err
	}
	if v.acquired, err = app.NewSemaphore(); err != nil {
		return err
	}
	if v.cmd, err = app.NewCommandBuffer(); err != nil {
		return err
	}
	ctx := context.Background()
	var in *inputs
	if v.cfg.qPath != "" || v.cfg.kPath != "" || v.cfg.vPath != "" {
		in, err = npyInputs(v.cfg.qPath, v.cfg.kPath, v.cfg.vPath, v.cfg.wPath)
	} else {
		in, err = randomInputs(ctx, v.d, v.cfg.tokens, v.cfg.heads, v.cfg.kvHeads, v.cfg.dim, v.cfg.seed)
	}
	if err != nil {
		return err
	}
	if v.dec, err = newDecoder(v.d, in, v.cfg.mode, v.cfg.window); err != nil {
		return err
	}
	for v.dec.n < min(max(v.cfg.start, 1), in.L) {
		if err := v.dec.Step(ctx); err != nil {
			return err
		}
	}
	v.view = heatmap.View{Zoom: 1, Cursor: -1}
	return nil
}

// close frees everything in reverse order: dmavk's objects, then the application's.
func (v *viewer) close() {
	if v.app == nil {
		return
	}
	if v.app.Device != nil {
		vulkan.DeviceWaitIdle(v.app.Device)
	}
	if v.dec != nil {
		v.dec.Close()
	}
	if v.pixelsVK != nil {
		v.pixelsVK.Close()
	}
	if v.render != nil {
		v.render.Close()
	}
	if v.d != nil {
		if err := v.d.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "viewer:", err)
		}
	}
	if v.app.Device != nil {
		for _, b := range []*vkapp.Buffer{v.pixels, v.shot} {
			if b != nil {
				v.app.FreeBuffer(b)
			}
		}
		if v.cmd != nil {
			v.app.FreeCommandBuffer(v.cmd)
		}
		if v.acquired != nil {
			vulkan.DestroySemaphore(v.app.Device, v.acquired, nil)
		}
		if v.sc != nil {
			v.sc.destroy()
		}
	}
	v.app.DestroyDevice() // the layer reports any object left behind here
	if v.surface != nil {
		vulkan.DestroySurface(v.app.Instance, v.surface, nil)
	}
	for _, m := range v.app.Adopted.Messages() {
		if m.Validation || m.Severity == "error" {
			v.messages = append(v.messages, m)
		}
	}
	v.app.Destroy()
	v.app = nil
}

// frame draws one frame of fw x fh pixels: dmavk's shader writes the picture into the
// application's buffer inside its command buffer, which then copies it into the
// swapchain image (and, for a screenshot, back out of it) and presents it.
func (v *viewer) frame(fw, fh int) error {
	app := v.app
	if v.sc == nil || v.stale || v.sc.w != fw || v.sc.h != fh {
		if err := v.recreate(fw, fh); err != nil {
			return err
		}
	}
	var idx uint32
	r := vulkan.AcquireNextImage(app.Device, v.sc.chain, vulkan.MaxUint64, v.acquired, nil, &idx)
	if r == vulkan.ErrorOutOfDate {
		v.stale = true
		return nil
	}
	if r != vulkan.Success && r != vulkan.Suboptimal {
		return fmt.Errorf("vkAcquireNextImageKHR: %d", r)
	}
	w, h := v.sc.w, v.sc.h
	view := v.view
	view.Width, view.Height = w, h
	img := v.sc.images[idx]
	if err := check(vulkan.ResetCommandBuffer(v.cmd, 0), "vkResetCommandBuffer"); err != nil {
		return err
	}
	if err := vkapp.Begin(v.cmd); err != nil {
		return err
	}
	rec, err := v.d.RecordInto(vkapp.CommandBufferHandle(v.cmd), vk.Visibility{}, vk.ForTransfer, func(r *dma.Recording) error {
		return r.Layer(func(vr *vk.Recorder) error { return v.render.Record(vr, v.dec.sel, view, v.pixelsVK, v.sc.bgra) })
	})
	if err != nil {
		vulkan.EndCommandBuffer(v.cmd)
		return err
	}
	defer rec.Release() // after the fence below: the GPU is done with the frame
	vkapp.ImageBarrier(v.cmd, img, vulkan.ImageLayoutUndefined, vulkan.ImageLayoutTransferDstOptimal,
		vk.StageTransfer, 0, vk.StageTransfer, vk.AccessTransferWrite)
	vkapp.CopyBufferToImage(v.cmd, v.pixels.Buf, img, w, h)
	last := vulkan.ImageLayoutTransferDstOptimal
	if v.wantShot {
		vkapp.ImageBarrier(v.cmd, img, last, vulkan.ImageLayoutTransferSrcOptimal,
			vk.StageTransfer, vk.AccessTransferWrite, vk.StageTransfer, vk.AccessTransferRead)
		vkapp.CopyImageToBuffer(v.cmd, img, v.shot.Buf, w, h)
		vkapp.Barrier(v.cmd, vk.StageTransfer, vk.AccessTransferWrite, vk.StageHost, vk.AccessHostRead)
		last = vulkan.ImageLayoutTransferSrcOptimal
	}
	vkapp.ImageBarrier(v.cmd, img, last, vulkan.ImageLayoutPresentSrc,
		vk.StageTransfer, vk.AccessTransferWrite, vk.StageBottomOfPipe, 0)
	_, err = app.Submit(v.cmd, vkapp.Submission{
		Wait: []vulkan.Semaphore{v.acquired}, WaitStages: []vulkan.PipelineStageFlags{vulkan.PipelineStageFlags(vk.StageTransfer)},
		Signal: []vulkan.Semaphore{v.sc.done[idx]},
	}, true)
	if err != nil {
		return err
	}
	v.shotW, v.shotH, v.lastFrame = w, h, view
	pi := vulkan.PresentInfo{SType: vulkan.StructureTypePresentInfo, WaitSemaphoreCount: 1, PWaitSemaphores: []vulkan.Semaphore{v.sc.done[idx]},
		SwapchainCount: 1, PSwapchains: []vulkan.Swapchain{v.sc.chain}, PImageIndices: []uint32{idx}}
	app.QueueMu.Lock()
	r = vulkan.QueuePresent(app.Queue, &pi)
	app.QueueMu.Unlock()
	switch {
	case outOfDate(r):
		v.stale = true
	case r != vulkan.Success:
		return fmt.Errorf("vkQueuePresentKHR: %d", r)
	}
	return nil
}

func check(r vulkan.Result, what string) error {
	if r != vulkan.Success {
		return fmt.Errorf("%s: %d", what, r)
	}
	return nil
}

// recreate makes a swapchain of fw x fh and the buffers of its size.
func (v *viewer) recreate(fw, fh int) error {
	app := v.app
	vulkan.DeviceWaitIdle(app.Device)
	sc, err := newSwapchain(app, v.surface, fw, fh, v.sc)
	if err != nil {
		return err
	}
	if v.sc != nil {
		v.sc.destroy()
	}
	v.sc, v.stale = sc, false
	n := int64(sc.w) * int64(sc.h) * 4
	if v.pixels == nil || v.pixels.Size < n {
		if v.pixelsVK != nil {
			v.pixelsVK.Close()
			app.FreeBuffer(v.pixels)
			app.FreeBuffer(v.shot)
		}
		if v.pixels, err = app.NewBuffer(n); err != nil {
			return err
		}
		if v.shot, err = app.NewBuffer(n); err != nil {
			return err
		}
		if v.pixelsVK, err = v.d.VK().WrapBuffer(v.pixels.Handle(), 0, n); err != nil {
			return err
		}
	}
	return nil
}

// screenshot is the last frame as the swapchain image held it, in RGBA order.
func (v *viewer) screenshot() *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, v.shotW, v.shotH))
	copy(img.Pix, v.shot.Mapped[:len(img.Pix)])
	if v.sc.bgra {
		for i := 0; i < len(img.Pix); i += 4 {
			img.Pix[i], img.Pix[i+2] = img.Pix[i+2], img.Pix[i]
		}
	}
	return img
}

func (v *viewer) title() {
	state := ""
	if v.paused {
		state = " (paused)"
	}
	v.win.SetTitle(fmt.Sprintf("dmavk: head %d/%d, mode %v, window %d, %d/%d tokens%s, zoom %.3g",
		v.view.Head, v.dec.in.H, v.dec.mode, v.dec.window, v.dec.n, v.dec.in.L, state, v.view.Zoom))
}

func (v *viewer) key(_ *glfw.Window, k glfw.Key, _ int, action glfw.Action, _ glfw.ModifierKey) {
	if action == glfw.Release {
		return
	}
	ctx := context.Background()
	h := v.dec.in.H
	rows, keys := float64(v.dec.n)/v.view.Zoom, float64(v.dec.n)/v.view.Zoom
	reselect := false
	switch k {
	case glfw.KeyRight:
		v.view.Head = (v.view.Head + 1) % h
	case glfw.KeyLeft:
		v.view.Head = (v.view.Head + h - 1) % h
	case glfw.KeyUp:
		v.dec.window = min(v.dec.window*2, 1<<20)
		reselect = true
	case glfw.KeyDown:
		v.dec.window = max(v.dec.window/2, 1)
		reselect = true
	case glfw.KeyM:
		v.dec.mode = map[dma.Mode]dma.Mode{dma.ModeRow: dma.ModeShared, dma.ModeShared: dma.ModeNone, dma.ModeNone: dma.ModeRow}[v.dec.mode]
		reselect = true
	case glfw.KeyEqual, glfw.KeyKPAdd:
		v.view.Zoom = min(v.view.Zoom*1.25, 1024)
	case glfw.KeyMinus, glfw.KeyKPSubtract:
		v.view.Zoom = max(v.view.Zoom/1.25, 1)
	case glfw.KeyW:
		v.view.Row0 = max(v.view.Row0-rows/10, 0)
	case glfw.KeyS:
		v.view.Row0 += rows / 10
	case glfw.KeyA:
		v.view.Key0 = max(v.view.Key0-keys/10, 0)
	case glfw.KeyD:
		v.view.Key0 += keys / 10
	case glfw.Key0:
		v.view = heatmap.View{Head: v.view.Head, Zoom: 1, Cursor: -1}
	case glfw.KeySpace:
		v.paused = !v.paused
	case glfw.KeyP, glfw.KeyG:
		if err := v.savePNG(ctx, k == glfw.KeyG); err != nil {
			fmt.Fprintln(os.Stderr, "viewer:", err)
		}
	case glfw.KeyQ, glfw.KeyEscape:
		v.win.SetShouldClose(true)
	}
	if reselect {
		if err := v.dec.Reselect(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "viewer:", err)
		}
	}
}

func (v *viewer) savePNG(ctx context.Context, grid bool) error {
	start := time.Now()
	view := v.lastFrame
	var img *image.RGBA
	var err error
	if grid {
		img, err = v.render.Grid(ctx, v.dec.sel, view, 0)
	} else {
		img, err = v.render.Image(ctx, v.dec.sel, view)
	}
	if err != nil {
		return err
	}
	if err := heatmap.WritePNG("viewer.png", img); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "viewer: viewer.png (%dx%d) in %v\n", img.Bounds().Dx(), img.Bounds().Dy(), time.Since(start).Round(time.Millisecond))
	return nil
}
