package kern

import (
	"fmt"
	"sync"

	"github.com/dmavk/dmavk/shaders"
	"github.com/dmavk/dmavk/vk"
)

// Kernels compiles the DMA pipelines of one device on first use and keeps them. It is
// safe for concurrent use.
type Kernels struct {
	d     *vk.Device
	mu    sync.Mutex
	pipes map[string]*vk.Pipeline
	// portableOnly keeps attention on the portable kernel (SetPortableOnly).
	portableOnly bool
	// noCoopMat2 keeps attention off the coopmat2 kernel (SetNoCoopMat2).
	noCoopMat2 bool
}

// New prepares the kernels of d; nothing is compiled yet.
func New(d *vk.Device) *Kernels { return &Kernels{d: d, pipes: map[string]*vk.Pipeline{}} }

// Device is the device the kernels run on.
func (k *Kernels) Device() *vk.Device { return k.d }

// Pipeline returns the pipeline of the named shader with the given specialization
// constants and binding count, compiling it the first time.
func (k *Kernels) Pipeline(name string, bindings int, spec ...uint32) (*vk.Pipeline, error) {
	return k.pipeline(pipeKey{name: name, bindings: bindings}, spec, nil)
}

// pipelinePush is Pipeline for a shader with a push-constant block of push bytes.
func (k *Kernels) pipelinePush(name string, bindings, push int, spec ...uint32) (*vk.Pipeline, error) {
	return k.pipeline(pipeKey{name: name, bindings: bindings, push: push}, spec, nil)
}

// pipeKey is what, besides the specialization constants, tells pipelines apart.
type pipeKey struct {
	name           string
	bindings, push int
	subgroup       uint32 // required subgroup size, 0 for the driver's choice
}

// pipeline returns the cached pipeline of key and spec, compiling it the first time from
// code (nil: the embedded shader of the name).
func (k *Kernels) pipeline(key pipeKey, spec []uint32, code func() ([]byte, error)) (*vk.Pipeline, error) {
	id := fmt.Sprintf("%s/%d/push%d/sg%d/%v", key.name, key.bindings, key.push, key.subgroup, spec)
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.pipes[id]; ok {
		return p, nil
	}
	if code == nil {
		code = func() ([]byte, error) { return shaders.Get(key.name) }
	}
	spv, err := code()
	if err != nil {
		return nil, err
	}
	p, err := k.d.NewPipeline(vk.PipelineDesc{Name: key.name, SPIRV: spv, Bindings: key.bindings, PushSize: key.push,
		Spec: spec, SubgroupSize: key.subgroup})
	if err != nil {
		return nil, err
	}
	k.pipes[id] = p
	return p, nil
}

// pinnedSubgroup is the subgroup size a pipeline must require so that kernels written for
// subgroups of sg invocations get them: sg where the device's compute subgroup size
// varies and it lets pipelines fix it, else 0 (the size never varies there).
func (k *Kernels) pinnedSubgroup(sg uint32) uint32 {
	caps := k.d.Caps()
	if caps.SubgroupSizeControl && caps.SubgroupSizeComputeReq && caps.MinSubgroupSize != caps.MaxSubgroupSize {
		return sg
	}
	return 0
}

// Close destroys every pipeline.
func (k *Kernels) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range k.pipes {
		p.Close()
	}
	k.pipes = map[string]*vk.Pipeline{}
	return nil
}

// PlanSizes gives the byte sizes of the selection plan's buffers for p (see the package
// documentation): ord, U, ucount and tau.
func PlanSizes(p *Params) (ord, u, ucount, tau int64) {
	bh := int64(p.B) * int64(p.Hb)
	ord = bh * int64(p.Lk) * 4
	u = bh * int64(p.NBlocks+1) * int64(p.NCap) * 8
	ucount = bh * int64(p.NBlocks+1) * 4
	tau = bh * int64(p.Lq) * 8
	return ord, max(u, 8), max(ucount, 4), max(tau, 8)
}

// Groups rounds n items up to whole workgroups of size per.
func Groups(n, per int) uint32 { return uint32((n + per - 1) / per) }

// checkGrid checks a dispatch's workgroup counts (x, y, z) against the device's limits.
func (k *Kernels) checkGrid(op string, grid ...uint64) error {
	caps := k.d.Caps()
	for i, n := range grid {
		if n > uint64(caps.MaxWorkgroupCount[i]) {
			return fmt.Errorf("%s: %d workgroups in dimension %d, %s allows %d", op, n, i, caps.Name, caps.MaxWorkgroupCount[i])
		}
	}
	return nil
}
