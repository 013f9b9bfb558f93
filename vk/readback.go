package vk

import "fmt"

// NewReadbackBuffer allocates host-visible memory, host-cached where the device has
// such, for results that commands copy there (Recorder.Copy) and the host reads with
// Download, a plain copy. NewMappedBuffer's memory may be device memory across the bus,
// which the host reads slowly; this is the host's own.
func (d *Device) NewReadbackBuffer(size int64) (*Buffer, error) {
	if err := d.usable(); err != nil {
		return nil, err
	}
	if size <= 0 {
		return nil, fmt.Errorf("vk: NewReadbackBuffer: size %d must be positive", size)
	}
	b, err := d.newHostBuffer(size)
	if err != nil {
		return nil, err
	}
	if b.mapped == nil {
		b.Close()
		return nil, fmt.Errorf("vk: NewReadbackBuffer: no host-visible, coherent memory for %d bytes", size)
	}
	return b, nil
}
