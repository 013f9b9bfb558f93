package kern

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Mode numbers as the shaders know them.
const (
	ModeRow      = 0
	ModeShared   = 1
	ModeNone     = 2
	ModeExplicit = 3
)

// Storage is the element type of Q, K, V and O in memory, as the shaders know it (the
// parameter block's storage field). Arithmetic is float32 whatever the storage.
type Storage uint32

const (
	StorageF32  Storage = 0 // IEEE binary32, one element per 32-bit word
	StorageF16  Storage = 1 // IEEE binary16, two per word (element e in word e/2, low half first)
	StorageBF16 Storage = 2 // bfloat16 (a float32's high half), packed like StorageF16
)

// String names the storage type.
func (s Storage) String() string {
	switch s {
	case StorageF32:
		return "fp32"
	case StorageF16:
		return "fp16"
	case StorageBF16:
		return "bf16"
	}
	return fmt.Sprintf("Storage(%d)", uint32(s))
}

// Valid reports whether s is a known storage type.
func (s Storage) Valid() bool { return s <= StorageBF16 }

// Packed reports whether elements are 16 bits wide, two to a 32-bit word: such tensors
// are read as whole words (buffers rounded up to them), and written in pairs.
func (s Storage) Packed() bool { return s == StorageF16 || s == StorageBF16 }

// View addresses a strided [B, L, H, D] tensor in a buffer: element offset and the
// batch, sequence and head strides, in elements; the last dimension is contiguous.
type View struct {
	Off, SB, SL, SH uint32
}

// Broadcast addresses a broadcastable [B, heads, Lq, Lk] mask or bias: strides are 0
// along size-1 dimensions, and query head h reads head h / HDiv.
type Broadcast struct {
	Off, SB, SH, SI, SJ, HDiv uint32
	Present                   bool
}

// Params is the parameter block every DMA kernel reads at binding 0. The field order
// is shaders/dma_common.glsl's; Bytes encodes it.
type Params struct {
	B, Lq, Lk, H, Hkv, Hb, D, G  uint32
	Mode, Causal, Window, BlockC uint32
	NBlocks, NCap                uint32
	KeyPadding                   bool
	Storage                      Storage // of Q, K, V and O
	PosOffset                    int32
	Scale, Softcap               float32
	Q, K, V, O                   View
	Mask, Bias                   Broadcast
	Form                         uint32 // 0 exp, 1 linear
	HasBdt                       bool
	// Where the decode kernels (select_topw, decode_attn) find ord: element OrdOff +
	// bh*OrdSL + j, OrdSL 0 meaning Lk. A KV cache's ord rows are Capacity apart.
	OrdOff, OrdSL uint32
}

// ParamsSize is the byte size of the encoded block.
const ParamsSize = 4 * (19 + 16 + 14 + 4)

func b2u(b bool) uint32 {
	if b {
		return 1
	}
	return 0
}

// Bytes encodes p in std430 layout (every field 4 bytes).
func (p *Params) Bytes() []byte {
	w := []uint32{p.B, p.Lq, p.Lk, p.H, p.Hkv, p.Hb, p.D, p.G,
		p.Mode, p.Causal, p.Window, p.BlockC,
		p.NBlocks, p.NCap, b2u(p.KeyPadding), uint32(p.Storage),
		uint32(p.PosOffset), math.Float32bits(p.Scale), math.Float32bits(p.Softcap)}
	for _, v := range []View{p.Q, p.K, p.V, p.O} {
		w = append(w, v.Off, v.SB, v.SL, v.SH)
	}
	for _, m := range []Broadcast{p.Mask, p.Bias} {
		w = append(w, m.Off, m.SB, m.SH, m.SI, m.SJ, m.HDiv, b2u(m.Present))
	}
	w = append(w, p.Form, b2u(p.HasBdt), p.OrdOff, p.OrdSL)
	out := make([]byte, 4*len(w))
	for i, v := range w {
		binary.LittleEndian.PutUint32(out[4*i:], v)
	}
	return out
}
