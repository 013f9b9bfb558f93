package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"image"
	"os"
	"os/exec"
	"testing"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/internal/npy"
	"github.com/go-gl/glfw/v3.3/glfw"
	"github.com/stretchr/testify/require"
)

// GLFW must run on the main thread: TestMain keeps it and runs there what onMain sends.
var mainThread = make(chan func())

func TestMain(m *testing.M) {
	done := make(chan int)
	go func() { done <- m.Run() }()
	for {
		select {
		case f := <-mainThread:
			f()
		case code := <-done:
			os.Exit(code)
		}
	}
}

func onMain(f func()) {
	ran := make(chan struct{})
	mainThread <- func() { defer close(ran); f() }
	<-ran
}

// needDisplay skips where there is no X display, except in CI (CI=true), where
// tools/test.sh starts Xvfb and the viewer must run.
func needDisplay(t *testing.T) {
	if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI: no DISPLAY (tools/test.sh starts Xvfb; is it installed?)")
		}
		t.Skip("no display: set DISPLAY (e.g. Xvfb :99 & DISPLAY=:99), or run tools/test.sh, which starts Xvfb")
	}
}

func testConfig() config {
	return config{tokens: 150, heads: 4, kvHeads: 2, dim: 32, seed: 3, mode: dma.ModeRow, window: 12,
		width: 400, height: 300, start: 40, validate: validationAvailable()}
}

// validationAvailable: required under DMAVK_VALIDATE=1 and in CI, else used when the
// layer is installed.
func validationAvailable() bool {
	if os.Getenv("DMAVK_VALIDATE") == "1" || os.Getenv("CI") != "" {
		return true
	}
	for _, dir := range []string{"/usr/share/vulkan/explicit_layer.d", "/etc/vulkan/explicit_layer.d"} {
		if _, err := os.Stat(dir + "/VkLayer_khronos_validation.json"); err == nil {
			return true
		}
	}
	return false
}

// samePicture fails t unless the frame read back from the swapchain image equals the
// PNG path's picture of the same view, pixel for pixel.
func samePicture(t *testing.T, v *viewer, what string) {
	t.Helper()
	shot := v.screenshot()
	want, err := v.render.Image(context.Background(), v.dec.sel, v.lastFrame)
	require.NoError(t, err)
	require.Equal(t, want.Bounds(), shot.Bounds(), what)
	if !bytes.Equal(want.Pix, shot.Pix) {
		n := 0
		for i := range want.Pix {
			if want.Pix[i] != shot.Pix[i] {
				n++
			}
		}
		t.Fatalf("%s: the swapchain image differs from the PNG picture in %d of %d bytes", what, n, len(want.Pix))
	}
}

// TestViewer opens the window under the display (Xvfb in CI), decodes, draws frames and
// checks each checked frame against the PNG path: at the start, after keys change the
// head, mode, window, zoom and pan, after a resize (swapchain recreation), after the
// window is asked to minimise and restore (Xvfb without a window manager ignores it:
// the frames simply go on), and against the X server's own copy of the window (xwd).
// Closing frees everything with validation, synchronization validation included,
// silent (run's error otherwise).
func TestViewer(t *testing.T) {
	needDisplay(t)
	cfg := testConfig()
	var steps []string
	step := 0
	var n0 int
	check := func(v *viewer) bool {
		step++
		switch step {
		case 1:
			n0 = v.dec.n
			samePicture(t, v, "first frame")
			steps = append(steps, "first")
		case 2:
			require.Greater(t, v.dec.n, n0, "the sequence grows while decoding")
			samePicture(t, v, "second frame")
			key := func(k glfw.Key) { v.key(v.win, k, 0, glfw.Press, 0) }
			key(glfw.KeyRight) // head 1
			key(glfw.KeyM)     // shared
			key(glfw.KeyUp)    // window 24
			key(glfw.KeyEqual) // zoom 1.25
			key(glfw.KeyD)     // pan right
			key(glfw.KeySpace) // pause
			require.Equal(t, 1, v.view.Head)
			require.Equal(t, dma.ModeShared, v.dec.mode)
			require.Equal(t, 24, v.dec.window)
		case 3:
			samePicture(t, v, "after keys")
			require.Equal(t, dma.ModeShared, v.dec.sel.Opt.Mode)
			require.InDelta(t, 1.25, v.lastFrame.Zoom, 1e-9)
			steps = append(steps, "keys")
			v.win.SetSize(520, 260)
		case 4, 5, 6:
			fw, fh := v.win.GetFramebufferSize()
			if v.sc.w == fw && v.sc.h == fh && fw == 520 {
				samePicture(t, v, "after resize")
				steps = append(steps, "resize")
				step = 6
			}
		case 7:
			v.win.Iconify()
		case 8:
			v.win.Restore()
		case 9:
			samePicture(t, v, "after minimise and restore")
			if x, err := xwdWindow(v); err != nil {
				t.Logf("no X server copy of the window: %v", err)
				if os.Getenv("CI") != "" {
					t.Errorf("CI: xwd: %v", err)
				}
			} else {
				want := v.screenshot()
				require.Equal(t, want.Bounds(), x.Bounds())
				require.True(t, bytes.Equal(want.Pix, x.Pix), "the X server's window differs from the frame presented")
				steps = append(steps, "xwd")
			}
			return false
		}
		return true
	}
	var err error
	onMain(func() { err = run(cfg, check) })
	require.NoError(t, err)
	require.Equal(t, 9, step)
	t.Logf("checked: %v", steps)
}

// TestViewerFlags runs the viewer as the command line does: a fixed number of frames,
// the last written both from the swapchain image and through the PNG path.
func TestViewerFlags(t *testing.T) {
	needDisplay(t)
	dir := t.TempDir()
	cfg := testConfig()
	cfg.frames, cfg.screenshot, cfg.png = 4, dir+"/shot.png", dir+"/png.png"
	var err error
	onMain(func() { err = run(cfg, nil) })
	require.NoError(t, err)
	a, err := os.ReadFile(cfg.screenshot)
	require.NoError(t, err)
	b, err := os.ReadFile(cfg.png)
	require.NoError(t, err)
	require.Equal(t, b, a)
}

// xwdWindow reads the viewer's window from the X server with xwd (x11-apps).
func xwdWindow(v *viewer) (*image.RGBA, error) {
	glfw.PollEvents()
	out, err := exec.Command("xwd", "-silent", "-id", fmt.Sprint(uint64(v.win.GetX11Window()))).Output()
	if err != nil {
		return nil, err
	}
	return decodeXWD(out)
}

// decodeXWD reads a 24/32-bit ZPixmap XWD image (X11/XWDFile.h).
func decodeXWD(b []byte) (*image.RGBA, error) {
	if len(b) < 100 {
		return nil, fmt.Errorf("xwd: %d bytes", len(b))
	}
	u := func(i int) uint32 { return binary.BigEndian.Uint32(b[4*i:]) }
	headerSize, format, w, h := int(u(0)), u(2), int(u(4)), int(u(5))
	byteOrder, bpp, stride, ncolors := u(7), u(11), int(u(12)), int(u(19))
	if format != 2 || bpp != 32 {
		return nil, fmt.Errorf("xwd: pixmap format %d, %d bits per pixel (want ZPixmap, 32)", format, bpp)
	}
	masks := [3]uint32{u(14), u(15), u(16)}
	off := headerSize + 12*ncolors
	if len(b) < off+stride*h {
		return nil, fmt.Errorf("xwd: %d bytes for %dx%d", len(b), w, h)
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	shift := func(m uint32) uint {
		s := uint(0)
		for m != 0 && m&1 == 0 {
			m >>= 1
			s++
		}
		return s
	}
	for y := range h {
		for x := range w {
			p := b[off+y*stride+4*x:]
			var px uint32
			if byteOrder == 0 { // LSBFirst
				px = binary.LittleEndian.Uint32(p)
			} else {
				px = binary.BigEndian.Uint32(p)
			}
			i := img.PixOffset(x, y)
			for c, m := range masks {
				img.Pix[i+c] = uint8((px & m) >> shift(m))
			}
			img.Pix[i+3] = 255
		}
	}
	return img, nil
}

// TestViewerNpy decodes a sequence read from .npy files (weights given), through to
// the last token, and checks the last frame against the PNG path.
func TestViewerNpy(t *testing.T) {
	needDisplay(t)
	dir := t.TempDir()
	const l, h, hkv, d = 24, 2, 1, 16
	for name, shape := range map[string][]int{"q": {1, l, h, d}, "k": {1, l, hkv, d}, "v": {1, l, hkv, d}, "w": {1, hkv, l}} {
		n := 1
		for _, s := range shape {
			n *= s
		}
		x := make([]float32, n)
		for i := range x {
			x[i] = float32((i*7919)%23) / 23
		}
		require.NoError(t, npy.WriteFloat32(dir+"/"+name+".npy", shape, x))
	}
	cfg := testConfig()
	cfg.qPath, cfg.kPath, cfg.vPath, cfg.wPath = dir+"/q.npy", dir+"/k.npy", dir+"/v.npy", dir+"/w.npy"
	cfg.window, cfg.start = 5, 20
	done := false
	var err error
	onMain(func() {
		err = run(cfg, func(v *viewer) bool {
			if v.dec.n < l {
				return true // decoding the last tokens
			}
			samePicture(t, v, "the whole sequence")
			require.Equal(t, l, v.dec.sel.Lq)
			done = true
			return false
		})
	})
	require.NoError(t, err)
	require.True(t, done)
	cfg.kPath = dir + "/w.npy"
	onMain(func() { err = run(cfg, nil) })
	require.ErrorContains(t, err, "want 4 dimensions")
}
