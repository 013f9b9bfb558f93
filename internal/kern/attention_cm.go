package kern

import (
	"fmt"
	"os"

	"github.com/dmavk/dmavk/shaders"
	"github.com/dmavk/dmavk/vk"
)

// The attention paths AttentionPath names.
const (
	PathPortable = "portable" // shaders/attention.comp, every device and dtype
	PathCoopMat  = "coopmat"  // shaders/attention_cm.comp, VK_KHR_cooperative_matrix, fp16 (bf16)
)

// AttnCMMaxD is the largest head dimension the cooperative-matrix attention kernel takes
// (a multiple of 16 up to it, when the tile fits the device's shared memory).
const AttnCMMaxD = 256

// attnCMMaxRegs caps the O elements one invocation holds in registers (M * D / SG: 128
// for D = 256 on NVIDIA's 16-row shape and 32 lanes; a whole row on 8-lane lavapipe).
const attnCMMaxRegs = 256

// AttnCMTile is the tiling of the cooperative-matrix attention kernel for one head
// dimension on one device: BR query rows and BC gathered keys per chunk, NSG subgroups
// of SG invocations (Threads = NSG * SG; subgroup g owns rows [g*M, (g+1)*M), so
// BR = NSG * Shape.M), the device's f16 x f16 + f32 shape, and the shared memory the
// kernel declares (bytes).
type AttnCMTile struct {
	BR, BC, NSG, SG, Threads, Shared int
	Shape                            vk.CoopMatShape
	BF16                             bool // bfloat16 operands (the _bf16 variant), else fp16
}

// attnCMShared is the shared memory attention_cm.comp declares, in bytes.
func attnCMShared(d, br, bc, nsg, nt int, s vk.CoopMatShape) int {
	ms := int(s.M)
	lp := bc // P's row stride, padded where rows would alias the same banks
	if bc%32 == 0 {
		lp = bc + 8
	}
	halves := 2*bc*(d+8) + nsg*ms*lp // K/V rows, P
	words := nsg*ms*(bc+4) +         // scores / scratch
		2*attnCMRing(bc, nt) + 2*br + // ring of keys, tauS
		(2*nsg+3)/4*4 + 4 // sgCnt, flags
	return 2*halves + 4*words
}

// attnCMRing is the kernel's ring of keys: a power of two of at least 2 bc + nt entries.
func attnCMRing(bc, nt int) int {
	if 2*bc+nt <= 256 {
		return 256
	}
	return 512
}

// attnCMShape is the device's subgroup-scope op x op + f32 cooperative-matrix shape
// (op: f16, or bf16 for bf16 storage) that the kernel can use, if any.
func attnCMShape(caps *vk.Caps, storage Storage) (vk.CoopMatShape, error) {
	if !caps.CoopMat {
		return vk.CoopMatShape{}, fmt.Errorf("kern: attention (coopmat): %s has no cooperative matrices", caps.Name)
	}
	op := vk.ComponentF16
	switch storage {
	case StorageF16:
		if !caps.Float16 {
			return vk.CoopMatShape{}, fmt.Errorf("kern: attention (coopmat): %s lacks shaderFloat16", caps.Name)
		}
	case StorageBF16:
		if !caps.BFloat16 || !caps.BFloat16Coop || !caps.Int16 {
			return vk.CoopMatShape{}, fmt.Errorf("kern: attention (coopmat): %s lacks bfloat16 cooperative matrices or shaderInt16", caps.Name)
		}
		op = vk.ComponentBF16
	default:
		return vk.CoopMatShape{}, fmt.Errorf("kern: attention (coopmat): fp16 or bf16 storage only, got %v", storage)
	}
	const ballot, shuffle = 0x8, 0x10 // VK_SUBGROUP_FEATURE_BALLOT_BIT, _SHUFFLE_BIT
	if caps.SubgroupOps&(ballot|shuffle) != ballot|shuffle {
		return vk.CoopMatShape{}, fmt.Errorf("kern: attention (coopmat): %s lacks subgroup ballots or shuffles", caps.Name)
	}
	sg := caps.SubgroupSize
	if sg == 0 || sg&(sg-1) != 0 {
		return vk.CoopMatShape{}, fmt.Errorf("kern: attention (coopmat): subgroup size %d", sg)
	}
	// The kernel assumes NSG subgroups of exactly sg invocations: a device whose compute
	// subgroup size varies must let the pipeline pin it (cmPipeline does).
	if caps.MinSubgroupSize != caps.MaxSubgroupSize && !(caps.SubgroupSizeControl && caps.SubgroupSizeComputeReq) {
		return vk.CoopMatShape{}, fmt.Errorf("kern: attention (coopmat): %s's subgroup size varies and cannot be fixed", caps.Name)
	}
	// The largest usable shape (16x16x16 over 16x8x16 and 16x8x8 on NVIDIA).
	var best vk.CoopMatShape
	for _, s := range caps.CoopMatShapes {
		if s.A == op && s.B == op && s.C == vk.ComponentF32 && s.Result == vk.ComponentF32 &&
			s.Scope == vk.ScopeSubgroup && !s.Saturating && s.M > 0 && s.N > 0 && s.K > 0 &&
			16%s.M == 0 && 16%s.N == 0 && 16%s.K == 0 && s.M <= sg && (s.M*s.N)%(2*sg) == 0 && s.M*s.N*s.K > best.M*best.N*best.K {
			best = s
		}
	}
	if best.M == 0 {
		return vk.CoopMatShape{}, fmt.Errorf("kern: attention (coopmat): %s has no usable %v*%v+f32 subgroup shape", caps.Name, op, op)
	}
	return best, nil
}

// AttnCMTiling chooses the tile of the cooperative-matrix attention kernel for fp16 and
// head dimension d: the largest candidate that satisfies the kernel's divisibility rules
// and fits the device's shared memory and invocation limits.
func AttnCMTiling(caps *vk.Caps, d int) (AttnCMTile, error) {
	return AttnCMTilingFor(caps, d, StorageF16)
}

// AttnCMTilingFor is AttnCMTiling for fp16 or bf16 storage (bf16 needs
// VK_KHR_shader_bfloat16 with its cooperative-matrix feature, a bf16*bf16+f32 subgroup
// shape and shaderInt16).
func AttnCMTilingFor(caps *vk.Caps, d int, storage Storage) (AttnCMTile, error) {
	if d < 16 || d > AttnCMMaxD || d%16 != 0 {
		return AttnCMTile{}, fmt.Errorf("kern: attention (coopmat): head dimension D=%d unsupported (need a multiple of 16 in [16, %d])", d, AttnCMMaxD)
	}
	s, err := attnCMShape(caps, storage)
	if err != nil {
		return AttnCMTile{}, err
	}
	ms, ns, ks := int(s.M), int(s.N), int(s.K)
	sg := int(caps.SubgroupSize)
	smallest := 0
	brs, bcs := []int{64, 32, 16}, []int{64, 48, 32, 16}
	want := cmTileOverride()
	if want != nil {
		brs, bcs = []int{want[0]}, []int{want[1]}
	}
	// Larger row tiles first (more reuse of each gathered K/V row), then larger chunks
	// (fewer workgroup barriers per key).
	for _, br := range brs {
		for _, bc := range bcs {
			nsg := br / ms
			nt := nsg * sg
			if br%ms != 0 || 64%br != 0 || bc%16 != 0 || bc > 64 || bc%ns != 0 || bc%ks != 0 || d%ns != 0 || d%ks != 0 ||
				ms*d/sg > attnCMMaxRegs || 2*bc+nt > 512 ||
				uint32(nt) > caps.MaxWorkgroupInvocations || uint32(nt) > caps.MaxWorkgroupSize[0] {
				continue
			}
			t := AttnCMTile{BR: br, BC: bc, NSG: nsg, SG: sg, Threads: nt, Shared: attnCMShared(d, br, bc, nsg, nt, s), Shape: s,
				BF16: storage == StorageBF16}
			if uint32(t.Shared) <= caps.MaxSharedMemory {
				return t, nil
			}
			smallest = t.Shared
		}
	}
	if want != nil {
		return AttnCMTile{}, fmt.Errorf("kern: attention (coopmat): DMAVK_CM_TILE=%dx%d does not fit D=%d with shape %s and subgroup size %d on %s",
			want[0], want[1], d, s, sg, caps.Name)
	}
	if smallest == 0 {
		return AttnCMTile{}, fmt.Errorf("kern: attention (coopmat): no tile for D=%d with shape %s and subgroup size %d", d, s, sg)
	}
	return AttnCMTile{}, fmt.Errorf("kern: attention (coopmat): D=%d needs %d bytes of shared memory at the smallest tile, %s has %d",
		d, smallest, caps.Name, caps.MaxSharedMemory)
}

// cmTileOverride parses DMAVK_CM_TILE ("64x48": query rows, keys per chunk), a tuning
// knob for the KHR kernel's tile; nil when unset or malformed.
func cmTileOverride() []int {
	v := os.Getenv("DMAVK_CM_TILE")
	if v == "" {
		return nil
	}
	var br, bc int
	if n, err := fmt.Sscanf(v, "%dx%d", &br, &bc); n != 2 || err != nil {
		return nil
	}
	return []int{br, bc}
}

// SetPortableOnly keeps attention on the portable kernel (on) or lets RecordAttention
// use the cooperative-matrix kernels where they apply (off, the default).
func (k *Kernels) SetPortableOnly(on bool) {
	k.mu.Lock()
	k.portableOnly = on
	k.mu.Unlock()
}

// SetNoCoopMat2 keeps attention off the coopmat2 kernel (on), so that the KHR
// cooperative-matrix kernel runs where it applies; off (the default) prefers coopmat2.
func (k *Kernels) SetNoCoopMat2(on bool) {
	k.mu.Lock()
	k.noCoopMat2 = on
	k.mu.Unlock()
}

// AttentionPath names the kernel RecordAttention uses for p: PathCoopMat2 for fp16 (or
// bf16, where bf16 cooperative matrices exist) storage in modes row, shared and none on a device with the coopmat2 features the
// kernel needs (see AttnCM2Tiling; none when opened with DisableCoopMat2, as dma does
// under DMAVK_DISABLE_COOPMAT2=1) unless SetNoCoopMat2 is on; else PathCoopMat for fp16 (or bf16) storage, the
// device has an f16 x f16 + f32 (bf16 x bf16 + f32) subgroup cooperative-matrix shape (none when the device
// was opened with DisableCoopMat, as dma does under DMAVK_DISABLE_COOPMAT=1), a tile
// for p.D fits, and SetPortableOnly is off; PathPortable otherwise.
func (k *Kernels) AttentionPath(p *Params) string {
	k.mu.Lock()
	portable, noCM2 := k.portableOnly, k.noCoopMat2
	k.mu.Unlock()
	if portable {
		return PathPortable
	}
	caps := k.d.Caps()
	return attentionPathFor(&caps, p, noCM2)
}

// AttentionPathFor is the attention kernel that a device of caps runs p on (what
// AttentionPath says once such a device is open).
func AttentionPathFor(caps *vk.Caps, p *Params) string { return attentionPathFor(caps, p, false) }

func attentionPathFor(caps *vk.Caps, p *Params, noCM2 bool) string {
	if p == nil || (p.Storage != StorageF16 && p.Storage != StorageBF16) {
		return PathPortable
	}
	if !noCM2 {
		if _, err := cm2Eligible(caps, p); err == nil {
			return PathCoopMat2
		}
	}
	if _, err := AttnCMTilingFor(caps, int(p.D), p.Storage); err != nil {
		return PathPortable
	}
	return PathCoopMat
}

// cmCode gives the SPIR-V of the cooperative-matrix kernel's variant: the embedded build,
// or for fp16 the file DMAVK_CM_SPV names (a build of the same source with other
// switches: bench/cm-builds.sh makes the ablation and debugging builds; bench/gpu.sh khr
// times them).
func cmCode(variant string) func() ([]byte, error) {
	return func() ([]byte, error) {
		if path := os.Getenv("DMAVK_CM_SPV"); path != "" && variant == "attention_cm_f16" {
			raw, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("kern: DMAVK_CM_SPV: %w", err)
			}
			return raw, nil
		}
		return shaders.Get(variant)
	}
}

// cmPipeline returns the cooperative-matrix attention pipeline of a tile, compiling it
// the first time (with the subgroup size pinned where the device lets it vary).
func (k *Kernels) cmPipeline(d uint32, t AttnCMTile) (*vk.Pipeline, error) {
	spec := []uint32{d, uint32(t.BR), uint32(t.BC), t.Shape.M, t.Shape.N, t.Shape.K, uint32(t.SG), uint32(t.NSG),
		uint32(t.Threads)}
	// Cooperative matrices and the shuffles assume subgroups of t.SG.
	variant := "attention_cm_f16"
	if t.BF16 {
		variant = "attention_cm_bf16"
	}
	key := pipeKey{name: variant, bindings: attnBindings, subgroup: k.pinnedSubgroup(uint32(t.SG))}
	return k.pipeline(key, spec, cmCode(variant))
}

// recordAttentionCM records shaders/attention_cm.comp; same contract as RecordAttention.
func (k *Kernels) recordAttentionCM(r *vk.Recorder, p *Params, params *vk.Buffer, b *AttnBuffers) error {
	if params.Size() < ParamsSize {
		return fmt.Errorf("kern: attention: params buffer has %d bytes, needs %d", params.Size(), ParamsSize)
	}
	caps := k.d.Caps()
	tile, err := AttnCMTilingFor(&caps, int(p.D), p.Storage)
	if err != nil {
		return err
	}
	if err := checkAttention(p, b); err != nil {
		return err
	}
	pipe, err := k.cmPipeline(p.D, tile)
	if err != nil {
		return err
	}
	return dispatchAttention(r, caps, p, params, b, pipe, tile.BR, nil)
}
