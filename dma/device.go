package dma

import (
	"fmt"
	"os"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/vk"
)

// Config chooses and opens a device.
type Config struct {
	// Device selects the device: an index in `dmavk devices` order or a
	// case-insensitive substring of its name. Empty means $DMAVK_DEVICE, else the best
	// device (discrete > integrated > virtual > CPU).
	Device string
	// Validate turns on the Vulkan validation layer (also DMAVK_VALIDATE=1).
	Validate bool
	// DisableCoopMat forces the portable path even where tensor cores exist (also
	// DMAVK_DISABLE_COOPMAT=1).
	DisableCoopMat bool
	// DisableCoopMat2 keeps VK_NV_cooperative_matrix2 off, so that the KHR
	// cooperative-matrix kernel runs where the coopmat2 one would (also
	// DMAVK_DISABLE_COOPMAT2=1).
	DisableCoopMat2 bool
}

// Device is an open GPU with the DMA kernels. Close it when done.
//
// A Device keeps track of everything it hands out (tensors, weights, LSEs, masks,
// biases, key paddings, KV caches and their recorded steps), as database/sql's DB does
// of its connections: Close releases all of it, so objects may be closed in any order,
// before or after their device, and more than once.
type Device struct {
	in   *vk.Instance
	vd   *vk.Device
	kern *kern.Kernels
	life lifetimes
}

// Open opens the device cfg selects.
func Open(cfg Config) (*Device, error) {
	in, err := vk.NewInstance(vk.Config{Validate: cfg.Validate})
	if err != nil {
		return nil, err
	}
	sel := cfg.Device
	if sel == "" {
		sel = os.Getenv("DMAVK_DEVICE")
	}
	pd, err := in.ChooseBy(sel)
	if err != nil {
		in.Close()
		return nil, err
	}
	d, err := OpenOn(in, pd, cfg)
	if err != nil {
		in.Close()
		return nil, err
	}
	d.in = in // owned: closed with the device
	return d, nil
}

// OpenOn opens the physical device pd of an instance the caller owns (and closes after
// the Device).
func OpenOn(in *vk.Instance, pd vk.PhysicalDevice, cfg Config) (*Device, error) {
	disable := cfg.DisableCoopMat || os.Getenv("DMAVK_DISABLE_COOPMAT") == "1"
	disable2 := disable || cfg.DisableCoopMat2 || os.Getenv("DMAVK_DISABLE_COOPMAT2") == "1"
	vd, err := in.Open(pd, vk.Features{DisableCoopMat: disable, DisableCoopMat2: disable2})
	if err != nil {
		return nil, fmt.Errorf("dma: open %s: %w", pd.Caps.Name, err)
	}
	return &Device{vd: vd, kern: kern.New(vd)}, nil
}

// Name is the device's name as the driver reports it.
func (d *Device) Name() string { return d.vd.Caps().Name }

// VK returns the underlying Vulkan device, for callers that add kernels of their own.
func (d *Device) VK() *vk.Device { return d.vd }

// Close closes the device: calls that start later fail with ErrClosed; Close waits for
// the calls in progress, releases every object of the device still open (the tensors,
// weights, results, masks, biases, key paddings and KV caches it handed out: their own
// Close then does nothing and returns nil, and every other method fails with ErrClosed),
// then the kernels and the device (and the instance when Open made it). Objects made
// through VK() directly are the caller's and must be closed first. Close is safe to call
// more than once, and from several goroutines; the calls after the first return nil.
func (d *Device) Close() error {
	if err := d.vd.Busy(); err != nil { // recordings the application has not released
		return fmt.Errorf("dma: Close: %w", err)
	}
	if !d.closeAll() {
		return nil
	}
	// Pipelines wait, before they go, for submissions whose context ended.
	d.kern.Close()
	err := d.vd.Close()
	if d.in != nil {
		d.in.Close()
	}
	return err
}
