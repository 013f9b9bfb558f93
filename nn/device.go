// Package nn is a toolbox of transformer layers on the GPU for model authors: tensors,
// linear layers (a tiled product for many rows, a split-K product for a few, tensor
// cores where the device has them), embedding lookup, RMSNorm, rotary embedding,
// SiLU-gated MLP, residual gates and DMA attention with a KV cache (package dma). Every
// operation records into a vk.Recorder, so that a model can put a whole decode step into
// one recorded submission (vk.Program); Run does one operation at a time.
//
// Activations are float32 on the device; weights are float32, float16 or bfloat16
// (arithmetic float32 whatever the storage); the queries, keys and values handed to DMA
// take the attention's dtype.
package nn

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/internal/matmul"
	"github.com/dmavk/dmavk/shaders"
	"github.com/dmavk/dmavk/vk"
)

// Device holds the layer kernels of one dma.Device. It is safe for concurrent use;
// Close it before the dma.Device.
type Device struct {
	d  *dma.Device
	vd *vk.Device
	mm *matmul.Kernel // tensor-core products, nil where the device has none

	mu     sync.Mutex
	pipes  map[pipeKey]*vk.Pipeline
	dummy  *vk.Buffer // bound where an optional input is absent
	closed bool
}

type pipeKey struct {
	name string
	spec [2]uint32
}

// New compiles nothing yet: each kernel is built on first use.
func New(d *dma.Device) (*Device, error) {
	if d == nil {
		return nil, fmt.Errorf("nn: New: nil device")
	}
	vd := d.VK()
	dummy, err := vd.NewBuffer(16)
	if err != nil {
		return nil, fmt.Errorf("nn: New: %w", err)
	}
	n := &Device{d: d, vd: vd, pipes: map[pipeKey]*vk.Pipeline{}, dummy: dummy}
	caps := vd.Caps()
	if _, ok := caps.HasCoopMat(vk.ComponentF16, vk.ComponentF16, vk.ComponentF32); ok || caps.CoopMat2 {
		mm, err := matmul.New(vd)
		if err == nil && (mm.Has(matmul.CoopMat) || mm.Has(matmul.CoopMat2)) {
			n.mm = mm
		} else if err == nil {
			mm.Close()
		}
	}
	return n, nil
}

// DMA is the attention device underneath.
func (n *Device) DMA() *dma.Device { return n.d }

// Close frees the kernels. Tensors and layers made from the device must be closed first.
func (n *Device) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	for _, p := range n.pipes {
		p.Close()
	}
	n.pipes = nil
	if n.mm != nil {
		n.mm.Close()
	}
	n.dummy.Close()
	return nil
}

// pipeline returns the named kernel with specialization constants spec, building it once.
func (n *Device) pipeline(name string, bindings, push int, spec ...uint32) (*vk.Pipeline, error) {
	key := pipeKey{name: name}
	copy(key.spec[:], spec)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, fmt.Errorf("nn: the device is closed")
	}
	if p, ok := n.pipes[key]; ok {
		return p, nil
	}
	code, err := shaders.Get(name)
	if err != nil {
		return nil, err
	}
	p, err := n.vd.NewPipeline(vk.PipelineDesc{Name: name, SPIRV: code, Bindings: bindings, PushSize: push, Spec: spec})
	if err != nil {
		return nil, fmt.Errorf("nn: %w", err)
	}
	n.pipes[key] = p
	return p, nil
}

// Run records the operations of rec and runs them in one submission.
func (n *Device) Run(ctx context.Context, rec func(*vk.Recorder) error) error {
	return n.vd.Run(ctx, rec)
}

// push packs 32-bit push constants: uint32, int, float32.
func push(vals ...any) []byte {
	b := make([]byte, 4*len(vals))
	for i, v := range vals {
		var u uint32
		switch x := v.(type) {
		case uint32:
			u = x
		case int:
			u = uint32(x)
		case float32:
			u = math.Float32bits(x)
		case bool:
			if x {
				u = 1
			}
		default:
			panic(fmt.Sprintf("nn: push constant of type %T", v))
		}
		binary.LittleEndian.PutUint32(b[4*i:], u)
	}
	return b
}

func groups(n, per int) uint32 { return uint32((n + per - 1) / per) }

// dispatch records p over g workgroups, then a barrier: every operation's writes are
// visible to the next.
func dispatch(r *vk.Recorder, p *vk.Pipeline, g [3]uint32, pc []byte, b ...vk.Binding) error {
	if err := r.Dispatch(p, g, pc, b...); err != nil {
		return err
	}
	r.Barrier()
	return nil
}
